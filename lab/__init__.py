"""migwatch's libvirt test lab: two libvirt hosts on one machine (see lab/labctl.py)."""
