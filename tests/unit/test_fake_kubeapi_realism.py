"""The fake Kubernetes API server behaves like a real one where a backup tool can be fooled by a kinder
server: cluster IP allocation, a 1.20 server's multi-version serving (CronJobs only at batch/v1beta1,
one Ingress visible in two groups), list items without kind/apiVersion, watch resume and 410 Gone, and
garbage collection resolving owners in the dependent's namespace."""

from __future__ import annotations

import json
import urllib.request

import pytest
from kubernetes import client, watch

from tests.fakes.kubeapi import FakeKubeAPI


def _raw(server: FakeKubeAPI, path: str) -> tuple[int, bytes]:
    request = urllib.request.Request(server.url + path, headers={"Authorization": f"Bearer {server.token}"})
    with urllib.request.urlopen(request, timeout=10) as resp:
        return resp.status, resp.read()


def _get(server: FakeKubeAPI, path: str) -> dict:
    status, body = _raw(server, path)
    assert status == 200
    return json.loads(body)


def _service(name: str, cluster_ip: str | None = None) -> dict:
    spec: dict = {"ports": [{"port": 80}], "selector": {"app": name}}
    if cluster_ip:
        spec["clusterIP"] = cluster_ip
    return {"metadata": {"name": name}, "spec": spec}


def _ingress_v1(name: str, service: str = "web", port: int = 80) -> dict:
    return {
        "metadata": {"name": name},
        "spec": {
            "rules": [
                {
                    "host": "shop.example.com",
                    "http": {
                        "paths": [
                            {
                                "path": "/",
                                "pathType": "Prefix",
                                "backend": {"service": {"name": service, "port": {"number": port}}},
                            }
                        ]
                    },
                }
            ]
        },
    }


# -- (a) cluster IPs ---------------------------------------------------------------------------------


def test_a_requested_cluster_ip_already_allocated_is_422_invalid_as_from_the_allocator(kube_client):
    core = client.CoreV1Api(kube_client)
    taken = core.create_namespaced_service("default", _service("first")).spec.cluster_ip

    with pytest.raises(client.ApiException) as refused:
        core.create_namespaced_service("default", _service("second", taken))

    assert refused.value.status == 422
    cause = f'Invalid value: []string{{"{taken}"}}: failed to allocate IP {taken}: provided IP is already allocated'
    assert json.loads(refused.value.body) == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": f'Service "second" is invalid: spec.clusterIPs: {cause}',
        "reason": "Invalid",
        "details": {
            "name": "second",
            "kind": "Service",
            "causes": [{"reason": "FieldValueInvalid", "message": cause, "field": "spec.clusterIPs"}],
        },
        "code": 422,
    }
    # the address is freed with its Service
    core.delete_namespaced_service("first", "default")
    assert core.create_namespaced_service("default", _service("second", taken)).spec.cluster_ip == taken


def test_the_allocator_never_hands_out_a_requested_ip_and_refuses_one_outside_the_range(kube_client):
    core = client.CoreV1Api(kube_client)
    auto = core.create_namespaced_service("default", _service("auto")).spec.cluster_ip
    a, b, c, d = (int(x) for x in auto.split("."))
    following = f"{a}.{b}.{c}.{d + 1}"  # what the allocator would hand out next
    core.create_namespaced_service("default", _service("pinned", following))
    later = core.create_namespaced_service("default", _service("later")).spec.cluster_ip
    assert later not in (auto, following)

    with pytest.raises(client.ApiException) as outside:
        core.create_namespaced_service("default", _service("outside", "192.168.7.7"))
    assert outside.value.status == 422
    assert (
        "the provided IP (192.168.7.7) is not in the valid range" in json.loads(outside.value.body)["message"]
    )
    # a headless Service asks for no address and gets none
    headless = core.create_namespaced_service("default", _service("headless", "None"))
    assert headless.spec.cluster_ip == "None"


# -- (b) a 1.20 server: several versions, one object in two groups ---------------------------------------


