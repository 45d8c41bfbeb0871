"""The migwatch agent: watches migration jobs on one hypervisor and streams them.

One subpackage per layer; a layer imports only the layers below it (``lint-imports``
checks it, see ``[tool.importlinter]`` in pyproject.toml)::

    __main__      the command line
    serve/        the gRPC server, servicer, auth (decisions, tokens, TLS, interceptor), metrics
    config        the agent's settings (flags and TOML)
    core/         tracker (observations -> records), hub (fan-out), monitor, store, convert
    backends/     the Backend protocol; simulated, replay, libvirt/ (the only libvirt importer)
    estimate/     pure: pass model, dirty-rate fit, band, verdict, remedies, ETA, prediction
    model, errors, tasks   records, control errors, stopping helper tasks
"""
