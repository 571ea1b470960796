"""Fleets: one file mapping protection policies to many clusters.

- :mod:`workflows.fleetdef.model`: the fleet file (clusters, placements, per-cluster overrides), its
  loader and what it places on each cluster;
- :mod:`workflows.fleetdef.render`: one directory of manifests per cluster, every object labelled with
  its cluster and annotated with a render-hash;
- :mod:`workflows.fleetdef.status`: what each cluster runs compared with what the fleet file renders;
- :mod:`workflows.fleetdef.apply`: each cluster's rendering applied through its Argo Server and kube
  context.

Called by ``snapflow render --fleet``, ``snapflow apply --fleet`` and ``snapflow fleet status``;
docs/user/fleet.md is the guide.
"""
