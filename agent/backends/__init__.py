"""Migration backends: each one satisfies migwatch.agent.backend.Backend."""
