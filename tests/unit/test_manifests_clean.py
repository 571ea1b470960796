"""Capture: which objects are kept, which are left out and why, and what is stripped from each."""

from __future__ import annotations

import pytest

from steps.manifests.clean import clean_object, references, select_objects
from steps.manifests.objects import Ref, parse_selector

NS = "shop"


def obj(api, kind, name, *, uid=None, labels=None, owner=None, ns=NS, **body):
    meta = {
        "name": name,
        "uid": uid or f"uid-{kind}-{name}",
        "resourceVersion": "17",
        "creationTimestamp": "2024-01-01T00:00:00Z",
        "managedFields": [{"manager": "kubectl"}],
        "generation": 3,
        "selfLink": "/x",
    }
    if ns:
        meta["namespace"] = ns
    if labels:
        meta["labels"] = dict(labels)
    if owner is not None:
        meta["ownerReferences"] = [
            {
                "apiVersion": owner["apiVersion"],
                "kind": owner["kind"],
                "name": owner["metadata"]["name"],
                "uid": owner["metadata"]["uid"],
                "controller": True,
            }
        ]
    return {"apiVersion": api, "kind": kind, "metadata": meta, **body}


def pod_template(labels, **spec):
    return {
        "metadata": {"labels": labels, "creationTimestamp": None},
        "spec": {"containers": [{"name": "main", "image": "postgres:16"}], **spec},
    }


def namespace_dump():
    sts = obj(
        "apps/v1",
        "StatefulSet",
        "db",
        labels={"app": "db"},
        spec={
            "serviceName": "db-hl",
            "replicas": 1,
            "selector": {"matchLabels": {"app": "db"}},
            "template": pod_template(
                {"app": "db"},
                serviceAccountName="db",
                volumes=[{"name": "cfg", "configMap": {"name": "db-config"}}],
                containers=[
                    {"name": "pg", "image": "postgres:16", "envFrom": [{"secretRef": {"name": "db-creds"}}]}
                ],
            ),
            "volumeClaimTemplates": [
                {
                    "metadata": {"name": "data"},
                    "spec": {"accessModes": ["ReadWriteOnce"]},
                    "status": {"phase": "Pending"},
                }
            ],
        },
        status={"readyReplicas": 1},
    )
    deploy = obj(
        "apps/v1",
        "Deployment",
        "web",
        labels={"app": "web"},
        spec={"selector": {"matchLabels": {"app": "web"}}, "template": pod_template({"app": "web"})},
    )
    deploy["metadata"]["annotations"] = {"deployment.kubernetes.io/revision": "4", "team": "shop"}
    rs = obj("apps/v1", "ReplicaSet", "web-5d9", owner=deploy, labels={"app": "web"})
    web_pod = obj("v1", "Pod", "web-5d9-abc", owner=rs, labels={"app": "web"})
    db_pod = obj("v1", "Pod", "db-0", owner=sts, labels={"app": "db"})
    cron = obj(
        "batch/v1",
        "CronJob",
        "vacuum",
        labels={"app": "db"},
        spec={
            "schedule": "0 3 * * *",
            "jobTemplate": {"spec": {"template": pod_template({"job": "vacuum"})}},
        },
    )
    job = obj("batch/v1", "Job", "vacuum-28000", owner=cron)
    return [
        obj(
            "v1",
            "Namespace",
            NS,
            ns=None,
            labels={"kubernetes.io/metadata.name": NS, "team": "shop"},
            spec={"finalizers": ["kubernetes"]},
            status={"phase": "Active"},
        ),
        sts,
        deploy,
        rs,
        web_pod,
        db_pod,
        cron,
        job,
        obj("v1", "Pod", "debug", labels={"app": "tools"}),
        obj("apps/v1", "ControllerRevision", "db-7f8", owner=sts),
        obj(
            "v1",
            "PersistentVolumeClaim",
            "data-db-0",
            labels={"app": "db"},
            owner=sts,
            spec={
                "volumeName": "pvc-123",
                "storageClassName": "fast",
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}},
                "dataSource": {"kind": "VolumeSnapshot", "name": "x", "apiGroup": "snapshot.storage.k8s.io"},
            },
            status={"phase": "Bound"},
        ),
        obj(
            "v1",
            "PersistentVolumeClaim",
            "scratch",
            labels={"app": "tools"},
            spec={"accessModes": ["ReadWriteOnce"]},
        ),
        obj(
            "v1",
            "Service",
            "db",
            labels={"app": "db"},
            spec={
                "selector": {"app": "db"},
                "clusterIP": "10.0.0.5",
                "clusterIPs": ["10.0.0.5"],
                "type": "NodePort",
                "ports": [{"port": 5432, "nodePort": 31234}],
                "healthCheckNodePort": 32000,
            },
        ),
        obj(
            "v1",
            "Service",
            "db-hl",
            spec={
                "selector": {"app": "db"},
                "clusterIP": "None",
                "clusterIPs": ["None"],
                "ports": [{"port": 5432}],
            },
        ),
        obj(
            "v1",
            "Service",
            "web",
            labels={"app": "web"},
            spec={"selector": {"app": "web"}, "ports": [{"port": 80}]},
        ),
        obj("v1", "Service", "external", spec={"ports": [{"port": 80}]}),
        obj("v1", "Endpoints", "db"),
        obj("v1", "Endpoints", "external", subsets=[{"addresses": [{"ip": "1.2.3.4"}]}]),
        obj("discovery.k8s.io/v1", "EndpointSlice", "db-xyz"),
        obj("v1", "Event", "db-0.17a"),
        obj("v1", "ConfigMap", "db-config", data={"a": "b"}),
        obj("v1", "ConfigMap", "unrelated", labels={"app": "other"}),
        obj("v1", "ConfigMap", "kube-root-ca.crt"),
        obj("v1", "Secret", "db-creds", type="Opaque", data={"password": "c2VjcmV0"}),
        obj("v1", "Secret", "db-token-abc", type="kubernetes.io/service-account-token"),
        obj("v1", "ServiceAccount", "default"),
        obj("v1", "ServiceAccount", "db", secrets=[{"name": "db-token-abc"}]),
        obj(
            "networking.k8s.io/v1",
            "Ingress",
            "web",
            labels={"app": "web"},
            spec={
                "tls": [{"secretName": "web-tls"}],
                "rules": [{"http": {"paths": [{"path": "/", "backend": {"service": {"name": "web"}}}]}}],
            },
        ),
        obj("v1", "Secret", "web-tls", type="kubernetes.io/tls"),
        obj("snapshot.storage.k8s.io/v1", "VolumeSnapshot", "snapflow-b1-data"),
    ]


