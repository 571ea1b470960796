"""Rules of a policy that span several fields, and across policies (pydantic checks shapes and types
first, :mod:`workflows.policy`); each problem is (field path, what was expected).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from workflows.policy_fields import DNS_LABEL_RE

if TYPE_CHECKING:
    from workflows.policy import LoadedPolicy, Policy


def semantic_problems(policy: Policy) -> list[tuple[str, str]]:
    """(field path, what was expected) for every rule that spans fields; empty when the policy is fine."""
    spec = policy.spec
    problems: list[tuple[str, str]] = []
    kinds = {"pvc" if v.pvc else "path" for v in spec.volumes if v.pvc or v.path}
    seen_volumes: dict[str, int] = {}
    seen_pvcs: dict[str, int] = {}
    for i, vol in enumerate(spec.volumes):
        where = f"spec.volumes[{i}]"
        if bool(vol.pvc) == bool(vol.path):
            problems.append(
                (where, "expected exactly one of pvc (a PersistentVolumeClaim) or path (local runs)")
            )
            continue
        if len(kinds) > 1 and vol.path:
            problems.append(
                (f"{where}.path", "expected pvc like the other volumes (no mixing of pvc and path)")
            )
        name = vol.volume_name
        if not vol.name and not re.match(DNS_LABEL_RE, name):
            problems.append(
                (
                    f"{where}.name",
                    f"required because the default {name!r} is not a DNS-1123 label of at most 63",
                )
            )
        if name in seen_volumes:
            problems.append(
                (
                    f"{where}.name",
                    f"expected a unique volume name, {name!r} is also spec.volumes[{seen_volumes[name]}]",
                )
            )
        seen_volumes.setdefault(name, i)
        if vol.pvc:
            if vol.pvc in seen_pvcs:
                problems.append(
                    (
                        f"{where}.pvc",
                        f"expected each PVC once, {vol.pvc!r} is also spec.volumes[{seen_pvcs[vol.pvc]}]",
                    )
                )
            seen_pvcs.setdefault(vol.pvc, i)
    local = kinds == {"path"}
    seen_targets: dict[str, int] = {}
    for i, target in enumerate(spec.quiesce):
        where = f"spec.quiesce[{i}]"
        if target.local and not local:
            problems.append((f"{where}.local", "expected false: the volumes are PVCs, hooks run in pods"))
        if not target.local and local and target.hook != "none":
            problems.append((f"{where}.local", "expected true: the volumes are local paths"))
        name = target.target_name
        if name in seen_targets:
            problems.append(
                (
                    f"{where}.name",
                    f"expected a unique target name, {name!r} is also spec.quiesce[{seen_targets[name]}]",
                )
            )
        seen_targets.setdefault(name, i)
    for i, vol in enumerate(spec.volumes):
        if vol.target is not None and vol.target not in seen_targets:
            known = ", ".join(sorted(seen_targets)) or "none defined"
            problems.append(
                (
                    f"spec.volumes[{i}].target",
                    f"expected the name of a quiesce target ({known}), got {vol.target!r}",
                )
            )
    if spec.snapshot.group_class_name and spec.snapshot.consistency != "group":
        problems.append(
            (
                "spec.snapshot.groupClassName",
                "expected only with consistency: group (it names a VolumeGroupSnapshotClass)",
            )
        )
    if local and spec.snapshot.consistency == "group":
        problems.append(("spec.snapshot.consistency", "expected volume for local paths (group needs CSI)"))
    if spec.freeze.keepalive_seconds >= spec.freeze.deadline_seconds:
        problems.append(("spec.freeze.keepaliveSeconds", "expected less than spec.freeze.deadlineSeconds"))
    movers = spec.movers.namespace
    if movers is not None and movers == policy.namespace:
        problems.append(
            (
                "spec.movers.namespace",
                f"expected a namespace other than the policy's own ({policy.namespace}), or no movers",
            )
        )
    if movers is not None and local:
        problems.append(("spec.movers.namespace", "expected no mover namespace for local paths"))
    if not spec.retention.rules():
        problems.append(("spec.retention", "expected at least one keep rule above 0 (e.g. keepLast: 7)"))
    return problems


def repository_sharing(loaded: Sequence[LoadedPolicy]) -> tuple[list[str], list[str]]:
    """(problems, warnings) about repositories used from several namespaces.

    One repository per namespace is the default: its key opens every backup in it. Policies of
    different namespaces may share one only when every one of them sets ``repository.shared: true``,
    and that is warned about.
    """
    from steps.api import canonical_repo_url, check_endpoint

    by_repo: dict[tuple[str, str | None], list[LoadedPolicy]] = {}
    for item in loaded:
        repo = item.policy.spec.repository
        # (the validators already spelled both canonically; two spellings of one repository are one key)
        url = canonical_repo_url(repo.url, "spec.repository.url")
        endpoint = check_endpoint(repo.endpoint, "spec.repository.endpoint") if repo.endpoint else None
        by_repo.setdefault((url, endpoint), []).append(item)
    problems: list[str] = []
    warnings: list[str] = []
    for (url, _endpoint), items in sorted(by_repo.items(), key=lambda kv: kv[0][0]):
        namespaces = sorted({i.policy.namespace for i in items})
        for item in items:
            if len(namespaces) > 1 and not item.policy.spec.repository.shared:
                others = ", ".join(n for n in namespaces if n != item.policy.namespace)
                problems.append(
                    f"{item.source}: spec.repository.shared: expected true to share {url} with "
                    f"namespace(s) {others} (whoever holds its key can read every backup in it); "
                    "or give each namespace its own repository"
                )
        if any(i.policy.spec.repository.shared for i in items):
            warnings.append(
                f"warning: repository {url} is shared (namespaces: {', '.join(namespaces)}): whoever holds "
                "its key can read every backup in it"
            )
    return problems, warnings
