"""The Pod Security Standards' baseline and restricted controls, one case per documented rule: each
field's allowed values admitted and a forbidden value rejected, naming the control, for every kind of
container (init, regular, ephemeral) where the rule is about containers."""

from __future__ import annotations

import copy

import pytest

from steps.manifests.podsecurity import LEVELS, check, strictest_level, violations

CONTAINER_KINDS = ("initContainers", "containers", "ephemeralContainers")


def restricted_pod() -> dict:
    """A pod every level admits: the starting point each case changes one field of."""
    ctx = {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }
    return {
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 1000,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "initContainers": [{"name": "init", "securityContext": copy.deepcopy(ctx)}],
        "containers": [{"name": "main", "securityContext": copy.deepcopy(ctx)}],
        "ephemeralContainers": [{"name": "debug", "securityContext": copy.deepcopy(ctx)}],
        "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}],
    }


def controls(pod: dict, level: str, annotations: dict | None = None) -> set[str]:
    return {v.control for v in check(pod, level, annotations)}


def test_the_starting_pod_is_admitted_at_every_level():
    pod = restricted_pod()
    assert all(check(pod, level) == [] for level in LEVELS)
    assert strictest_level(pod) == "restricted"


# -- pod-level fields -------------------------------------------------------------------------------


def _set(path: str, value):
    """A change of the pod: ``path`` is dotted below the pod spec."""

    def change(pod: dict) -> None:
        *parents, last = path.split(".")
        cur = pod
        for p in parents:
            cur = cur.setdefault(p, {})
        cur[last] = value

    return change


# (control, change, denied at baseline, denied at restricted)
POD_CASES = [
    ("HostProcess", _set("securityContext.windowsOptions", {"hostProcess": True}), True),
    ("HostProcess", _set("securityContext.windowsOptions", {"hostProcess": False}), False),
    ("Host Namespaces", _set("hostNetwork", True), True),
    ("Host Namespaces", _set("hostPID", True), True),
    ("Host Namespaces", _set("hostIPC", True), True),
    ("Host Namespaces", _set("hostNetwork", False), False),
    ("HostPath Volumes", _set("volumes", [{"name": "h", "hostPath": {"path": "/"}}]), True),
    ("AppArmor", _set("securityContext.appArmorProfile", {"type": "Unconfined"}), True),
    ("AppArmor", _set("securityContext.appArmorProfile", {"type": "RuntimeDefault"}), False),
    (
        "AppArmor",
        _set("securityContext.appArmorProfile", {"type": "Localhost", "localhostProfile": "p"}),
        False,
    ),
    ("SELinux", _set("securityContext.seLinuxOptions", {"type": "spc_t"}), True),
    ("SELinux", _set("securityContext.seLinuxOptions", {"user": "system_u"}), True),
    ("SELinux", _set("securityContext.seLinuxOptions", {"role": "system_r"}), True),
    ("SELinux", _set("securityContext.seLinuxOptions", {"type": "container_t", "level": "s0:c1"}), False),
    ("SELinux", _set("securityContext.seLinuxOptions", {"type": "container_init_t"}), False),
    ("SELinux", _set("securityContext.seLinuxOptions", {"type": "container_kvm_t"}), False),
    ("Seccomp", _set("securityContext.seccompProfile", {"type": "Unconfined"}), True),
    (
        "Seccomp",
        _set("securityContext.seccompProfile", {"type": "Localhost", "localhostProfile": "p"}),
        False,
    ),
    ("Sysctls", _set("securityContext.sysctls", [{"name": "kernel.msgmax", "value": "1"}]), True),
    (
        "Sysctls",
        _set("securityContext.sysctls", [{"name": "net.ipv4.ip_local_port_range", "value": "1 2"}]),
        False,
    ),
    (
        "Sysctls",
        _set("securityContext.sysctls", [{"name": "net.ipv4.tcp_keepalive_time", "value": "60"}]),
        False,
    ),
]


@pytest.mark.parametrize(
    ("control", "change", "denied"),
    POD_CASES,
    ids=[f"{c}-{'denied' if d else 'allowed'}-{i}" for i, (c, _, d) in enumerate(POD_CASES)],
)
def test_baseline_pod_fields(control, change, denied):
    pod = restricted_pod()
    change(pod)
    # baseline's rules hold at restricted too
    for level in ("baseline", "restricted"):
        assert (control in controls(pod, level)) is denied, violations(pod, level)
    assert check(pod, "privileged") == []


# -- container-level fields --------------------------------------------------------------------------


def _ctx(**fields):
    def change(c: dict) -> None:
        c.setdefault("securityContext", {}).update(fields)

    return change


