"""finalize's part of ``spec.notifications``: one ``--notify`` option per webhook (its spec as JSON: names
and file paths, never a secret) and the Secret keys mounted as files where those paths point (read-only,
never in the environment). Without notifications, and in a local run, the step is returned unchanged.
"""

from __future__ import annotations

import json
from dataclasses import replace

from workflows.pipeline import FileMount, SourcePod, Step
from workflows.policy import Policy


def notification_mounts(policy: Policy) -> tuple[FileMount, ...]:
    mounts = []
    for i, target in enumerate(policy.spec.notifications):
        for spec_field, (ref, path) in target.files().items():
            directory, _, file = path.rpartition("/")
            kind = {"url_file": "url", "secret_file": "hmac", "ca_file": "ca"}[spec_field]
            mounts.append(
                FileMount(f"notify-{i}-{kind}", directory, secret=ref.name, items=((ref.key, file),))
            )
    return tuple(mounts)


def with_notifications(policy: Policy, finalize: Step) -> Step:
    """``finalize`` posting to the policy's webhooks (``--notify``, the Secrets mounted)."""
    targets = policy.spec.notifications
    if not targets or policy.is_local:  # a local run has no Secrets to mount: it sends nothing
        return finalize
    args = tuple(
        a for t in targets for a in ("--notify", json.dumps(t.spec(), sort_keys=True, separators=(",", ":")))
    )
    pod = finalize.source_pod or SourcePod(api_token=True)  # an app's finalize calls the Kubernetes API
    pod = replace(pod, mounts=(*pod.mounts, *notification_mounts(policy)))
    return replace(finalize, args=(*finalize.args, *args), source_pod=pod)


def notification_secrets(policy: Policy) -> list[tuple[str, str, str, tuple[str, ...]]]:
    """The Secrets finalize mounts for the webhooks, as (kind, namespace, name, keys): what the user
    provides beside the rendered manifests (``workflows.render.External``'s fields)."""
    if policy.is_local:
        return []
    keys: dict[str, set[str]] = {}
    for target in policy.spec.notifications:
        for ref, _path in target.files().values():
            keys.setdefault(ref.name, set()).add(ref.key)
    return [("Secret", policy.workflow_namespace, name, tuple(sorted(k))) for name, k in sorted(keys.items())]
