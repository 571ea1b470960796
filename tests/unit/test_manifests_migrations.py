"""The built-in API-version migration table: each entry's target version and spec conversion."""

from __future__ import annotations

import pytest

from steps.manifests.migrations import MIGRATIONS, find_migration, migrate


def o(api, kind, spec=None, **meta):
    return {
        "apiVersion": api,
        "kind": kind,
        "metadata": {"name": "x", "namespace": "ns", **meta},
        **({"spec": spec} if spec is not None else {}),
    }


@pytest.mark.parametrize(
    ("api", "kind", "target"),
    [
        ("extensions/v1beta1", "Ingress", "networking.k8s.io/v1"),
        ("networking.k8s.io/v1beta1", "Ingress", "networking.k8s.io/v1"),
        ("networking.k8s.io/v1beta1", "IngressClass", "networking.k8s.io/v1"),
        ("extensions/v1beta1", "NetworkPolicy", "networking.k8s.io/v1"),
        ("extensions/v1beta1", "Deployment", "apps/v1"),
        ("apps/v1beta1", "StatefulSet", "apps/v1"),
        ("apps/v1beta2", "DaemonSet", "apps/v1"),
        ("extensions/v1beta1", "ReplicaSet", "apps/v1"),
        ("batch/v1beta1", "CronJob", "batch/v1"),
        ("batch/v2alpha1", "CronJob", "batch/v1"),
        ("policy/v1beta1", "PodDisruptionBudget", "policy/v1"),
        ("autoscaling/v2beta1", "HorizontalPodAutoscaler", "autoscaling/v2"),
        ("autoscaling/v2beta2", "HorizontalPodAutoscaler", "autoscaling/v2"),
        ("rbac.authorization.k8s.io/v1beta1", "RoleBinding", "rbac.authorization.k8s.io/v1"),
        ("rbac.authorization.k8s.io/v1alpha1", "Role", "rbac.authorization.k8s.io/v1"),
        ("storage.k8s.io/v1beta1", "CSIStorageCapacity", "storage.k8s.io/v1"),
        ("scheduling.k8s.io/v1beta1", "PriorityClass", "scheduling.k8s.io/v1"),
        ("coordination.k8s.io/v1beta1", "Lease", "coordination.k8s.io/v1"),
        ("node.k8s.io/v1beta1", "RuntimeClass", "node.k8s.io/v1"),
        ("snapshot.storage.k8s.io/v1beta1", "VolumeSnapshotClass", "snapshot.storage.k8s.io/v1"),
    ],
)
def test_deprecated_versions_move_to_the_stable_one(api, kind, target):
    res = migrate(o(api, kind, {"selector": {"matchLabels": {"a": "b"}}}))
    assert res.migrated and res.obj["apiVersion"] == target
    assert res.notes[0].startswith(f"{kind}/x: {api} → {target}")


@pytest.mark.parametrize(
    ("api", "kind"),
    [
        ("apps/v1", "Deployment"),
        ("v1", "Service"),
        ("example.com/v1beta1", "X"),
        ("networking.k8s.io/v1", "Ingress"),
    ],
)
def test_current_versions_are_untouched(api, kind):
    obj = o(api, kind, {})
    res = migrate(obj)
    assert res.obj is obj and not res.migrated and res.notes == []


@pytest.mark.parametrize("api", ["policy/v1beta1", "extensions/v1beta1"])
def test_pod_security_policy_is_reported_and_not_restored(api):
    res = migrate(o(api, "PodSecurityPolicy", {}))
    assert res.obj is None
    assert "removed in Kubernetes 1.25" in res.notes[0] and "not restored" in res.notes[0]


def test_ingress_spec_is_converted():
    ing = o(
        "extensions/v1beta1",
        "Ingress",
        {
            "backend": {"serviceName": "default", "servicePort": "http"},
            "rules": [
                {
                    "host": "a.example",
                    "http": {
                        "paths": [
                            {"path": "/", "backend": {"serviceName": "web", "servicePort": 80}},
                            {
                                "path": "/api",
                                "pathType": "Prefix",
                                "backend": {"serviceName": "api", "servicePort": "8080"},
                            },
                            {"path": "/static", "backend": {"resource": {"kind": "Bucket", "name": "b"}}},
                        ]
                    },
                }
            ],
        },
        annotations={"kubernetes.io/ingress.class": "nginx"},
    )
    res = migrate(ing)
    assert res.obj["spec"] == {
        "defaultBackend": {"service": {"name": "default", "port": {"name": "http"}}},
        "ingressClassName": "nginx",
        "rules": [
            {
                "host": "a.example",
                "http": {
                    "paths": [
                        {
                            "path": "/",
                            "pathType": "ImplementationSpecific",
                            "backend": {"service": {"name": "web", "port": {"number": 80}}},
                        },
                        {
                            "path": "/api",
                            "pathType": "Prefix",
                            "backend": {"service": {"name": "api", "port": {"number": 8080}}},
                        },
                        {
                            "path": "/static",
                            "pathType": "ImplementationSpecific",
                            "backend": {"resource": {"kind": "Bucket", "name": "b"}},
                        },
                    ]
                },
            }
        ],
    }
    assert "annotations" not in res.obj["metadata"]
    assert "ingressClassName" in res.notes[0]


