"""migwatch: live-migration progress for hypervisor fleets."""

__version__ = "0.1.0"
