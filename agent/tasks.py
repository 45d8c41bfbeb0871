"""Stopping helper tasks without swallowing a cancellation. Shared by every layer.

``contextlib.suppress(CancelledError)`` around ``await task`` hides two different things:
the helper ending because we cancelled it (expected), and *our own* task being cancelled
while it waits (which must propagate, or ``stop()`` cannot itself be cancelled).
``stop_task`` tells them apart.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger(__name__)


async def stop_task(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` and wait until it has ended. Its cancellation and its failure stay
    here (a failure is logged); a cancellation of the caller propagates at once."""
    task.cancel()
    await asyncio.wait({task})  # raises CancelledError only when the caller is cancelled
    if not task.cancelled() and task.exception() is not None:
        log.warning("%s failed while stopping", task.get_name(), exc_info=task.exception())
