"""One object served by two API groups is captured once (dedupe by uid), and restore-app finds two captured
objects that would be created as one (collisions) before it creates anything. Pure functions."""

from __future__ import annotations

from steps.drivers.kube_types import version_priority
from steps.manifests.collisions import collision_message, find_collisions, identity
from steps.manifests.export import dedupe_by_uid
from steps.manifests.transforms import TransformSpec, transform_objects


def _obj(
    api_version: str, kind: str, name: str, namespace: str | None = "shop", uid: str | None = None
) -> dict:
    meta: dict = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    if uid:
        meta["uid"] = uid
    return {"apiVersion": api_version, "kind": kind, "metadata": meta}


def _namespaced(_api_version: str, kind: str) -> bool:
    return kind not in ("Namespace", "ClusterRole")


def test_kubernetes_version_order():
    order = ["v2", "v1", "v2beta1", "v1beta2", "v1beta1", "v1alpha1", "foo"]
    assert sorted(reversed(order), key=version_priority, reverse=True) == order


def test_the_newest_non_deprecated_copy_of_an_object_is_kept_whatever_the_listing_order():
    old = _obj("extensions/v1beta1", "Ingress", "web", uid="u-1")
    new = _obj("networking.k8s.io/v1", "Ingress", "web", uid="u-1")
    beta = _obj("networking.k8s.io/v1beta1", "Ingress", "web", uid="u-1")
    other = _obj("v1", "ConfigMap", "web", uid="u-2")
    no_uid = _obj("v1", "ConfigMap", "loose")
    for listing in ([old, new, other, no_uid], [new, other, no_uid, old], [beta, old, other, new, no_uid]):
        kept, aliases = dedupe_by_uid(listing)
        assert [o["apiVersion"] for o in kept if o["kind"] == "Ingress"] == ["networking.k8s.io/v1"]
        assert other in kept and no_uid in kept
        assert {a["apiVersion"] for a in aliases} == {
            o["apiVersion"] for o in listing if o["kind"] == "Ingress" and o is not new
        }
        assert all(a["kept_apiVersion"] == "networking.k8s.io/v1" and a["uid"] == "u-1" for a in aliases)
    kept, aliases = dedupe_by_uid([old, new])
    assert aliases == [
        {
            "object": "extensions/v1beta1 Ingress web",
            "apiVersion": "extensions/v1beta1",
            "kind": "Ingress",
            "namespace": "shop",
            "name": "web",
            "uid": "u-1",
            "kept_apiVersion": "networking.k8s.io/v1",
        }
    ]


def test_objects_with_distinct_uids_are_all_kept():
    objects = [_obj("v1", "ConfigMap", "a", uid="1"), _obj("v1", "ConfigMap", "a", namespace="x", uid="2")]
    assert dedupe_by_uid(objects) == (objects, [])


def test_two_copies_of_an_ingress_collide_after_migration_and_the_message_names_both():
    captured = [
        _obj("v1", "ConfigMap", "web"),
        _obj("extensions/v1beta1", "Ingress", "web"),
        _obj("networking.k8s.io/v1", "Ingress", "web"),
    ]
    result = transform_objects(captured, TransformSpec())
    assert result.origins == captured

    (collision,) = find_collisions(result.objects, result.origins, _namespaced)

    message = collision_message([collision])
    assert message == (
        "restore refused: the backup holds one object twice: extensions/v1beta1 Ingress web "
        "(objects/shop/Ingress.extensions/web.yaml) and networking.k8s.io/v1 Ingress web "
        "(objects/shop/Ingress.networking.k8s.io/web.yaml) would both be created as networking.k8s.io/v1 "
        "Ingress web in namespace shop; the same object captured under two API groups, or two namespaces "
        "mapped onto one. This run created nothing"
    )
    assert "\n" not in message


def test_they_collide_without_the_migrations_too():
    captured = [_obj("extensions/v1beta1", "Ingress", "web"), _obj("networking.k8s.io/v1", "Ingress", "web")]
    result = transform_objects(captured, TransformSpec(migrate_api_versions=False))
    assert len(find_collisions(result.objects, result.origins, _namespaced)) == 1


def test_a_namespace_map_joining_two_namespaces_collides_and_the_count_of_more_pairs_is_given():
    captured = [
        _obj("v1", "ConfigMap", "cfg", namespace="a"),
        _obj("v1", "ConfigMap", "cfg", namespace="b"),
        _obj("v1", "Secret", "s", namespace="a"),
        _obj("v1", "Secret", "s", namespace="b"),
    ]
    result = transform_objects(captured, TransformSpec(namespace_map={"a": "t", "b": "t"}))
    collisions = find_collisions(result.objects, result.origins, _namespaced)
    assert len(collisions) == 2
    assert "(and 1 more such pair)" in collision_message(collisions)
    assert "in namespace t" in str(collisions[0])


def test_distinct_objects_do_not_collide():
    objects = [
        _obj("v1", "ConfigMap", "web"),
        _obj("v1", "Secret", "web"),
        _obj("v1", "ConfigMap", "web", namespace="other"),
        _obj("example.com/v1", "Ingress", "web"),  # another group's Ingress
        _obj("networking.k8s.io/v1", "Ingress", "web"),
    ]
    assert find_collisions(objects, objects, _namespaced) == []


def test_a_namespace_on_a_cluster_scoped_object_does_not_set_it_apart():
    a = _obj("rbac.authorization.k8s.io/v1", "ClusterRole", "reader", namespace="a")
    b = _obj("rbac.authorization.k8s.io/v1", "ClusterRole", "reader", namespace="b")
    assert identity(a, _namespaced) == ("rbac.authorization.k8s.io", "ClusterRole", "", "reader")
    assert len(find_collisions([a, b], [a, b], _namespaced)) == 1
