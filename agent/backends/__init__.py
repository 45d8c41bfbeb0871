"""Migration backends: each one satisfies migwatch.agent.backends.protocol.Backend."""