def _caps(add=None, drop=("ALL",)):
    def change(c: dict) -> None:
        caps = {"drop": list(drop)}
        if add is not None:
            caps["add"] = list(add)
        c.setdefault("securityContext", {})["capabilities"] = caps

    return change


def _ports(*ports):
    def change(c: dict) -> None:
        c["ports"] = list(ports)

    return change


BASELINE_DEFAULT_CAPABILITIES = [
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
]

# (control, change of one container, denied at baseline, denied at restricted)
CONTAINER_CASES = [
    ("HostProcess", _ctx(windowsOptions={"hostProcess": True}), True, True),
    ("Privileged Containers", _ctx(privileged=True), True, True),
    ("Privileged Containers", _ctx(privileged=False), False, False),
    ("Capabilities", _caps(add=["DAC_READ_SEARCH"]), True, True),
    ("Capabilities", _caps(add=["SYS_ADMIN"]), True, True),
    ("Capabilities", _caps(add=["NET_RAW"]), True, True),
    # the default set: baseline admits each, restricted none but NET_BIND_SERVICE
    *(
        ("Capabilities", _caps(add=[cap]), False, cap != "NET_BIND_SERVICE")
        for cap in BASELINE_DEFAULT_CAPABILITIES
    ),
    ("Capabilities", _caps(drop=()), False, True),
    ("Capabilities", _caps(drop=("NET_RAW",)), False, True),
    ("Host Ports", _ports({"containerPort": 80, "hostPort": 8080}), True, True),
    ("Host Ports", _ports({"containerPort": 80, "hostPort": 0}), False, False),
    ("Host Ports", _ports({"containerPort": 80}), False, False),
    ("AppArmor", _ctx(appArmorProfile={"type": "Unconfined"}), True, True),
    ("AppArmor", _ctx(appArmorProfile={"type": "RuntimeDefault"}), False, False),
    ("SELinux", _ctx(seLinuxOptions={"type": "unconfined_t"}), True, True),
    ("SELinux", _ctx(seLinuxOptions={"user": "root"}), True, True),
    ("SELinux", _ctx(seLinuxOptions={"type": "container_engine_t"}), False, False),
    ("/proc Mount Type", _ctx(procMount="Unmasked"), True, True),
    ("/proc Mount Type", _ctx(procMount="Default"), False, False),
    ("Seccomp", _ctx(seccompProfile={"type": "Unconfined"}), True, True),
    ("Seccomp", _ctx(seccompProfile={"type": "RuntimeDefault"}), False, False),
    ("Privilege Escalation", _ctx(allowPrivilegeEscalation=True), False, True),
    ("Privilege Escalation", _ctx(allowPrivilegeEscalation=None), False, True),
    ("Running as Non-root", _ctx(runAsNonRoot=False), False, True),
    ("Running as Non-root", _ctx(runAsNonRoot=True), False, False),
    ("Running as Non-root user", _ctx(runAsUser=0), False, True),
    ("Running as Non-root user", _ctx(runAsUser=1), False, False),
]


@pytest.mark.parametrize("kind", CONTAINER_KINDS)
@pytest.mark.parametrize(
    ("control", "change", "baseline_denies", "restricted_denies"),
    CONTAINER_CASES,
    ids=[f"{c}-{i}" for i, (c, *_rest) in enumerate(CONTAINER_CASES)],
)
def test_container_fields(kind, control, change, baseline_denies, restricted_denies):
    pod = restricted_pod()
    container = pod[kind][0]
    ctx = container.setdefault("securityContext", {})
    change(container)
    for key in [k for k, v in ctx.items() if v is None]:
        del ctx[key]
    assert (control in controls(pod, "baseline")) is baseline_denies, violations(pod, "baseline")
    assert (control in controls(pod, "restricted")) is restricted_denies, violations(pod, "restricted")
    # the violation names the container it is about
    for v in check(pod, "restricted"):
        assert v.subject == f"container {container['name']}"


# -- restricted's pod-or-container fields -------------------------------------------------------------


def test_run_as_non_root_in_the_pod_or_in_every_container():
    pod = restricted_pod()
    del pod["securityContext"]["runAsNonRoot"]
    # unset everywhere: every container is refused
    subjects = {v.subject for v in check(pod, "restricted") if v.control == "Running as Non-root"}
    assert subjects == {"container init", "container main", "container debug"}
    # set in every container: admitted
    for kind in CONTAINER_KINDS:
        pod[kind][0]["securityContext"]["runAsNonRoot"] = True
    assert check(pod, "restricted") == []
    # false in the pod is refused even when each container says true
    pod["securityContext"]["runAsNonRoot"] = False
    assert [str(v) for v in check(pod, "restricted")] == [
        "pod: runAsNonRoot must be true (is false) (restricted: Running as Non-root)"
    ]
    assert check(pod, "baseline") == []


