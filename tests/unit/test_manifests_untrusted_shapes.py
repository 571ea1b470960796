"""Captured objects are untrusted input: whatever shape a crafted backup gives their fields, the restore's
transforms, scope check, ordering and hold either work or raise one Snapflow error naming the object —
never a Python exception that would reach the user as a traceback."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from steps.errors import SnapflowError
from steps.idmap import IdRange
from steps.manifests.ordering import hold, order_objects, release_patch
from steps.manifests.scope import Scope, check_scope
from steps.manifests.transforms import TransformSpec, transform_objects

FIELDS = [
    "spec", "template", "containers", "initContainers", "securityContext", "runAsUser", "fsGroup",
    "supplementalGroups", "image", "subjects", "namespace", "name", "volumeClaimTemplates",
    "storageClassName", "ingress", "from", "namespaceSelector", "matchLabels", "affinity", "podAffinity",
    "requiredDuringSchedulingIgnoredDuringExecution", "namespaces", "labels", "annotations", "jobTemplate",
    "replicas", "suspend", "nodeSelector", "rules", "http", "paths", "backend", "serviceName",
    "servicePort", "selector", "metrics", "roleRef",
]  # fmt: skip
KINDS = [
    ("apps/v1", "StatefulSet"), ("apps/v1beta1", "Deployment"), ("extensions/v1beta1", "Ingress"),
    ("batch/v1beta1", "CronJob"), ("v1", "Pod"), ("rbac.authorization.k8s.io/v1", "RoleBinding"),
    ("networking.k8s.io/v1", "NetworkPolicy"), ("v1", "PersistentVolumeClaim"),
    ("autoscaling/v2beta1", "HorizontalPodAutoscaler"), ("policy/v1beta1", "PodDisruptionBudget"),
    ("apps/v1", "DaemonSet"), ("v1", "Namespace"),
]  # fmt: skip
SPEC = TransformSpec(
    namespace_map={"shop": "new"},
    storage_class_map={"*": "sc"},
    add_labels={"a": "b"},
    remove_labels=("x*",),
    image_registry_map={"docker.io": "mirror"},
    uid_map=(IdRange(0, 1000, 100),),
    gid_map=(IdRange(0, 1000, 100),),
)

leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 70000),
    st.text(max_size=4),
    st.sampled_from(["shop", "docker.io/x:1"]),
)
value = st.recursive(
    leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(FIELDS), inner, max_size=4)
    ),
    max_leaves=25,
)


def captured(kind: tuple[str, str], body: dict, metadata: dict) -> dict:
    obj = {"apiVersion": kind[0], "kind": kind[1], "metadata": {"name": "x", "namespace": "shop", **metadata}}
    obj.update({k: v for k, v in body.items() if k != "metadata"})
    return obj


objects = st.builds(
    captured,
    st.sampled_from(KINDS),
    st.dictionaries(st.sampled_from(FIELDS), value, max_size=4),
    st.dictionaries(st.sampled_from(["labels", "annotations"]), value, max_size=2),
)


@settings(max_examples=200, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(objects, max_size=3))
def test_any_shape_of_captured_fields_is_handled_or_refused_in_one_error(captured_objects):
    try:
        result = transform_objects(captured_objects, SPEC)
    except SnapflowError as err:
        assert str(err).startswith(tuple(f"{k}" for _, k in KINDS)), str(err)
        return
    allowed = check_scope(
        result.objects, Scope(frozenset({"new"})), lambda _a, kind: kind != "Namespace"
    ).allowed
    for obj in order_objects(allowed)["workloads"]:
        release_patch(hold(obj))
