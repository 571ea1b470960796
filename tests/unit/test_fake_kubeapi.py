"""The fake Kubernetes API server speaks the API the way the real `kubernetes` client expects:
CRUD, conflicts, selectors, patches, subresources, deletion semantics, watch streams, discovery."""

from __future__ import annotations

import json
import threading

import pytest
from kubernetes import client, config, dynamic, watch

from tests.fakes.kubeapi import FakeKubeAPI


def _cm(name: str, labels: dict | None = None, data: dict | None = None) -> dict:
    return {"metadata": {"name": name, "labels": labels or {}}, "data": data or {"k": "v"}}


def _deployment(name: str, replicas: int = 2) -> dict:
    labels = {"app": name}
    return {
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "c", "image": "nginx"}]},
            },
        },
    }


def _body(error: client.ApiException) -> dict:
    return json.loads(error.body)


def test_create_get_and_duplicate_create_is_409_already_exists(kube_server: FakeKubeAPI, kube_client):
    # GIVEN a namespace
    core = client.CoreV1Api(kube_client)
    core.create_namespace({"metadata": {"name": "app"}})
    # WHEN a ConfigMap is created twice
    created = core.create_namespaced_config_map("app", _cm("settings"))
    with pytest.raises(client.ApiException) as duplicate:
        core.create_namespaced_config_map("app", _cm("settings"))
    # THEN the server filled identity fields and refused the duplicate with a Status object
    assert created.metadata.uid and created.metadata.creation_timestamp is not None
    assert int(created.metadata.resource_version) > 0 and created.metadata.generation == 1
    assert duplicate.value.status == 409
    status = _body(duplicate.value)
    assert status["kind"] == "Status" and status["reason"] == "AlreadyExists"
    assert status["message"] == 'configmaps "settings" already exists'
    assert core.read_namespaced_config_map("settings", "app").data == {"k": "v"}


def test_get_of_missing_object_is_404_with_status(kube_client):
    apps = client.AppsV1Api(kube_client)
    with pytest.raises(client.ApiException) as missing:
        apps.read_namespaced_deployment("nope", "default")
    status = _body(missing.value)
    assert missing.value.status == 404
    assert status["reason"] == "NotFound" and status["message"] == 'deployments.apps "nope" not found'
    assert status["details"] == {"kind": "deployments", "name": "nope", "group": "apps"}


def test_create_in_missing_namespace_is_404_and_bad_name_is_422(kube_client):
    core = client.CoreV1Api(kube_client)
    with pytest.raises(client.ApiException) as no_ns:
        core.create_namespaced_config_map("ghost", _cm("x"))
    assert no_ns.value.status == 404 and 'namespaces "ghost" not found' in _body(no_ns.value)["message"]
    with pytest.raises(client.ApiException) as bad:
        core.create_namespaced_config_map("default", _cm("Bad_Name"))
    assert bad.value.status == 422 and _body(bad.value)["reason"] == "Invalid"
    assert _body(bad.value)["details"]["causes"][0]["field"] == "metadata.name"


def test_replace_with_stale_resource_version_is_409_conflict(kube_client):
    core = client.CoreV1Api(kube_client)
    first = core.create_namespaced_config_map("default", _cm("c"))
    # one writer updates with the current version
    first.data = {"k": "one"}
    second = core.replace_namespaced_config_map("c", "default", first)
    assert int(second.metadata.resource_version) > int(first.metadata.resource_version)
    # another writer still holds the old version
    first.data = {"k": "two"}
    with pytest.raises(client.ApiException) as stale:
        core.replace_namespaced_config_map("c", "default", first)
    assert stale.value.status == 409 and _body(stale.value)["reason"] == "Conflict"
    assert core.read_namespaced_config_map("c", "default").data == {"k": "one"}


def test_custom_resource_update_requires_resource_version(kube_server: FakeKubeAPI, kube_client):
    custom = client.CustomObjectsApi(kube_client)
    body = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": "wf"},
        "spec": {"entrypoint": "a"},
    }
    created = custom.create_namespaced_custom_object("argoproj.io", "v1alpha1", "default", "workflows", body)
    del created["metadata"]["resourceVersion"]
    with pytest.raises(client.ApiException) as unconditional:
        custom.replace_namespaced_custom_object(
            "argoproj.io", "v1alpha1", "default", "workflows", "wf", created
        )
    assert unconditional.value.status == 422


