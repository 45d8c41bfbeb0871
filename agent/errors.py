"""Errors a backend raises for a control it cannot carry out.

The servicer maps each class to one gRPC status code, in one place
(``serve/refusals.py``, ``STATUS_BY_ERROR``)::

    ControlError                 expected refusals, each with a message that says what to do
    ├── MigrationGone            NOT_FOUND: the job ended or the domain left the host
    ├── ControlRefused           FAILED_PRECONDITION: the migration's state forbids it
    └── BackendUnavailable       UNAVAILABLE: the hypervisor cannot be reached right now

Anything else escaping a backend is a bug and surfaces as INTERNAL.
"""

from __future__ import annotations


class ControlError(Exception):
    """A control request was refused; ``str(exc)`` is the user-facing message."""


class MigrationGone(ControlError):
    """The migration is no longer running on this host."""


class ControlRefused(ControlError):
    """The migration exists but cannot take this control now."""


class BackendUnavailable(ControlError):
    """The hypervisor connection is down; try again after it reconnects."""
