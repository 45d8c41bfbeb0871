"""Periodic notifications on OpenStack's bus (oslo.messaging, ``messagingv2``).

``policy`` decides what to publish when (pure), ``payload`` builds the versioned
payloads (pure), ``publisher`` sends them with oslo.messaging's ``Notifier`` from a
worker thread (the only module here that does I/O or imports oslo.messaging).
docs/NOTIFICATIONS.md describes the events for consumers.
"""
