"""Restore phases, holding workloads until their data is in place, and the conflict message."""

from __future__ import annotations

import json

import pytest

from steps.manifests.objects import Ref
from steps.manifests.ordering import (
    HOLD_ANNOTATION,
    HOLD_NODE_LABEL,
    RELEASE_ANNOTATION,
    conflict_message,
    hold,
    is_held,
    order_objects,
    phase_of,
    release_patch,
)


def o(api, kind, name="x", **spec):
    return {"apiVersion": api, "kind": kind, "metadata": {"name": name, "namespace": "ns"}, **spec}


@pytest.mark.parametrize(
    ("api", "kind", "phase"),
    [
        ("v1", "Namespace", "namespace"),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", "cluster"),
        ("apiextensions.k8s.io/v1", "CustomResourceDefinition", "cluster"),
        ("v1", "ConfigMap", "config"),
        ("v1", "Secret", "config"),
        ("v1", "ServiceAccount", "config"),
        ("rbac.authorization.k8s.io/v1", "RoleBinding", "config"),
        ("v1", "Service", "config"),
        ("networking.k8s.io/v1", "Ingress", "config"),
        ("policy/v1", "PodDisruptionBudget", "config"),
        ("v1", "PersistentVolumeClaim", "storage"),
        ("apps/v1", "StatefulSet", "workloads"),
        ("apps/v1", "Deployment", "workloads"),
        ("apps/v1", "DaemonSet", "workloads"),
        ("batch/v1", "CronJob", "workloads"),
        ("batch/v1", "Job", "workloads"),
        ("v1", "Pod", "deferred"),
        ("autoscaling/v2", "HorizontalPodAutoscaler", "deferred"),
        ("example.com/v1", "PostgresCluster", "deferred"),
    ],
)
def test_phase_of_each_kind(api, kind, phase):
    assert phase_of(o(api, kind)) == phase


def test_order_within_phases():
    objs = [
        o("apps/v1", "Deployment", "b"),
        o("v1", "Service", "s"),
        o("v1", "Secret", "z"),
        o("v1", "ServiceAccount", "sa"),
        o("apps/v1", "StatefulSet", "a"),
        o("v1", "ConfigMap", "c"),
        o("v1", "PersistentVolumeClaim", "p"),
        o("v1", "Namespace", "ns"),
    ]
    phases = order_objects(objs)
    names = {p: [f"{x['kind']}/{x['metadata']['name']}" for x in items] for p, items in phases.items()}
    assert names == {
        "namespace": ["Namespace/ns"],
        "cluster": [],
        "config": ["ServiceAccount/sa", "Secret/z", "ConfigMap/c", "Service/s"],
        "storage": ["PersistentVolumeClaim/p"],
        "workloads": ["StatefulSet/a", "Deployment/b"],
        "deferred": [],
    }


def merge(target, patch):
    """RFC 7386 merge patch as the API server applies it (maps left empty are omitted when stored)."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge(out.get(k), v)
            if out[k] == {}:
                del out[k]
    return out


HOLDS = [
    (o("apps/v1", "StatefulSet", spec={"replicas": 3}), ("spec", "replicas"), 0),
    (o("apps/v1", "Deployment", spec={"replicas": 2}), ("spec", "replicas"), 0),
    (o("apps/v1", "ReplicaSet", spec={"replicas": 2}), ("spec", "replicas"), 0),
    (o("batch/v1", "CronJob", spec={"schedule": "* * * * *"}), ("spec", "suspend"), True),
    (o("batch/v1", "Job", spec={"template": {}}), ("spec", "suspend"), True),
]


@pytest.mark.parametrize(("obj", "path", "held_value"), HOLDS)
def test_hold_and_release_round_trip(obj, path, held_value):
    held = hold(obj)
    cur = held
    for p in path:
        cur = cur[p]
    assert cur == held_value
    assert is_held(held)
    released = merge(held, release_patch(held))
    assert released == obj  # back to exactly what was captured
    assert obj["metadata"].get("annotations") is None  # the input is untouched


def test_statefulset_without_replicas_is_released_to_one():
    held = hold(o("apps/v1", "StatefulSet", spec={}))
    assert held["spec"]["replicas"] == 0
    assert json.loads(held["metadata"]["annotations"][RELEASE_ANNOTATION]) == {"spec": {"replicas": 1}}


def test_daemonset_is_held_by_a_node_selector():
    ds = o("apps/v1", "DaemonSet", spec={"template": {"spec": {"nodeSelector": {"disk": "ssd"}}}})
    held = hold(ds)
    assert held["spec"]["template"]["spec"]["nodeSelector"] == {"disk": "ssd", HOLD_NODE_LABEL: "true"}
    assert merge(held, release_patch(held)) == ds


@pytest.mark.parametrize(
    "obj",
    [
        o("apps/v1", "StatefulSet", spec={"replicas": 0}),
        o("batch/v1", "CronJob", spec={"suspend": True}),
        o("v1", "ConfigMap", data={}),
    ],
)
def test_nothing_to_hold(obj):
    held = hold(obj)
    assert held == obj and not is_held(held) and release_patch(held) is None


def test_release_patch_removes_the_hold_annotations():
    patch = release_patch(hold(o("apps/v1", "Deployment", spec={"replicas": 1})))
    assert patch["metadata"]["annotations"] is None  # they were the only ones
    dep = o("apps/v1", "Deployment", spec={"replicas": 1})
    dep["metadata"]["annotations"] = {"team": "a"}
    patch = release_patch(hold(dep))
    assert patch["metadata"]["annotations"] == {HOLD_ANNOTATION: None, RELEASE_ANNOTATION: None}


def test_conflict_message_lists_every_object():
    msg = conflict_message(
        [
            Ref("", "Service", "dr", "db"),
            Ref("", "ConfigMap", "dr", "cfg"),
            Ref("apps", "StatefulSet", "dr", "db"),
        ],
        "dr",
    )
    assert msg == (
        "restore refused: 3 objects already exist in namespace dr: ConfigMap/cfg, Service/db, "
        "StatefulSet/db (pass --existing=skip to keep them, or --existing=replace to overwrite them)"
    )
    assert "1 object already exists" in conflict_message([Ref("", "Secret", "dr", "s")], "dr")
