"""The fleet view's metrics and alerts: an exporter of what repositories' committed records say.

:mod:`~workflows.fleet.records` reads records incrementally (a cache keyed by object name),
:mod:`~workflows.fleet.model` folds them into per-app states and targets, :mod:`~workflows.fleet.exporter`
serves them as Prometheus metrics refreshed in the background, :mod:`~workflows.fleet.rules` holds the
shipped alerts and :mod:`~workflows.fleet.objects` renders the exporter's Kubernetes objects. Called by
``snapflow exporter``; docs/user/metrics.md documents the metrics and alerts.
"""
