"""Render a fleet: one directory of manifests per cluster, for ``kubectl apply -k``, Argo CD or Flux.

``OUT/CLUSTER/`` holds what :func:`workflows.render.write` writes for one policy set (one file per
object and a kustomization.yaml), rendered from the cluster's policies (:func:`model.policies_for`).
Every object also carries

- the label ``snapflow.io/cluster: CLUSTER``, and
- the annotation ``snapflow.io/render-hash: sha256:HEX``, the SHA-256 of the object's canonical JSON
  (keys sorted, this annotation left out), so ``snapflow fleet status`` tells an object that is out
  of date from one that is current without comparing fields a server adds.

Each cluster's objects pass the same checks as ``snapflow render`` (:func:`workflows.render.check_rendering`)
after they are stamped. A cluster that fails (a bad entry, a policy its overrides make invalid, a
manifest that fails the checks) is reported and its directory left as it was; the others are written.
Called by ``snapflow render --fleet`` and :mod:`workflows.fleetdef.status`.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from steps.errors import SnapflowError, UsageError
from workflows.fleetdef.model import Cluster, Fleet, policies_for
from workflows.policy_fields import PolicyError
from workflows.render import GENERATED_MARK, Rendering, check_rendering, render_policies, write

CLUSTER_LABEL = "snapflow.io/cluster"
RENDER_HASH = "snapflow.io/render-hash"


def render_hash(obj: dict[str, Any]) -> str:
    """``sha256:HEX`` of the object's canonical JSON, its own render-hash annotation left out."""
    body = json.loads(json.dumps(obj))
    annotations = (body.get("metadata") or {}).get("annotations")
    if isinstance(annotations, dict):
        annotations.pop(RENDER_HASH, None)
        if not annotations:
            del body["metadata"]["annotations"]
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def stamp(obj: dict[str, Any], cluster: str) -> None:
    """Label ``obj`` with its cluster, then annotate it with its render-hash."""
    meta = obj["metadata"]
    meta["labels"] = {**(meta.get("labels") or {}), CLUSTER_LABEL: cluster}
    meta["annotations"] = {**(meta.get("annotations") or {}), RENDER_HASH: render_hash(obj)}


@dataclass
class ClusterRendering:
    """One cluster's manifests, or the problems that kept it from rendering."""

    name: str
    cluster: Cluster | None
    rendering: Rendering | None = None
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.rendering is not None and not self.problems


def render_cluster(fleet: Fleet, cluster: Cluster) -> ClusterRendering:
    prefix = f"{fleet.path}: cluster {cluster.name}"
    placed = policies_for(fleet, cluster)
    out = ClusterRendering(cluster.name, cluster, warnings=list(placed.warnings))
    if placed.problems:
        out.problems = placed.problems
        return out
    try:
        rendering = render_policies(placed.loaded)
        for item in rendering.objects:
            stamp(item.obj, cluster.name)
        check_rendering(rendering)
    except PolicyError as err:
        out.problems = [f"{prefix}: {line}" for line in err.problems]
        return out
    except SnapflowError as err:
        out.problems = [f"{prefix}: {err}"]
        return out
    out.warnings += [f"{prefix}: {line}" for line in rendering.warnings]
    out.rendering = rendering
    return out


def render_fleet(fleet: Fleet) -> list[ClusterRendering]:
    """Every cluster of the fleet in file order; bad entries come back with their problems."""
    results = [render_cluster(fleet, c) for c in fleet.clusters]
    results += [ClusterRendering(b.label, None, problems=list(b.problems)) for b in fleet.bad_clusters]
    return results


def write_fleet(fleet: Fleet, results: list[ClusterRendering], out_dir: str | os.PathLike) -> list[str]:
    """Write each rendered cluster to ``out_dir/CLUSTER`` (each replaced as a whole); returns one line per
    cluster written and a warning per earlier cluster directory that the fleet no longer names. A
    directory that cannot be written becomes a problem of its cluster (``results`` are updated)."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out}: expected a directory for the fleet's manifests, found a file")
    lines = []
    for result in results:
        if result.ok and result.rendering is not None:
            try:
                written = write(result.rendering, out / result.name)
            except SnapflowError as err:  # this cluster's directory only; the others are still written
                result.problems.append(f"{fleet.path}: cluster {result.name}: {err}")
                continue
            lines.append(f"wrote {len(written)} files to {out / result.name}")
    names = {c.name for c in fleet.clusters} | {b.name for b in fleet.bad_clusters if b.name}
    if out.is_dir():
        for child in sorted(out.iterdir()):
            kustomization = child / "kustomization.yaml"
            if child.name in names or not kustomization.is_file():
                continue
            if kustomization.read_text(errors="replace").startswith(GENERATED_MARK):
                lines.append(
                    f"{child}: warning: not a cluster of {fleet.path} any more; remove it, or GitOps keeps "
                    "applying it"
                )
    return lines