def test_label_selectors_equality_set_and_existence(kube_client):
    core = client.CoreV1Api(kube_client)
    core.create_namespaced_config_map("default", _cm("a", {"tier": "db", "env": "prod"}))
    core.create_namespaced_config_map("default", _cm("b", {"tier": "web", "env": "prod"}))
    core.create_namespaced_config_map("default", _cm("c", {"tier": "cache"}))

    def names(selector: str) -> list[str]:
        items = core.list_namespaced_config_map("default", label_selector=selector).items
        return sorted(i.metadata.name for i in items if i.metadata.name != "kube-root-ca.crt")

    assert names("tier=db") == ["a"]
    assert names("tier==web") == ["b"]
    assert names("tier!=db,tier") == ["b", "c"]
    assert names("tier in (db, cache)") == ["a", "c"]
    assert names("tier notin (db),env") == ["b"]
    assert names("env") == ["a", "b"]
    assert names("!env,tier") == ["c"]
    with pytest.raises(client.ApiException) as bad:
        core.list_namespaced_config_map("default", label_selector="tier in db")
    assert bad.value.status == 400


def test_field_selectors_by_name_and_namespace(kube_client):
    core = client.CoreV1Api(kube_client)
    core.create_namespace({"metadata": {"name": "other"}})
    core.create_namespaced_config_map("default", _cm("x"))
    core.create_namespaced_config_map("other", _cm("x"))
    by_name = core.list_config_map_for_all_namespaces(field_selector="metadata.name=x").items
    assert sorted(i.metadata.namespace for i in by_name) == ["default", "other"]
    by_ns = core.list_config_map_for_all_namespaces(
        field_selector="metadata.name=x,metadata.namespace!=default"
    ).items
    assert [i.metadata.namespace for i in by_ns] == ["other"]


def test_list_pages_with_limit_and_continue(kube_client):
    core = client.CoreV1Api(kube_client)
    for n in range(5):
        core.create_namespaced_config_map("default", _cm(f"page-{n}", {"paged": "yes"}))
    first = core.list_namespaced_config_map("default", label_selector="paged", limit=2)
    second = core.list_namespaced_config_map(
        "default", label_selector="paged", limit=2, _continue=first.metadata._continue
    )
    third = core.list_namespaced_config_map(
        "default", label_selector="paged", limit=2, _continue=second.metadata._continue
    )
    seen = [i.metadata.name for page in (first, second, third) for i in page.items]
    assert seen == [f"page-{n}" for n in range(5)]
    assert first.metadata.remaining_item_count == 3 and third.metadata._continue is None


def test_merge_strategic_and_json_patches(kube_client):
    core, apps = client.CoreV1Api(kube_client), client.AppsV1Api(kube_client)
    core.create_namespaced_config_map("default", _cm("p", data={"a": "1", "b": "2"}))
    # merge patch: null removes a key
    merged = core.patch_namespaced_config_map(
        "p", "default", {"data": {"a": None, "c": "3"}}, _content_type="application/merge-patch+json"
    )
    assert merged.data == {"b": "2", "c": "3"}
    # JSON patch: ops in order, a failing test op is 422 and changes nothing
    patched = core.patch_namespaced_config_map(
        "p",
        "default",
        [
            {"op": "replace", "path": "/data/b", "value": "20"},
            {"op": "add", "path": "/metadata/labels", "value": {"x": "y"}},
        ],
    )
    assert patched.data["b"] == "20" and patched.metadata.labels == {"x": "y"}
    with pytest.raises(client.ApiException) as failed:
        core.patch_namespaced_config_map("p", "default", [{"op": "test", "path": "/data/b", "value": "nope"}])
    assert failed.value.status == 422
    # strategic merge (the client's default for a dict body): containers merge by name
    deploy = _deployment("web")
    deploy["spec"]["template"]["spec"]["containers"].append({"name": "sidecar", "image": "envoy"})
    apps.create_namespaced_deployment("default", deploy)
    result = apps.patch_namespaced_deployment(
        "web",
        "default",
        {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "nginx:2"}]}}}},
    )
    images = {c.name: c.image for c in result.spec.template.spec.containers}
    assert images == {"c": "nginx:2", "sidecar": "envoy"}
    assert result.metadata.generation == 2