def kept_and_dropped(objects, selector=""):
    sel = select_objects(objects, parse_selector(selector))
    kept = {f"{o['kind']}/{o['metadata']['name']}" for o in sel.objects}
    dropped = {f"{d.ref.kind}/{d.ref.name}": d.reason for d in sel.dropped}
    return kept, dropped, sel


def test_whole_namespace_keeps_what_a_restore_must_create():
    kept, _, _ = kept_and_dropped(namespace_dump())
    assert kept == {
        "Namespace/shop",
        "StatefulSet/db",
        "Deployment/web",
        "CronJob/vacuum",
        "Pod/debug",
        "PersistentVolumeClaim/data-db-0",
        "PersistentVolumeClaim/scratch",
        "Service/db",
        "Service/db-hl",
        "Service/web",
        "Service/external",
        "Endpoints/external",
        "ConfigMap/db-config",
        "ConfigMap/unrelated",
        "Secret/db-creds",
        "ServiceAccount/db",
        "Ingress/web",
        "Secret/web-tls",
    }


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("ReplicaSet/web-5d9", "made by Deployment/web"),
        ("Pod/web-5d9-abc", "made by ReplicaSet/web-5d9"),
        ("Pod/db-0", "made by StatefulSet/db"),
        ("Job/vacuum-28000", "made by CronJob/vacuum"),
        ("ControllerRevision/db-7f8", "runtime object"),
        ("EndpointSlice/db-xyz", "runtime object"),
        ("Event/db-0.17a", "runtime object"),
        ("Endpoints/db", "maintained for Service/db"),
        ("ConfigMap/kube-root-ca.crt", "created by Kubernetes in every namespace"),
        ("ServiceAccount/default", "created by Kubernetes in every namespace"),
        ("Secret/db-token-abc", "service-account token, generated by Kubernetes"),
        ("VolumeSnapshot/snapflow-b1-data", "runtime object"),
    ],
)
def test_dropped_objects_say_why(name, reason):
    _, dropped, _ = kept_and_dropped(namespace_dump())
    assert dropped[name] == reason


