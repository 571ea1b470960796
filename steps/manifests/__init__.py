"""Kubernetes manifests as Snapflow handles them: pure functions on plain dicts (the JSON form of objects).

- :mod:`~steps.manifests.objects`: object identity, label selectors, pod templates of workloads.
- :mod:`~steps.manifests.clean`: what ``capture`` keeps (references followed, runtime and owned objects
  dropped) and the server-managed fields it strips.
- :mod:`~steps.manifests.bundle`: the captured set as files (one YAML per object) plus an index.
- :mod:`~steps.manifests.transforms`: restore transforms (namespace remap, storage classes, labels,
  annotations, image registries, UID/GID ranges, JSON patches) and :mod:`~steps.manifests.migrations`,
  the built-in table of API-version migrations.
- :mod:`~steps.manifests.jsonpatch`: RFC 6902 JSON Patch.
- :mod:`~steps.manifests.ordering`: restore phases, workloads held at zero until their data is in
  place, and conflicts with objects that already exist.
- the manifests the steps create (clone PVC, VolumeSnapshot, VolumeGroupSnapshot, restore mover pod)
  are :mod:`steps.drivers.kube_objects`' (the CSI driver builds them too).
- :mod:`~steps.manifests.apply`: the restore engine, driving a Kubernetes client handed in by the
  ``restore-app`` step (the client, in :mod:`steps.drivers.kube`, does the I/O).

Nothing here imports ``kubernetes``.
"""