def test_patch_with_stale_resource_version_conflicts(kube_client):
    core = client.CoreV1Api(kube_client)
    created = core.create_namespaced_config_map("default", _cm("rv"))
    core.patch_namespaced_config_map("rv", "default", {"data": {"k": "new"}})
    with pytest.raises(client.ApiException) as stale:
        core.patch_namespaced_config_map(
            "rv",
            "default",
            {"metadata": {"resourceVersion": created.metadata.resource_version}, "data": {"k": "x"}},
        )
    assert stale.value.status == 409


def test_status_subresource_is_separate_from_spec(kube_server: FakeKubeAPI, kube_client):
    custom = client.CustomObjectsApi(kube_client)
    group, version, plural = "snapshot.storage.k8s.io", "v1", "volumesnapshots"
    vs = {
        "apiVersion": f"{group}/{version}",
        "kind": "VolumeSnapshot",
        "metadata": {"name": "manual"},
        "spec": {"source": {"volumeSnapshotContentName": "somewhere"}},
    }
    custom.create_namespaced_custom_object(group, version, "default", plural, vs)
    # a main-resource patch cannot set status
    custom.patch_namespaced_custom_object(
        group, version, "default", plural, "manual", {"status": {"readyToUse": True}}
    )
    assert "readyToUse" not in (kube_server.get("vs", "manual", "default").get("status") or {})
    # the status subresource can, and does not bump the generation
    updated = custom.patch_namespaced_custom_object_status(
        group, version, "default", plural, "manual", {"status": {"readyToUse": True}}
    )
    assert updated["status"]["readyToUse"] is True and updated["metadata"]["generation"] == 1


def test_scale_subresource_reads_and_sets_replicas(kube_server: FakeKubeAPI, kube_client):
    apps = client.AppsV1Api(kube_client)
    apps.create_namespaced_deployment("default", _deployment("api", replicas=2))
    kube_server.wait_for("deployments", "api", "default", lambda d: d["status"]["readyReplicas"] == 2)
    scale = apps.read_namespaced_deployment_scale("api", "default")
    assert scale.spec.replicas == 2 and scale.status.selector == "app=api"
    apps.patch_namespaced_deployment_scale("api", "default", {"spec": {"replicas": 0}})
    done = kube_server.wait_for("deployments", "api", "default", lambda d: d["status"]["replicas"] == 0)
    assert done["spec"]["replicas"] == 0
    assert not [p for p in kube_server.list("pods", "default") if p["metadata"]["name"].startswith("api-")]


def test_deployment_creates_replicaset_and_pods_owned_by_it(kube_server: FakeKubeAPI, kube_client):
    apps = client.AppsV1Api(kube_client)
    apps.create_namespaced_deployment("default", _deployment("owner", replicas=2))
    kube_server.wait_for("deployments", "owner", "default", lambda d: d["status"]["availableReplicas"] == 2)
    (rs,) = kube_server.list("replicasets", "default", "app=owner")
    pods = kube_server.list("pods", "default", "app=owner")
    assert rs["metadata"]["ownerReferences"][0]["kind"] == "Deployment"
    assert len(pods) == 2 and all(
        p["metadata"]["ownerReferences"][0]["uid"] == rs["metadata"]["uid"] for p in pods
    )
    # WHEN the deployment is deleted (background propagation) THEN its replica set and pods go too
    apps.delete_namespaced_deployment("owner", "default")
    assert kube_server.list("replicasets", "default", "app=owner") == []
    assert kube_server.list("pods", "default", "app=owner") == []


def test_orphan_propagation_keeps_dependents(kube_server: FakeKubeAPI, kube_client):
    apps = client.AppsV1Api(kube_client)
    apps.create_namespaced_deployment("default", _deployment("orphan", replicas=1))
    kube_server.wait_for("deployments", "orphan", "default", lambda d: d["status"]["readyReplicas"] == 1)
    apps.delete_namespaced_deployment("orphan", "default", propagation_policy="Orphan")
    (rs,) = kube_server.list("replicasets", "default", "app=orphan")
    assert "ownerReferences" not in rs["metadata"]


def test_finalizers_hold_deletion_until_removed(kube_server: FakeKubeAPI, kube_client):
    core = client.CoreV1Api(kube_client)
    body = _cm("held")
    body["metadata"]["finalizers"] = ["example.com/hold"]
    core.create_namespaced_config_map("default", body)
    core.delete_namespaced_config_map("held", "default")
    held = kube_server.get("configmaps", "held", "default")
    assert held["metadata"]["deletionTimestamp"]
    core.patch_namespaced_config_map(
        "held", "default", {"metadata": {"finalizers": None}}, _content_type="application/merge-patch+json"
    )
    assert kube_server.get("configmaps", "held", "default") is None