def test_an_object_owned_by_a_captured_custom_resource_is_left_to_its_owner():
    cluster = obj("example.com/v1", "PostgresCluster", "pg")
    sts = obj("apps/v1", "StatefulSet", "pg-1", owner=cluster)
    cm = obj("v1", "ConfigMap", "pg-config", owner=obj("example.com/v1", "Other", "not-captured"))
    kept, dropped, sel = kept_and_dropped([cluster, sts, cm])
    assert kept == {"PostgresCluster/pg", "ConfigMap/pg-config"}
    assert dropped["StatefulSet/pg-1"] == "owned by PostgresCluster.example.com/pg, which recreates it"
    # an owner that is not captured is not recreated: the reference (with its stale uid) is removed
    assert "ownerReferences" not in next(o for o in sel.objects if o["kind"] == "ConfigMap")["metadata"]


def test_selector_follows_references():
    kept, _, _ = kept_and_dropped(namespace_dump(), "app=db")
    assert kept == {
        "Namespace/shop",
        "StatefulSet/db",
        "CronJob/vacuum",
        "PersistentVolumeClaim/data-db-0",
        "Service/db",
        "Service/db-hl",
        "ConfigMap/db-config",
        "Secret/db-creds",
        "ServiceAccount/db",
    }


def test_selector_follows_ingress_to_its_service_and_tls_secret():
    kept, _, _ = kept_and_dropped(namespace_dump(), "app=web")
    assert {"Ingress/web", "Service/web", "Secret/web-tls", "Deployment/web"} <= kept
    assert "StatefulSet/db" not in kept


def test_statefulset_claim_template_pvcs_are_followed_without_labels():
    objects = namespace_dump()
    for o in objects:
        if o["kind"] == "PersistentVolumeClaim":
            o["metadata"].pop("labels", None)
    kept, _, _ = kept_and_dropped(objects, "app=db")
    assert "PersistentVolumeClaim/data-db-0" in kept
    assert "PersistentVolumeClaim/scratch" not in kept


def test_service_account_keeps_no_reference_to_generated_tokens():
    _, _, sel = kept_and_dropped(namespace_dump())
    sa = next(o for o in sel.objects if o["kind"] == "ServiceAccount")
    assert "secrets" not in sa


SERVER_FIELDS = (
    "uid",
    "resourceVersion",
    "managedFields",
    "creationTimestamp",
    "generation",
    "selfLink",
    "ownerReferences",
)


def test_every_kept_object_is_stripped_of_server_fields():
    _, _, sel = kept_and_dropped(namespace_dump())
    for o in sel.objects:
        assert "status" not in o, o["kind"]
        for field in SERVER_FIELDS:
            assert field not in o["metadata"], (o["kind"], field)


def by_name(objects, kind, name):
    return next(o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name)


def test_pvc_loses_binding_and_data_source():
    _, _, sel = kept_and_dropped(namespace_dump())
    pvc = by_name(sel.objects, "PersistentVolumeClaim", "data-db-0")
    assert pvc["spec"] == {
        "storageClassName": "fast",
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": "1Gi"}},
    }


def test_pvc_bind_annotations_are_stripped_and_others_kept():
    raw = obj("v1", "PersistentVolumeClaim", "p", spec={})
    raw["metadata"]["annotations"] = {
        "pv.kubernetes.io/bind-completed": "yes",
        "pv.kubernetes.io/bound-by-controller": "yes",
        "volume.kubernetes.io/selected-node": "node-3",
        "volume.beta.kubernetes.io/storage-provisioner": "x",
        "volume.kubernetes.io/storage-provisioner": "x",
        "backup.example.com/keep": "true",
    }
    raw["metadata"]["finalizers"] = ["kubernetes.io/pvc-protection", "example.com/guard"]
    clean = clean_object(raw)
    assert clean["metadata"]["annotations"] == {"backup.example.com/keep": "true"}
    assert clean["metadata"]["finalizers"] == ["example.com/guard"]