def test_1_20_discovery_lists_the_versions_and_preferred_versions_a_1_20_server_did(kube_server_1_20):
    groups = {g["name"]: g for g in _get(kube_server_1_20, "/apis")["groups"]}

    def versions(group: str) -> tuple[str, list[str]]:
        g = groups[group]
        return g["preferredVersion"]["version"], [v["version"] for v in g["versions"]]

    assert versions("batch") == ("v1", ["v1", "v1beta1"])
    assert versions("extensions") == ("v1beta1", ["v1beta1"])
    assert versions("networking.k8s.io") == ("v1", ["v1", "v1beta1"])
    assert versions("policy") == ("v1beta1", ["v1beta1"])
    assert versions("autoscaling") == ("v1", ["v1", "v2beta2", "v2beta1"])
    assert _get(kube_server_1_20, "/apis/batch")["preferredVersion"] == {
        "groupVersion": "batch/v1",
        "version": "v1",
    }

    def plurals(group_version: str) -> set[str]:
        doc = _get(kube_server_1_20, f"/apis/{group_version}")
        assert doc["groupVersion"] == group_version
        return {r["name"] for r in doc["resources"] if "/" not in r["name"]}

    assert plurals("batch/v1") == {"jobs"}  # no cronjobs at the preferred version
    assert plurals("batch/v1beta1") == {"cronjobs"}
    assert plurals("extensions/v1beta1") == {"ingresses"}
    assert "ingresses" in plurals("networking.k8s.io/v1beta1")
    assert _get(kube_server_1_20, "/version")["gitVersion"] == "v1.20.15"


def test_the_current_profile_serves_cronjobs_at_batch_v1_and_no_extensions_group(kube_server):
    groups = {g["name"]: g for g in _get(kube_server, "/apis")["groups"]}
    assert "extensions" not in groups
    assert [v["version"] for v in groups["batch"]["versions"]] == ["v1"]
    assert {"jobs", "cronjobs"} <= {r["name"] for r in _get(kube_server, "/apis/batch/v1")["resources"]}


def test_1_20_serves_cronjobs_only_at_batch_v1beta1(kube_server_1_20):
    api = kube_server_1_20.api_client()
    cronjob = {
        "apiVersion": "batch/v1beta1",
        "kind": "CronJob",
        "metadata": {"name": "nightly"},
        "spec": {
            "schedule": "0 3 * * *",
            "jobTemplate": {
                "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "busybox"}]}}}
            },
        },
    }
    with pytest.raises(client.ApiException) as missing:
        client.BatchV1Api(api).list_namespaced_cron_job("default")
    assert missing.value.status == 404
    created = client.CustomObjectsApi(api).create_namespaced_custom_object(
        "batch", "v1beta1", "default", "cronjobs", cronjob
    )
    assert created["apiVersion"] == "batch/v1beta1" and created["metadata"]["uid"]
    assert [j.metadata.name for j in client.BatchV1Api(api).list_namespaced_job("default").items] == []
    api.close()