def test_namespace_delete_removes_everything_in_it(kube_server: FakeKubeAPI, kube_client):
    core, apps = client.CoreV1Api(kube_client), client.AppsV1Api(kube_client)
    core.create_namespace({"metadata": {"name": "doomed"}})
    core.create_namespaced_secret("doomed", {"metadata": {"name": "s"}, "stringData": {"p": "x"}})
    apps.create_namespaced_deployment("doomed", _deployment("d", replicas=1))
    kube_server.pvc("doomed", "data")
    volume = kube_server.volume_path("doomed", "data")
    assert volume.is_dir()
    # WHEN the namespace is deleted THEN it is Terminating, new content is refused, and all of it goes
    answer = core.delete_namespace("doomed")
    assert answer["status"]["phase"] == "Terminating"
    kube_server.wait_for("namespaces", "doomed", gone=True)
    for kind in (
        "secrets",
        "deployments",
        "replicasets",
        "pods",
        "persistentvolumeclaims",
        "configmaps",
        "serviceaccounts",
    ):
        assert kube_server.list(kind, "doomed") == [], kind
    assert not [
        pv for pv in kube_server.list("persistentvolumes") if pv["spec"]["claimRef"]["namespace"] == "doomed"
    ]
    with pytest.raises(client.ApiException) as gone:
        core.create_namespaced_config_map("doomed", _cm("late"))
    assert gone.value.status == 404


def test_terminating_namespace_refuses_new_content(kube_server: FakeKubeAPI, kube_client):
    core = client.CoreV1Api(kube_client)
    kube_server.cluster.namespace_deletion_delay = 0.5
    core.create_namespace({"metadata": {"name": "closing"}})
    core.delete_namespace("closing")
    with pytest.raises(client.ApiException) as refused:
        core.create_namespaced_config_map("closing", _cm("late"))
    assert refused.value.status == 403 and "being terminated" in _body(refused.value)["message"]


def test_new_namespace_gets_default_service_account_and_root_ca(kube_client):
    core = client.CoreV1Api(kube_client)
    core.create_namespace({"metadata": {"name": "fresh"}})
    ns = core.read_namespace("fresh")
    assert ns.status.phase == "Active" and ns.metadata.labels["kubernetes.io/metadata.name"] == "fresh"
    assert [s.metadata.name for s in core.list_namespaced_service_account("fresh").items] == ["default"]
    assert core.read_namespaced_config_map("kube-root-ca.crt", "fresh").data["ca.crt"]


def test_builtin_list_items_omit_kind_but_custom_ones_keep_it(kube_client):
    core = client.CoreV1Api(kube_client)
    core.create_namespaced_config_map("default", _cm("kindless"))
    raw = json.loads(core.list_namespaced_config_map("default", _preload_content=False).data)
    assert raw["kind"] == "ConfigMapList" and all("kind" not in item for item in raw["items"])
    custom = client.CustomObjectsApi(kube_client)
    custom.create_namespaced_custom_object(
        "argoproj.io",
        "v1alpha1",
        "default",
        "workflowtemplates",
        {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "WorkflowTemplate",
            "metadata": {"name": "t"},
            "spec": {},
        },
    )
    items = custom.list_namespaced_custom_object("argoproj.io", "v1alpha1", "default", "workflowtemplates")[
        "items"
    ]
    assert items[0]["kind"] == "WorkflowTemplate"


def test_delete_returns_status_for_configmaps_and_object_for_pods(kube_server: FakeKubeAPI, kube_client):
    core = client.CoreV1Api(kube_client)
    created = core.create_namespaced_config_map("default", _cm("gone"))
    answer = core.delete_namespaced_config_map("gone", "default")
    assert answer["kind"] == "Status" and answer["status"] == "Success"
    assert answer["details"]["uid"] == created.metadata.uid
    kube_server.pod("default", "p")
    deleted = core.delete_namespaced_pod("p", "default")
    assert deleted.metadata.name == "p"


def test_dry_run_creates_nothing(kube_server: FakeKubeAPI, kube_client):
    core = client.CoreV1Api(kube_client)
    answer = core.create_namespaced_config_map("default", _cm("dry"), dry_run="All")
    assert answer.metadata.name == "dry"
    assert kube_server.get("configmaps", "dry", "default") is None


