"""The only modules in :mod:`steps` that talk to the outside world: object store, Kubernetes, processes."""