def test_1_20_one_ingress_is_visible_in_two_groups_with_one_uid(kube_server_1_20):
    api = kube_server_1_20.api_client()
    net, custom = client.NetworkingV1Api(api), client.CustomObjectsApi(api)
    start = net.list_namespaced_ingress("default").metadata.resource_version

    created = net.create_namespaced_ingress("default", _ingress_v1("web"))
    old = custom.get_namespaced_custom_object("extensions", "v1beta1", "default", "ingresses", "web")

    # the same object, in the old group's shape
    assert old["apiVersion"] == "extensions/v1beta1" and old["kind"] == "Ingress"
    assert old["metadata"]["uid"] == created.metadata.uid
    assert old["metadata"]["resourceVersion"] == created.metadata.resource_version
    path = old["spec"]["rules"][0]["http"]["paths"][0]
    assert path["backend"] == {"serviceName": "web", "servicePort": 80}
    listed = custom.list_namespaced_custom_object("extensions", "v1beta1", "default", "ingresses")["items"]
    assert [i["metadata"]["uid"] for i in listed] == [created.metadata.uid]

    # a change through one group is seen through the other; the name is taken in both
    custom.patch_namespaced_custom_object(
        "extensions", "v1beta1", "default", "ingresses", "web", {"metadata": {"labels": {"tier": "edge"}}}
    )
    now = net.read_namespaced_ingress("web", "default")
    assert now.metadata.labels == {"tier": "edge"} and now.metadata.uid == created.metadata.uid
    assert now.spec.rules[0].http.paths[0].backend.service.port.number == 80
    with pytest.raises(client.ApiException) as taken:
        custom.create_namespaced_custom_object(
            "extensions",
            "v1beta1",
            "default",
            "ingresses",
            {"apiVersion": "extensions/v1beta1", "kind": "Ingress", "metadata": {"name": "web"}, "spec": {}},
        )
    assert taken.value.status == 409

    # an object created in the old group gets the new shape in the new one
    custom.create_namespaced_custom_object(
        "extensions",
        "v1beta1",
        "default",
        "ingresses",
        {
            "apiVersion": "extensions/v1beta1",
            "kind": "Ingress",
            "metadata": {"name": "legacy"},
            "spec": {"backend": {"serviceName": "web", "servicePort": "http"}},
        },
    )
    legacy = net.read_namespaced_ingress("legacy", "default")
    assert legacy.spec.default_backend.service.name == "web"
    assert legacy.spec.default_backend.service.port.name == "http"

    # a watch on one group sees writes through the other; a delete through one removes it from both
    custom.delete_namespaced_custom_object("extensions", "v1beta1", "default", "ingresses", "web")
    assert [i.metadata.name for i in net.list_namespaced_ingress("default").items] == ["legacy"]
    events = [
        (e["type"], e["raw_object"]["apiVersion"], e["raw_object"]["metadata"]["name"])
        for e in watch.Watch().stream(
            custom.list_namespaced_custom_object,
            "extensions",
            "v1beta1",
            "default",
            "ingresses",
            resource_version=start,
            timeout_seconds=1,
        )
    ]
    assert events == [
        ("ADDED", "extensions/v1beta1", "web"),
        ("MODIFIED", "extensions/v1beta1", "web"),
        ("ADDED", "extensions/v1beta1", "legacy"),
        ("DELETED", "extensions/v1beta1", "web"),
    ]
    api.close()


# -- (c) list items ------------------------------------------------------------------------------------


def test_list_items_of_built_in_kinds_carry_no_kind_or_api_version(kube_server_1_20):
    server = kube_server_1_20
    net = client.NetworkingV1Api(server.api_client())
    net.create_namespaced_ingress("default", _ingress_v1("web"))
    for path, list_kind, api_version in (
        ("/apis/extensions/v1beta1/namespaces/default/ingresses", "IngressList", "extensions/v1beta1"),
        ("/apis/networking.k8s.io/v1/namespaces/default/ingresses", "IngressList", "networking.k8s.io/v1"),
        ("/api/v1/namespaces/default/serviceaccounts", "ServiceAccountList", "v1"),
    ):
        doc = _get(server, path)
        assert (doc["kind"], doc["apiVersion"]) == (list_kind, api_version)
        assert doc["items"] and all("kind" not in i and "apiVersion" not in i for i in doc["items"]), path
        assert doc["metadata"]["resourceVersion"]


# -- (d) watch resume and 410 Gone ---------------------------------------------------------------------


def test_a_watch_resumes_after_its_resource_version_and_one_older_than_the_window_is_410_gone(tmp_path):
    with FakeKubeAPI(tmp_path / "kube", history_limit=8) as server:
        api = server.api_client()
        core = client.CoreV1Api(api)
        core.create_namespace({"metadata": {"name": "w"}})
        first = core.create_namespaced_config_map("w", {"metadata": {"name": "one"}, "data": {"k": "1"}})
        core.create_namespaced_config_map("w", {"metadata": {"name": "two"}, "data": {"k": "2"}})
        resumed = [
            (e["type"], e["object"].metadata.name)
            for e in watch.Watch().stream(
                core.list_namespaced_config_map,
                "w",
                resource_version=first.metadata.resource_version,
                timeout_seconds=1,
            )
        ]
        # only what happened after the resourceVersion: not "one" again
        assert resumed == [("ADDED", "two")]

        for n in range(12):  # more writes than the server keeps
            core.create_namespaced_config_map("w", {"metadata": {"name": f"more-{n}"}, "data": {"k": "x"}})
        path = f"/api/v1/namespaces/w/configmaps?watch=true&resourceVersion={first.metadata.resource_version}"
        status, body = _raw(server, path)
        (line,) = [ln for ln in body.splitlines() if ln.strip()]
        event = json.loads(line)
        assert status == 200 and event["type"] == "ERROR"
        assert {k: event["object"][k] for k in ("kind", "apiVersion", "status", "reason", "code")} == {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "reason": "Expired",
            "code": 410,
        }
        assert event["object"]["message"].startswith(
            f"too old resource version: {first.metadata.resource_version}"
        )
        with pytest.raises(client.ApiException) as gone:
            list(
                watch.Watch().stream(
                    core.list_namespaced_config_map,
                    "w",
                    resource_version=first.metadata.resource_version,
                    timeout_seconds=1,
                )
            )
        assert gone.value.status == 410
        api.close()
        assert server.errors == []