def test_watch_streams_added_modified_deleted_with_selector(kube_server: FakeKubeAPI, kube_client):
    core = client.CoreV1Api(kube_client)
    start = core.list_namespaced_config_map("default").metadata.resource_version
    core.create_namespaced_config_map("default", _cm("w", {"watched": "yes"}))
    core.create_namespaced_config_map("default", _cm("ignored", {"watched": "no"}))
    core.patch_namespaced_config_map("w", "default", {"data": {"k": "2"}})
    core.patch_namespaced_config_map("w", "default", {"metadata": {"labels": {"watched": "no"}}})
    events = []
    w = watch.Watch()
    for event in w.stream(
        core.list_namespaced_config_map,
        "default",
        label_selector="watched=yes",
        resource_version=start,
        timeout_seconds=1,
    ):
        events.append((event["type"], event["object"].metadata.name, (event["object"].data or {}).get("k")))
    # leaving the selection is seen as DELETED, as from the real server
    assert events == [("ADDED", "w", "v"), ("MODIFIED", "w", "2"), ("DELETED", "w", "2")]


def test_watch_delivers_live_events_and_stops(kube_server: FakeKubeAPI, kube_client):
    core = client.CoreV1Api(kube_client)
    start = core.list_namespaced_config_map("default").metadata.resource_version
    received: list[tuple[str, str]] = []
    w = watch.Watch()

    def consume() -> None:
        for event in w.stream(
            core.list_namespaced_config_map, "default", resource_version=start, timeout_seconds=10
        ):
            received.append((event["type"], event["object"].metadata.name))
            if event["type"] == "DELETED":
                w.stop()

    reader = threading.Thread(target=consume)
    reader.start()
    core.create_namespaced_config_map("default", _cm("live"))
    core.delete_namespaced_config_map("live", "default")
    reader.join(timeout=10)
    assert not reader.is_alive()
    assert received == [("ADDED", "live"), ("DELETED", "live")]


def test_watch_without_resource_version_starts_with_current_objects(kube_client):
    core = client.CoreV1Api(kube_client)
    core.create_namespaced_config_map("default", _cm("existing", {"initial": "1"}))
    w = watch.Watch()
    events = []
    for event in w.stream(
        core.list_namespaced_config_map, "default", label_selector="initial", timeout_seconds=5
    ):
        events.append((event["type"], event["object"].metadata.name))
        w.stop()
    assert events == [("ADDED", "existing")]


def test_watch_from_compacted_resource_version_is_410(kube_server: FakeKubeAPI, kube_client):
    core = client.CoreV1Api(kube_client)
    old = core.list_namespaced_config_map("default").metadata.resource_version
    core.create_namespaced_config_map("default", _cm("after"))
    kube_server.compact_history()
    with pytest.raises(client.ApiException) as expired:
        list(
            watch.Watch().stream(
                core.list_namespaced_config_map, "default", resource_version=old, timeout_seconds=1
            )
        )
    assert expired.value.status == 410


def test_discovery_serves_groups_and_resources(kube_client):
    discovery = client.ApisApi(kube_client).get_api_versions()
    groups = {g.name: g for g in discovery.groups}
    assert {"apps", "batch", "snapshot.storage.k8s.io", "groupsnapshot.storage.k8s.io", "argoproj.io"} <= set(
        groups
    )
    assert groups["groupsnapshot.storage.k8s.io"].preferred_version.version == "v1"
    resources = client.CoreV1Api(kube_client).get_api_resources().resources
    pods = next(r for r in resources if r.name == "pods")
    assert pods.namespaced and pods.kind == "Pod" and "watch" in pods.verbs
    assert {"pods/exec", "pods/status", "pods/log"} <= {r.name for r in resources}
    assert client.VersionApi(kube_client).get_code().git_version.startswith("v1.")


def test_dynamic_client_and_kubeconfig_reach_the_server(kube_server: FakeKubeAPI, kubeconfig):
    # GIVEN only $KUBECONFIG, as product code sees it
    api_client = config.new_client_from_config()
    dyn = dynamic.DynamicClient(api_client)
    snapshots = dyn.resources.get(api_version="snapshot.storage.k8s.io/v1", kind="VolumeSnapshotClass")
    names = [item.metadata.name for item in snapshots.get().items]
    assert names == ["csi-hostpath-snapclass"]
    api_client.close()