def test_run_as_user_zero_in_the_pod_is_refused_even_when_containers_override_it():
    pod = restricted_pod()
    pod["securityContext"]["runAsUser"] = 0
    for kind in CONTAINER_KINDS:
        pod[kind][0]["securityContext"]["runAsUser"] = 1000
    assert {(v.subject, v.control) for v in check(pod, "restricted")} == {("pod", "Running as Non-root user")}
    del pod["securityContext"]["runAsUser"]  # undefined is allowed
    assert check(pod, "restricted") == []


def test_seccomp_in_the_pod_or_in_every_container():
    pod = restricted_pod()
    del pod["securityContext"]["seccompProfile"]
    subjects = {v.subject for v in check(pod, "restricted") if v.control == "Seccomp"}
    assert subjects == {"container init", "container main", "container debug"}
    assert check(pod, "baseline") == []  # unset is fine for baseline
    for kind in CONTAINER_KINDS:
        pod[kind][0]["securityContext"]["seccompProfile"] = {"type": "Localhost", "localhostProfile": "p"}
    assert check(pod, "restricted") == []


def test_restricted_volume_types():
    allowed = {
        "configMap": {"name": "c"},
        "csi": {"driver": "d"},
        "downwardAPI": {"items": []},
        "emptyDir": {},
        "ephemeral": {"volumeClaimTemplate": {"spec": {}}},
        "persistentVolumeClaim": {"claimName": "p"},
        "projected": {"sources": []},
        "secret": {"secretName": "s"},
    }
    pod = restricted_pod()
    pod["volumes"] = [{"name": kind, kind: source} for kind, source in allowed.items()]
    assert check(pod, "restricted") == []
    for kind, source in {"gitRepo": {}, "nfs": {"server": "s", "path": "/"}, "iscsi": {}, "rbd": {}}.items():
        pod["volumes"] = [{"name": "v", kind: source}]
        assert [str(v) for v in check(pod, "restricted")] == [
            f"volume v: type {kind} is not allowed (restricted: Volume Types)"
        ]
        assert check(pod, "baseline") == []
    pod["volumes"] = [{"name": "h", "hostPath": {"path": "/"}}]
    assert {v.control for v in check(pod, "restricted")} == {"HostPath Volumes", "Volume Types"}


def test_apparmor_annotations():
    pod = restricted_pod()
    key = "container.apparmor.security.beta.kubernetes.io/main"
    for value in ("runtime/default", "localhost/my-profile"):
        assert check(pod, "baseline", {key: value}) == []
    assert [str(v) for v in check(pod, "baseline", {key: "unconfined"})] == [
        "container main: AppArmor profile unconfined is not allowed (baseline: AppArmor)"
    ]
    assert check(pod, "baseline", {"other": "unconfined"}) == []


def test_windows_pods_skip_restricteds_linux_only_controls():
    pod = restricted_pod()
    pod["os"] = {"name": "windows"}
    del pod["securityContext"]["seccompProfile"]
    for kind in CONTAINER_KINDS:
        pod[kind][0]["securityContext"] = {}
    assert check(pod, "restricted") == []
    pod["os"] = {"name": "linux"}
    assert {v.control for v in check(pod, "restricted")} == {
        "Privilege Escalation",
        "Seccomp",
        "Capabilities",
    }


def test_root_with_a_default_capability_is_baseline_not_restricted():
    # the copy and restore steps' shape: root, everything dropped but a capability of the default set
    pod = restricted_pod()
    pod["securityContext"] = {"seccompProfile": {"type": "RuntimeDefault"}}
    del pod["initContainers"], pod["ephemeralContainers"]
    pod["containers"][0]["securityContext"] = {
        "runAsUser": 0,
        "runAsNonRoot": False,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"], "add": ["DAC_OVERRIDE"]},
    }
    assert strictest_level(pod) == "baseline"
    assert sorted(v.control for v in check(pod, "restricted")) == [
        "Capabilities",
        "Running as Non-root",
        "Running as Non-root user",
    ]
    pod["containers"][0]["securityContext"]["capabilities"]["add"] = ["DAC_READ_SEARCH"]
    assert strictest_level(pod) == "privileged"


def test_unknown_level_is_an_error():
    with pytest.raises(ValueError, match="unknown Pod Security level 'strict'"):
        check({}, "strict")
