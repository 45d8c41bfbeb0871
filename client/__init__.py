"""migwatch client library."""
