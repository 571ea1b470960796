"""Pod Security admission levels checked against a pod spec: the one implementation of the Pod Security
Standards' ``baseline`` and ``restricted`` controls in Snapflow.

:func:`check` returns, for ``baseline`` or ``restricted``, one :class:`Violation` per field a pod sets
against a control (the control named as the Standards name it); :func:`violations` returns the same as
lines. Every control of the two levels is covered, for the pod and for each of its init, regular and
ephemeral containers; AppArmor's annotations are checked when the pod's ``annotations`` are given.
``preflight`` compares every pod the rendered WorkflowTemplates and the restore create with the
namespace's ``pod-security.kubernetes.io/enforce`` level.

Like the admission plugin, the restricted level's Linux-only controls (privilege escalation, seccomp,
capabilities) do not apply to a pod with ``spec.os.name: windows``.
"""

from __future__ import annotations

from dataclasses import dataclass

from steps.drivers.kube_objects import dig
from steps.manifests.objects import containers

LEVELS = ("privileged", "baseline", "restricted")
ENFORCE_LABEL = "pod-security.kubernetes.io/enforce"

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
RESTRICTED_CAPABILITIES = frozenset({"NET_BIND_SERVICE"})
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
SAFE_SYSCTLS = frozenset(
    {
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_local_reserved_ports",
        "net.ipv4.tcp_keepalive_time",
        "net.ipv4.tcp_fin_timeout",
        "net.ipv4.tcp_keepalive_intvl",
        "net.ipv4.tcp_keepalive_probes",
    }
)
SELINUX_TYPES = frozenset({"container_t", "container_init_t", "container_kvm_t", "container_engine_t"})
APPARMOR_TYPES = frozenset({"RuntimeDefault", "Localhost"})
SECCOMP_TYPES = frozenset({"RuntimeDefault", "Localhost"})
APPARMOR_ANNOTATION = "container.apparmor.security.beta.kubernetes.io/"


@dataclass(frozen=True)
class Violation:
    """One field of a pod set against one control: ``subject`` is ``pod``, ``container NAME`` or
    ``volume NAME``; ``control`` the Standards' name of the control (``Capabilities``, ...)."""

    level: str
    control: str
    subject: str
    detail: str

    def __str__(self) -> str:
        return f"{self.subject}: {self.detail} ({self.level}: {self.control})"


def _words(values) -> str:
    return ", ".join(str(v) for v in values)


def _baseline(pod_spec: dict, annotations: dict) -> list[Violation]:
    out: list[Violation] = []

    def add(control: str, subject: str, detail: str) -> None:
        out.append(Violation("baseline", control, subject, detail))

    pod_ctx = pod_spec.get("securityContext") or {}
    for subject, ctx in (("pod", pod_ctx), *_container_contexts(pod_spec)):
        if dig(ctx, "windowsOptions", "hostProcess") is True:
            add("HostProcess", subject, "windowsOptions.hostProcess=true is not allowed")
        apparmor = dig(ctx, "appArmorProfile", "type")
        if apparmor is not None and apparmor not in APPARMOR_TYPES:
            add("AppArmor", subject, f"appArmorProfile.type {apparmor} is not allowed")
        selinux = ctx.get("seLinuxOptions") or {}
        if selinux.get("type") and selinux["type"] not in SELINUX_TYPES:
            add("SELinux", subject, f"seLinuxOptions.type {selinux['type']} is not allowed")
        for key in ("user", "role"):
            if selinux.get(key):
                add("SELinux", subject, f"seLinuxOptions.{key} may not be set (is {selinux[key]})")
        if dig(ctx, "seccompProfile", "type") == "Unconfined":
            add("Seccomp", subject, "seccompProfile.type Unconfined is not allowed")
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod_spec.get(key):
            add("Host Namespaces", "pod", f"{key}=true is not allowed")
    for sysctl in pod_ctx.get("sysctls") or []:
        name = (sysctl or {}).get("name")
        if name not in SAFE_SYSCTLS:
            add("Sysctls", "pod", f"sysctl {name} is not in the safe set")
    for vol in pod_spec.get("volumes") or []:
        if "hostPath" in vol:
            add("HostPath Volumes", f"volume {vol.get('name')}", "hostPath volumes are not allowed")
    for c in containers(pod_spec):
        subject = f"container {c.get('name', '?')}"
        ctx = c.get("securityContext") or {}
        if ctx.get("privileged") is True:
            add("Privileged Containers", subject, "privileged is not allowed")
        extra = [
            cap
            for cap in dig(ctx, "capabilities", "add", default=[]) or []
            if cap not in BASELINE_CAPABILITIES
        ]
        if extra:
            add("Capabilities", subject, f"capabilities {_words(extra)} are not allowed")
        ports = [p.get("hostPort") for p in c.get("ports") or [] if (p or {}).get("hostPort")]
        if ports:
            add("Host Ports", subject, f"hostPort {_words(ports)} is not allowed")
        if ctx.get("procMount") not in (None, "Default"):
            add("/proc Mount Type", subject, f"procMount {ctx['procMount']} is not allowed")
    for key, value in sorted((annotations or {}).items()):
        if not key.startswith(APPARMOR_ANNOTATION):
            continue
        if not (value == "runtime/default" or str(value).startswith("localhost/")):
            container = key[len(APPARMOR_ANNOTATION) :]
            add("AppArmor", f"container {container}", f"AppArmor profile {value} is not allowed")
    return out


