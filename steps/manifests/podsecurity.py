"""Pod Security admission levels checked against a pod spec (the rules a step pod can trip over).

:func:`violations` returns, for ``baseline`` or ``restricted``, one line per rule the pod breaks, in the
words of the Pod Security Standards. Covers what Snapflow's own pods use (privileged, host namespaces,
hostPath volumes, added capabilities, running as root, privilege escalation, seccomp); ``preflight``
compares the rendered step pods with the namespace's ``pod-security.kubernetes.io/enforce`` level.
"""

from __future__ import annotations

from steps.manifests.objects import containers, dig

LEVELS = ("privileged", "baseline", "restricted")
BASELINE_CAPABILITIES = frozenset(
    {
        "AUDIT_WRITE",
        "CHOWN",
        "DAC_OVERRIDE",
        "FOWNER",
        "FSETID",
        "KILL",
        "MKNOD",
        "NET_BIND_SERVICE",
        "SETFCAP",
        "SETGID",
        "SETPCAP",
        "SETUID",
        "SYS_CHROOT",
    }
)
RESTRICTED_VOLUME_TYPES = frozenset(
    {
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    }
)


def violations(pod_spec: dict, level: str) -> list[str]:
    if level not in LEVELS:
        raise ValueError(f"unknown Pod Security level {level!r}")
    if level == "privileged":
        return []
    out: list[str] = []
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod_spec.get(key):
            out.append(f"{key}=true is not allowed")
    for vol in pod_spec.get("volumes") or []:
        if "hostPath" in vol:
            out.append(f"volume {vol.get('name')}: hostPath volumes are not allowed")
    pod_ctx = pod_spec.get("securityContext") or {}
    for c in containers(pod_spec):
        ctx = c.get("securityContext") or {}
        name = c.get("name", "?")
        if ctx.get("privileged"):
            out.append(f"container {name}: privileged is not allowed")
        added = set(dig(ctx, "capabilities", "add", default=[]) or [])
        if level == "baseline":
            extra = sorted(added - BASELINE_CAPABILITIES)
            if extra:
                out.append(f"container {name}: capabilities {', '.join(extra)} are not allowed")
            continue
        # restricted
        if added - {"NET_BIND_SERVICE"}:
            out.append(
                f"container {name}: only NET_BIND_SERVICE may be added (adds {', '.join(sorted(added))})"
            )
        if "ALL" not in (dig(ctx, "capabilities", "drop", default=[]) or []):
            out.append(f"container {name}: must drop ALL capabilities")
        if ctx.get("allowPrivilegeEscalation") is not False:
            out.append(f"container {name}: allowPrivilegeEscalation must be false")
        non_root = ctx.get("runAsNonRoot", pod_ctx.get("runAsNonRoot"))
        uid = ctx.get("runAsUser", pod_ctx.get("runAsUser"))
        if non_root is not True:
            out.append(f"container {name}: runAsNonRoot must be true")
        if uid == 0:
            out.append(f"container {name}: runAsUser 0 is not allowed")
        seccomp = dig(ctx, "seccompProfile", "type") or dig(pod_ctx, "seccompProfile", "type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            out.append(f"container {name}: seccompProfile must be RuntimeDefault or Localhost")
    if level == "restricted":
        for vol in pod_spec.get("volumes") or []:
            kinds = set(vol) - {"name"}
            if kinds and not kinds <= RESTRICTED_VOLUME_TYPES:
                out.append(f"volume {vol.get('name')}: type {', '.join(sorted(kinds))} is not allowed")
    return out
