"""The libvirt backend, the only package that imports ``libvirt``/``libvirtaio``.

Import ``LibvirtBackend`` from ``.backend``: this package's own import pulls in nothing, so
the pure job watcher (``.watcher``) is importable and testable without libvirt-python.
"""