# -- (e) garbage collection ----------------------------------------------------------------------------


def _owned_cm(name: str, owners: list[dict]) -> dict:
    return {"metadata": {"name": name, "ownerReferences": owners}, "data": {"k": "v"}}


def _ref(obj, kind: str = "ConfigMap", api_version: str = "v1", uid: str | None = None) -> dict:
    return {
        "apiVersion": api_version,
        "kind": kind,
        "name": obj.metadata.name,
        "uid": uid or obj.metadata.uid,
    }


def test_garbage_collection_resolves_an_owner_in_the_dependents_namespace(kube_server, kube_client):
    core = client.CoreV1Api(kube_client)
    rbac = client.RbacAuthorizationV1Api(kube_client)
    for ns in ("a", "b"):
        core.create_namespace({"metadata": {"name": ns}})
    owner = core.create_namespaced_config_map("a", {"metadata": {"name": "owner"}, "data": {}})
    other = core.create_namespaced_config_map("a", {"metadata": {"name": "other"}, "data": {}})

    # kept: the owner is in the dependent's namespace
    core.create_namespaced_config_map("a", _owned_cm("same-ns", [_ref(owner)]))
    # kept: an owner of a kind the server does not serve cannot be resolved, so it is not collected
    unknown = {"apiVersion": "example.com/v1", "kind": "Widget", "name": "w", "uid": "0000-unknown"}
    core.create_namespaced_config_map("a", _owned_cm("unknown-kind", [unknown]))
    # one live owner: the dangling reference is removed, the object kept
    dangling = _ref(other, uid="0000-not-its-uid")
    core.create_namespaced_config_map("a", _owned_cm("half", [_ref(owner), dangling]))
    # deleted: the owner's uid is in namespace a, not in the dependent's namespace b
    core.create_namespaced_config_map("b", _owned_cm("other-ns", [_ref(owner)]))
    # deleted: right name, wrong uid
    core.create_namespaced_config_map("a", _owned_cm("wrong-uid", [_ref(owner, uid="0000-not-its-uid")]))
    # deleted: a cluster-scoped dependent cannot have a namespaced owner
    rbac.create_cluster_role(
        {"metadata": {"name": "gc-probe", "ownerReferences": [_ref(owner)]}, "rules": []}
    )

    kube_server.wait_for("configmaps", "other-ns", "b", gone=True, timeout=10)
    kube_server.wait_for("configmaps", "wrong-uid", "a", gone=True, timeout=10)
    kube_server.wait_for("clusterroles", "gc-probe", gone=True, timeout=10)
    half = kube_server.wait_for(
        "configmaps", "half", "a", lambda o: len(o["metadata"]["ownerReferences"]) == 1, timeout=10
    )
    assert half["metadata"]["ownerReferences"][0]["uid"] == owner.metadata.uid
    assert kube_server.get("configmaps", "same-ns", "a") is not None
    assert kube_server.get("configmaps", "unknown-kind", "a") is not None

    # deleting the owner collects what it still owns in its namespace
    core.delete_namespaced_config_map("owner", "a")
    kube_server.wait_for("configmaps", "same-ns", "a", gone=True, timeout=10)
    kube_server.wait_for("configmaps", "half", "a", gone=True, timeout=10)
    assert kube_server.get("configmaps", "unknown-kind", "a") is not None