def test_service_loses_cluster_ips_and_node_ports_but_headless_stays_headless():
    _, _, sel = kept_and_dropped(namespace_dump())
    svc = by_name(sel.objects, "Service", "db")
    assert svc["spec"] == {"selector": {"app": "db"}, "type": "NodePort", "ports": [{"port": 5432}]}
    hl = by_name(sel.objects, "Service", "db-hl")
    assert hl["spec"]["clusterIP"] == "None"
    assert "clusterIPs" not in hl["spec"]


def test_namespace_loses_generated_label_and_finalizers():
    _, _, sel = kept_and_dropped(namespace_dump())
    ns = by_name(sel.objects, "Namespace", NS)
    assert ns["metadata"]["labels"] == {"team": "shop"}
    assert "spec" not in ns


def test_deployment_revision_annotation_is_stripped():
    _, _, sel = kept_and_dropped(namespace_dump())
    assert by_name(sel.objects, "Deployment", "web")["metadata"]["annotations"] == {"team": "shop"}


def test_statefulset_claim_templates_and_pod_template_are_cleaned():
    _, _, sel = kept_and_dropped(namespace_dump())
    sts = by_name(sel.objects, "StatefulSet", "db")
    assert sts["spec"]["volumeClaimTemplates"] == [
        {"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"]}}
    ]
    assert sts["spec"]["template"]["metadata"] == {"labels": {"app": "db"}}


def test_job_loses_generated_selector_and_labels():
    job = obj(
        "batch/v1",
        "Job",
        "once",
        spec={
            "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "u"}},
            "template": {
                "metadata": {
                    "labels": {
                        "batch.kubernetes.io/controller-uid": "u",
                        "controller-uid": "u",
                        "job-name": "once",
                        "batch.kubernetes.io/job-name": "once",
                        "app": "x",
                    }
                },
                "spec": {"containers": [{"name": "c", "image": "busybox"}]},
            },
        },
    )
    clean = clean_object(job)
    assert "selector" not in clean["spec"]
    assert clean["spec"]["template"]["metadata"]["labels"] == {"app": "x"}


def test_bare_pod_loses_node_and_injected_token_volume():
    pod = obj(
        "v1",
        "Pod",
        "debug",
        spec={
            "nodeName": "node-1",
            "volumes": [{"name": "kube-api-access-x1", "projected": {}}, {"name": "data", "emptyDir": {}}],
            "containers": [
                {
                    "name": "c",
                    "image": "busybox",
                    "volumeMounts": [
                        {
                            "name": "kube-api-access-x1",
                            "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
                        },
                        {"name": "data", "mountPath": "/data"},
                    ],
                }
            ],
        },
    )
    clean = clean_object(pod)
    assert "nodeName" not in clean["spec"]
    assert clean["spec"]["volumes"] == [{"name": "data", "emptyDir": {}}]
    assert clean["spec"]["containers"][0]["volumeMounts"] == [{"name": "data", "mountPath": "/data"}]


def test_clean_never_changes_its_input():
    dump = namespace_dump()
    snapshot = repr(dump)
    select_objects(dump)
    assert repr(dump) == snapshot


def test_references_of_a_pod_template():
    dep = obj(
        "apps/v1",
        "Deployment",
        "d",
        spec={
            "template": {
                "spec": {
                    "serviceAccountName": "sa",
                    "imagePullSecrets": [{"name": "pull"}],
                    "volumes": [
                        {"name": "a", "secret": {"secretName": "s1"}},
                        {"name": "b", "persistentVolumeClaim": {"claimName": "claim"}},
                        {"name": "c", "projected": {"sources": [{"configMap": {"name": "cm2"}}]}},
                    ],
                    "initContainers": [
                        {
                            "name": "i",
                            "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cm1"}}}],
                        }
                    ],
                    "containers": [
                        {"name": "c", "env": [{"name": "Y", "valueFrom": {"secretKeyRef": {"name": "s2"}}}]}
                    ],
                }
            }
        },
    )
    assert references(dep) == {
        Ref("", "ServiceAccount", NS, "sa"),
        Ref("", "Secret", NS, "pull"),
        Ref("", "Secret", NS, "s1"),
        Ref("", "PersistentVolumeClaim", NS, "claim"),
        Ref("", "ConfigMap", NS, "cm2"),
        Ref("", "ConfigMap", NS, "cm1"),
        Ref("", "Secret", NS, "s2"),
    }