def test_requests_without_the_token_are_401(kube_server: FakeKubeAPI):
    anonymous = client.Configuration()
    anonymous.host = kube_server.url
    with client.ApiClient(anonymous) as api_client, pytest.raises(client.ApiException) as denied:
        client.CoreV1Api(api_client).list_namespace()
    assert denied.value.status == 401


def test_a_crd_registers_its_kind(kube_server: FakeKubeAPI, kube_client):
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "backups.example.com"},
        "spec": {
            "group": "example.com",
            "names": {"kind": "Backup", "plural": "backups", "singular": "backup"},
            "scope": "Namespaced",
            "versions": [{"name": "v1", "served": True, "storage": True, "subresources": {"status": {}}}],
        },
    }
    client.ApiextensionsV1Api(kube_client).create_custom_resource_definition(crd)
    custom = client.CustomObjectsApi(kube_client)
    custom.create_namespaced_custom_object(
        "example.com",
        "v1",
        "default",
        "backups",
        {"apiVersion": "example.com/v1", "kind": "Backup", "metadata": {"name": "b"}},
    )
    assert (
        custom.get_namespaced_custom_object("example.com", "v1", "default", "backups", "b")["kind"]
        == "Backup"
    )
    kube_server.register_kind("example.org", "v1", "Widget")
    custom.create_namespaced_custom_object(
        "example.org",
        "v1",
        "default",
        "widgets",
        {"apiVersion": "example.org/v1", "kind": "Widget", "metadata": {"name": "w"}},
    )
    assert kube_server.get("widgets.example.org", "w", "default")["kind"] == "Widget"


def test_injected_faults_fail_the_next_matching_requests(kube_server: FakeKubeAPI, kube_client):
    core = client.CoreV1Api(kube_client)
    kube_server.fail_next("POST", "configmaps", 503, count=1, message="etcd is sad")
    with pytest.raises(client.ApiException) as failed:
        core.create_namespaced_config_map("default", _cm("retry-me"))
    assert failed.value.status == 503 and _body(failed.value)["message"] == "etcd is sad"
    assert core.create_namespaced_config_map("default", _cm("retry-me")).metadata.name == "retry-me"


def test_rbac_enforcement_and_access_reviews(kube_server: FakeKubeAPI, kube_client):
    # GIVEN a service account allowed to read configmaps in "default" only
    kube_server.create(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "reader", "namespace": "default"},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}],
        }
    )
    kube_server.create(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "reader", "namespace": "default"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"},
            "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": "default"}],
        }
    )
    kube_server.enforce_rbac = True
    token = kube_server.service_account_token("default", "default")
    with kube_server.api_client(token) as sa_client:
        core = client.CoreV1Api(sa_client)
        assert core.list_namespaced_config_map("default").items
        with pytest.raises(client.ApiException) as denied:
            core.create_namespaced_config_map("default", _cm("nope"))
        assert denied.value.status == 403 and "cannot create resource" in _body(denied.value)["message"]
        review = client.AuthorizationV1Api(sa_client).create_self_subject_access_review(
            {
                "spec": {
                    "resourceAttributes": {"namespace": "default", "verb": "list", "resource": "configmaps"}
                }
            }
        )
        assert review.status.allowed is True
    answer = client.AuthorizationV1Api(kube_client).create_subject_access_review(
        {
            "spec": {
                "user": "system:serviceaccount:default:default",
                "resourceAttributes": {"namespace": "default", "verb": "delete", "resource": "configmaps"},
            }
        }
    )
    assert answer.status.allowed is False


def test_secret_string_data_is_stored_base64_in_data_and_empty_maps_are_omitted(kube_server, kube_client):
    from kubernetes import client as k8s

    core = k8s.CoreV1Api(kube_client)
    # GIVEN a Secret written with stringData and an annotation
    core.create_namespaced_secret(
        "default",
        {"metadata": {"name": "creds", "annotations": {"a": "1"}}, "stringData": {"password": "s3cr3t"}},
    )
    # WHEN its only annotation is removed by a merge patch
    core.patch_namespaced_secret("creds", "default", {"metadata": {"annotations": {"a": None}}})
    # THEN it reads back as a real API server returns it
    secret = core.read_namespaced_secret("creds", "default")
    assert secret.data == {"password": "czNjcjN0"}
    assert secret.string_data is None
    assert secret.metadata.annotations is None
