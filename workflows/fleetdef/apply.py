"""Apply a fleet: each cluster's rendering, on that cluster.

Per cluster, the WorkflowTemplates and CronWorkflows go through the cluster's Argo Server when it has
one (:func:`workflows.submit.apply_objects`, with the token from ``tokenFile`` or from ``tokenSecret``
read through the kube context), and everything else (and the Argo objects of a cluster without an Argo
Server) through its kube context: an object that does not exist is created, one that exists gets the
rendered object as a JSON merge patch (fields it renders are set, others left alone). A cluster that
fails is reported and the others are still applied. Called by ``snapflow apply --fleet``.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from typing import Any

from steps.errors import SnapflowError, UsageError
from workflows.fleetdef.model import Cluster, Fleet
from workflows.fleetdef.render import ClusterRendering


@dataclass
class ClusterApplied:
    name: str
    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _bearer(token: str) -> str:
    token = token.strip()
    return token if token.lower().startswith("bearer ") else f"Bearer {token}"


def _token(fleet: Fleet, cluster: Cluster, kube) -> str | None:
    server = cluster.argo_server
    if server is None:
        return None
    if server.token_file:
        path = fleet.resolve(server.token_file)
        try:
            token = path.read_text().strip()
        except OSError as err:
            raise UsageError(
                f"argoServer.tokenFile: cannot read {path} ({err.strerror or type(err).__name__})"
            ) from None
        if not token:
            raise UsageError(f"argoServer.tokenFile: {path} is empty, expected a bearer token")
        return _bearer(token)
    if server.token_secret:
        ref = server.token_secret
        where = f"argoServer.tokenSecret: Secret {ref.namespace}/{ref.name}"
        if kube is None:
            raise UsageError(f"{where}: the cluster needs a kubeContext to read it")
        secret = kube.get("v1", "Secret", ref.name, ref.namespace)
        encoded = (secret.get("data") or {}).get(ref.key)
        if not encoded:
            raise UsageError(f"{where}: expected a key {ref.key!r} holding the token")
        try:
            return _bearer(base64.b64decode(encoded, validate=True).decode())
        except (binascii.Error, UnicodeDecodeError):
            raise UsageError(f"{where}: key {ref.key!r} is not valid base64 text") from None
    return None


def _apply_through_kube(kube, objects: list[dict[str, Any]]) -> list[str]:
    lines = []
    for obj in objects:
        meta = obj["metadata"]
        name, namespace = meta["name"], meta.get("namespace")
        where = f"{obj['kind']} {namespace}/{name}" if namespace else f"{obj['kind']} {name}"
        if kube.get_or_none(obj["apiVersion"], obj["kind"], name, namespace) is None:
            kube.create(obj, namespace)
            lines.append(f"created {where}")
        else:
            kube.patch(obj["apiVersion"], obj["kind"], name, namespace, obj)
            lines.append(f"updated {where}")
    return lines


def apply_cluster(
    fleet: Fleet, result: ClusterRendering, kubeconfig: str | None = None, dry_run: bool = False
) -> ClusterApplied:
    from steps.api import KubeClient, KubeSettings
    from workflows.submit import APPLIED_KINDS, ServerSettings, apply_objects

    out = ClusterApplied(result.name)
    cluster = result.cluster
    if not result.ok or result.rendering is None or cluster is None:
        out.problems = list(result.problems)
        return out
    objects = [o.obj for o in result.rendering.ordered()]
    by_argo = cluster.argo_server is not None
    through_argo = [o for o in objects if by_argo and o["kind"] in APPLIED_KINDS]
    through_kube = [o for o in objects if not (by_argo and o["kind"] in APPLIED_KINDS)]
    prefix = f"{fleet.path}: cluster {cluster.name}"
    if dry_run:
        for obj in objects:
            meta = obj["metadata"]
            where = f"{meta['namespace']}/{meta['name']}" if meta.get("namespace") else meta["name"]
            via = "Argo Server" if by_argo and obj["kind"] in APPLIED_KINDS else "kube context"
            out.lines.append(f"would apply {obj['kind']} {where} (through the {via})")
        return out
    kube = None
    try:
        if cluster.kube_context:
            path = str(fleet.resolve(cluster.kubeconfig)) if cluster.kubeconfig else kubeconfig
            kube = KubeClient(KubeSettings.from_env(path, cluster.kube_context))
        elif through_kube:
            raise UsageError(
                f"kubeContext: required to apply {len(through_kube)} objects the Argo Server does not "
                "manage (ServiceAccounts, Roles, the plan ConfigMap)"
            )
        if through_kube:
            out.lines += _apply_through_kube(kube, through_kube)
        if through_argo:
            server = cluster.argo_server
            assert server is not None  # through_argo is empty without one
            verify: bool | str = True
            if server.insecure_skip_tls_verify:
                verify = False
            elif server.ca_file:
                verify = str(fleet.resolve(server.ca_file))
            token = _token(fleet, cluster, kube)
            settings = ServerSettings(url=server.url.rstrip("/") + "/", token=token, verify=verify)
            out.lines += apply_objects(settings, through_argo)
    except SnapflowError as err:
        out.problems.append(f"{prefix}: {' '.join(str(err).split())}")
    finally:
        if kube is not None:
            kube.close()
    return out
