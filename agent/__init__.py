"""The migwatch agent: watches migration jobs on one hypervisor and streams them."""