def _container_contexts(pod_spec: dict) -> list[tuple[str, dict]]:
    return [(f"container {c.get('name', '?')}", c.get("securityContext") or {}) for c in containers(pod_spec)]


def _restricted(pod_spec: dict) -> list[Violation]:
    out: list[Violation] = []

    def add(control: str, subject: str, detail: str) -> None:
        out.append(Violation("restricted", control, subject, detail))

    for vol in pod_spec.get("volumes") or []:
        kinds = sorted(set(vol) - {"name"})
        if kinds and not set(kinds) <= RESTRICTED_VOLUME_TYPES:
            add("Volume Types", f"volume {vol.get('name')}", f"type {_words(kinds)} is not allowed")
    pod_ctx = pod_spec.get("securityContext") or {}
    linux = dig(pod_spec, "os", "name") != "windows"
    pod_non_root = pod_ctx.get("runAsNonRoot")
    pod_seccomp = dig(pod_ctx, "seccompProfile", "type")
    if pod_non_root is False:
        add("Running as Non-root", "pod", "runAsNonRoot must be true (is false)")
    if pod_ctx.get("runAsUser") == 0:
        add("Running as Non-root user", "pod", "runAsUser 0 is not allowed")
    if linux and pod_seccomp is not None and pod_seccomp not in SECCOMP_TYPES:
        add("Seccomp", "pod", "seccompProfile must be RuntimeDefault or Localhost")
    for subject, ctx in _container_contexts(pod_spec):
        non_root = ctx.get("runAsNonRoot")
        if non_root is False or (non_root is None and pod_non_root is not True):
            add("Running as Non-root", subject, "runAsNonRoot must be true (in the pod or the container)")
        if ctx.get("runAsUser") == 0:
            add("Running as Non-root user", subject, "runAsUser 0 is not allowed")
        if not linux:
            continue
        if ctx.get("allowPrivilegeEscalation") is not False:
            add("Privilege Escalation", subject, "allowPrivilegeEscalation must be false")
        seccomp = dig(ctx, "seccompProfile", "type")
        if (seccomp is None and pod_seccomp not in SECCOMP_TYPES) or (
            seccomp is not None and seccomp not in SECCOMP_TYPES
        ):
            add(
                "Seccomp",
                subject,
                "seccompProfile must be RuntimeDefault or Localhost (in the pod or the container)",
            )
        added = dig(ctx, "capabilities", "add", default=[]) or []
        extra = [cap for cap in added if cap not in RESTRICTED_CAPABILITIES]
        if extra:
            add("Capabilities", subject, f"only NET_BIND_SERVICE may be added (adds {_words(extra)})")
        if "ALL" not in (dig(ctx, "capabilities", "drop", default=[]) or []):
            add("Capabilities", subject, "must drop ALL capabilities")
    return out


def check(pod_spec: dict, level: str, annotations: dict | None = None) -> list[Violation]:
    """Every control of ``level`` the pod breaks (restricted includes baseline's). ``annotations``: the
    pod's metadata annotations, for the AppArmor annotations."""
    if level not in LEVELS:
        raise ValueError(f"unknown Pod Security level {level!r}")
    if level == "privileged":
        return []
    out = _baseline(pod_spec, annotations or {})
    if level == "restricted":
        out += _restricted(pod_spec)
    return out


def violations(pod_spec: dict, level: str, annotations: dict | None = None) -> list[str]:
    """:func:`check` as one line per violation."""
    return [str(v) for v in check(pod_spec, level, annotations)]


def strictest_level(pod_spec: dict, annotations: dict | None = None) -> str:
    """The most restrictive level that admits the pod."""
    for level in reversed(LEVELS):
        if not check(pod_spec, level, annotations):
            return level
    return "privileged"
