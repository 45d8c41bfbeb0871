"""Migration backends: each satisfies ``protocol.Backend``, the seam (records and a
Protocol, no logic).

``simulated`` (a pre-copy model), ``replay`` (recorded traces: ``trace`` reads them,
``tracefacts`` says what they show) and ``libvirt/`` (real hypervisors; its pure
``watcher`` decides what each job is doing). ``jobstats`` is the one translation of
libvirt's job-stats dicts; ``recorder`` writes traces.
"""
