"""The demo and its throw-away infrastructure: ``make demo`` (``python -m workflows.demo``, see
:mod:`workflows.demo.main`), an embedded S3 server (:mod:`~workflows.demo.seaweedfs`), a loop-mounted
btrfs and a PostgreSQL server (:mod:`~workflows.demo.sandbox`), a ledger writer to back up under load
(:mod:`~workflows.demo.ledger`) and sample data (:mod:`~workflows.demo.sample`). Also used by the tests
and the benchmarks.

Nothing else in :mod:`workflows` or :mod:`steps` imports this package, and the step image does not
ship it (``.dockerignore``): it starts servers, mounts file systems and runs databases, which a step
pod never does.
"""
