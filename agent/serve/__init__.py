"""The agent as a gRPC server: ``server.Agent`` (the process), ``servicer`` (the RPCs),
``validate`` (the request fields' checks, pure), ``refusals`` (the one error -> status
translation), ``auth/`` (who may call what), ``metrics`` (Prometheus), ``service`` (the
service's name, from the contract)."""
