"""The agent's core, between the backends and the server.

``tracker`` folds a backend's observations into published ``Migration`` records (one
estimator per migration); ``hub`` keeps them and fans them out to watch streams as wire
bytes (``convert``, the one model <-> protobuf translation); ``monitor`` runs a backend into
them and settles migrations a previous agent left in flight; ``store`` keeps final states
across restarts.
"""