def test_ingress_keeps_an_explicit_class_and_the_annotation():
    ing = o(
        "networking.k8s.io/v1beta1",
        "Ingress",
        {"ingressClassName": "a"},
        annotations={"kubernetes.io/ingress.class": "b"},
    )
    res = migrate(ing)
    assert res.obj["spec"]["ingressClassName"] == "a"
    assert res.obj["metadata"]["annotations"] == {"kubernetes.io/ingress.class": "b"}


def test_apps_selector_is_made_explicit_and_old_fields_dropped():
    dep = o(
        "extensions/v1beta1",
        "Deployment",
        {"rollbackTo": {"revision": 1}, "template": {"metadata": {"labels": {"app": "w"}}, "spec": {}}},
    )
    res = migrate(dep)
    assert res.obj["spec"]["selector"] == {"matchLabels": {"app": "w"}}
    assert "rollbackTo" not in res.obj["spec"]


@pytest.mark.parametrize(
    ("api", "kind", "strategy"),
    [
        ("extensions/v1beta1", "DaemonSet", {"type": "OnDelete"}),
        ("apps/v1beta1", "StatefulSet", {"type": "OnDelete"}),
        ("apps/v1beta2", "StatefulSet", None),
        ("apps/v1beta2", "DaemonSet", None),
    ],
)
def test_old_default_update_strategy_is_kept(api, kind, strategy):
    res = migrate(o(api, kind, {"selector": {"matchLabels": {"a": "b"}}}))
    assert res.obj["spec"].get("updateStrategy") == strategy


def test_pdb_with_empty_selector_is_flagged():
    res = migrate(o("policy/v1beta1", "PodDisruptionBudget", {"selector": {}, "minAvailable": 1}))
    assert "matches every pod in policy/v1" in res.notes[0]


def test_hpa_v2beta1_metrics_are_converted():
    hpa = o(
        "autoscaling/v2beta1",
        "HorizontalPodAutoscaler",
        {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "w"},
            "minReplicas": 1,
            "maxReplicas": 5,
            "metrics": [
                {"type": "Resource", "resource": {"name": "cpu", "targetAverageUtilization": 60}},
                {"type": "Resource", "resource": {"name": "memory", "targetAverageValue": "500Mi"}},
                {"type": "Pods", "pods": {"metricName": "qps", "targetAverageValue": "10"}},
                {
                    "type": "Object",
                    "object": {
                        "target": {"kind": "Service", "name": "s"},
                        "metricName": "rps",
                        "targetValue": "100",
                    },
                },
                {
                    "type": "External",
                    "external": {
                        "metricName": "queue",
                        "metricSelector": {"matchLabels": {"q": "a"}},
                        "targetAverageValue": "30",
                    },
                },
            ],
        },
    )
    res = migrate(hpa)
    assert res.obj["spec"]["metrics"] == [
        {
            "type": "Resource",
            "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 60}},
        },
        {
            "type": "Resource",
            "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "500Mi"}},
        },
        {
            "type": "Pods",
            "pods": {"metric": {"name": "qps"}, "target": {"type": "AverageValue", "averageValue": "10"}},
        },
        {
            "type": "Object",
            "object": {
                "describedObject": {"kind": "Service", "name": "s"},
                "metric": {"name": "rps"},
                "target": {"type": "Value", "value": "100"},
            },
        },
        {
            "type": "External",
            "external": {
                "metric": {"name": "queue", "selector": {"matchLabels": {"q": "a"}}},
                "target": {"type": "AverageValue", "averageValue": "30"},
            },
        },
    ]


def test_migration_does_not_change_its_input():
    ing = o("extensions/v1beta1", "Ingress", {"backend": {"serviceName": "a", "servicePort": 1}})
    before = repr(ing)
    migrate(ing)
    assert repr(ing) == before


def test_table_has_no_duplicate_entries():
    keys = [(m.source, m.kind) for m in MIGRATIONS]
    assert len(keys) == len(set(keys))
    assert (
        find_migration("rbac.authorization.k8s.io/v1beta1", "ClusterRole").target
        == "rbac.authorization.k8s.io/v1"
    )
