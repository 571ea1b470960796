"""Restore transforms: each transform as a table of inputs and expected outputs, and the spec parser."""

from __future__ import annotations

import pytest

from steps.errors import UsageError
from steps.idmap import IdRange
from steps.manifests.transforms import (
    TransformSpec,
    normalize_image,
    parse_pairs,
    rewrite_image,
    transform_objects,
)


def sts(**spec_extra):
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {
            "name": "db",
            "namespace": "shop",
            "labels": {"app": "db", "tier": "data"},
            "annotations": {"example.com/owner": "team-a", "keep": "1"},
        },
        "spec": {
            "replicas": 2,
            "template": {
                "metadata": {"labels": {"app": "db"}},
                "spec": {
                    "securityContext": {
                        "runAsUser": 1000,
                        "runAsGroup": 1000,
                        "fsGroup": 1000,
                        "supplementalGroups": [1000, 5],
                    },
                    "initContainers": [{"name": "init", "image": "busybox:1.36"}],
                    "containers": [
                        {"name": "pg", "image": "postgres:16", "securityContext": {"runAsUser": 1001}}
                    ],
                },
            },
            "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {"storageClassName": "gp2"}}],
            **spec_extra,
        },
    }


def pvc(cls="gp2", name="data-db-0"):
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {"storageClassName": cls, "accessModes": ["ReadWriteOnce"]},
    }


def run(objs, **spec):
    return transform_objects(objs, TransformSpec(**spec)).objects


def test_no_transforms_change_nothing():
    objs = [sts(), pvc()]
    assert run(objs) == objs


def test_namespace_remap_moves_objects_and_namespace_references():
    rb = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "rb", "namespace": "shop"},
        "subjects": [
            {"kind": "ServiceAccount", "name": "db", "namespace": "shop"},
            {"kind": "ServiceAccount", "name": "mon", "namespace": "monitoring"},
        ],
        "roleRef": {"kind": "Role", "name": "r"},
    }
    np = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "np", "namespace": "shop"},
        "spec": {
            "ingress": [
                {"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "shop"}}}]}
            ]
        },
    }
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop", "labels": {"team": "a"}}}
    out = run([ns, rb, np, pvc()], namespace_map={"shop": "shop-dr"})
    assert out[0]["metadata"] == {"name": "shop-dr", "labels": {"team": "a"}}
    assert [s["namespace"] for s in out[1]["subjects"]] == ["shop-dr", "monitoring"]
    assert out[2]["spec"]["ingress"][0]["from"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "shop-dr"
    }
    assert out[3]["metadata"]["namespace"] == "shop-dr"


@pytest.mark.parametrize(
    ("mapping", "before", "after"),
    [
        ({"gp2": "gp3"}, "gp2", "gp3"),
        ({"gp2": "gp3"}, "io1", "io1"),
        ({"*": "standard"}, "io1", "standard"),
        ({"gp2": "gp3", "*": "standard"}, "gp2", "gp3"),
        ({"gp2": ""}, "gp2", ""),
    ],
)
def test_storage_class_map(mapping, before, after):
    out = run([pvc(before), sts()], storage_class_map=mapping)
    assert out[0]["spec"]["storageClassName"] == after
    expected_tpl = mapping.get("gp2", mapping.get("*", "gp2"))  # the template asks for gp2
    assert out[1]["spec"]["volumeClaimTemplates"][0]["spec"]["storageClassName"] == expected_tpl


def test_storage_class_map_leaves_an_unset_class_to_the_default():
    claim = pvc()
    del claim["spec"]["storageClassName"]
    assert "storageClassName" not in run([claim], storage_class_map={"*": "x"})[0]["spec"]


def test_uid_gid_ranges_remap_security_contexts():
    out = run([sts()], uid_map=(IdRange(1000, 1000650000, 10),), gid_map=(IdRange(1000, 2000, 1),))[0]
    ps = out["spec"]["template"]["spec"]
    assert ps["securityContext"] == {
        "runAsUser": 1000650000,
        "runAsGroup": 2000,
        "fsGroup": 2000,
        "supplementalGroups": [2000, 5],
    }
    assert ps["containers"][0]["securityContext"] == {"runAsUser": 1000650001}


@pytest.mark.parametrize(
    ("image", "full"),
    [
        ("postgres:16", "docker.io/library/postgres:16"),
        ("bitnami/postgresql:16", "docker.io/bitnami/postgresql:16"),
        ("ghcr.io/org/app:1", "ghcr.io/org/app:1"),
        ("localhost/app", "localhost/app"),
        ("registry:5000/app", "registry:5000/app"),
        ("postgres@sha256:abc", "docker.io/library/postgres@sha256:abc"),
    ],
)
def test_image_normalisation(image, full):
    assert normalize_image(image) == full


@pytest.mark.parametrize(
    ("mapping", "image", "result"),
    [
        ({"docker.io": "mirror.local/hub"}, "postgres:16", "mirror.local/hub/library/postgres:16"),
        ({"docker.io/library": "mirror.local/lib"}, "postgres:16", "mirror.local/lib/postgres:16"),
        ({"docker.io": "m/hub", "docker.io/library": "m/lib"}, "postgres:16", "m/lib/postgres:16"),
        ({"docker.io": "m/hub"}, "ghcr.io/org/app:1", "ghcr.io/org/app:1"),
        ({"ghcr.io/org": "registry.internal/org/"}, "ghcr.io/org/app:1", "registry.internal/org/app:1"),
        ({"ghcr.io/or": "x"}, "ghcr.io/org/app:1", "ghcr.io/org/app:1"),
    ],
)
def test_image_registry_rewrite(mapping, image, result):
    assert rewrite_image(image, mapping) == result


def test_image_rewrite_applies_to_every_container():
    out = run([sts()], image_registry_map={"docker.io": "mirror/hub"})[0]
    ps = out["spec"]["template"]["spec"]
    assert ps["initContainers"][0]["image"] == "mirror/hub/library/busybox:1.36"
    assert ps["containers"][0]["image"] == "mirror/hub/library/postgres:16"


def test_labels_and_annotations_added_and_removed_with_globs():
    out = run(
        [sts()],
        add_labels={"restored": "yes"},
        remove_labels=("tier",),
        add_annotations={"note": "dr"},
        remove_annotations=("example.com/*",),
    )[0]
    assert out["metadata"]["labels"] == {"app": "db", "restored": "yes"}
    assert out["metadata"]["annotations"] == {"keep": "1", "note": "dr"}
    # only the object's own metadata: the pod template must keep matching the selector
    assert out["spec"]["template"]["metadata"]["labels"] == {"app": "db"}


def test_json_patches_apply_to_matching_objects_last():
    spec = TransformSpec.from_dict(
        {
            "namespaceMap": {"shop": "dr"},
            "patches": [
                {
                    "target": {"kind": "StatefulSet", "name": "d*"},
                    "patch": [
                        {"op": "test", "path": "/metadata/namespace", "value": "dr"},
                        {"op": "replace", "path": "/spec/replicas", "value": 1},
                    ],
                },
                {"target": {"kind": "Deployment"}, "patch": [{"op": "remove", "path": "/spec"}]},
            ],
        }
    )
    res = transform_objects([sts(), pvc()], spec)
    assert res.objects[0]["spec"]["replicas"] == 1
    assert (
        res.objects[1] == transform_objects([pvc()], TransformSpec(namespace_map={"shop": "dr"})).objects[0]
    )
    assert "transforms.patches[1]: matched no object" in res.notes


def test_migration_runs_first_so_patches_see_the_new_version():
    ing = {
        "apiVersion": "extensions/v1beta1",
        "kind": "Ingress",
        "metadata": {"name": "w", "namespace": "shop"},
        "spec": {"backend": {"serviceName": "web", "servicePort": 80}},
    }
    spec = TransformSpec.from_dict(
        {
            "patches": [
                {
                    "target": {"kind": "Ingress", "group": "networking.k8s.io"},
                    "patch": [{"op": "add", "path": "/spec/ingressClassName", "value": "nginx"}],
                }
            ]
        }
    )
    res = transform_objects([ing], spec)
    assert res.objects[0]["apiVersion"] == "networking.k8s.io/v1"
    assert res.objects[0]["spec"]["ingressClassName"] == "nginx"
    assert any("extensions/v1beta1 → networking.k8s.io/v1" in n for n in res.notes)


def test_migrations_can_be_turned_off():
    cj = {
        "apiVersion": "batch/v1beta1",
        "kind": "CronJob",
        "metadata": {"name": "c", "namespace": "s"},
        "spec": {},
    }
    assert run([cj], migrate_api_versions=False)[0]["apiVersion"] == "batch/v1beta1"
    assert run([cj])[0]["apiVersion"] == "batch/v1"


BAD_SPECS = [
    ({"namespaceMapp": {}}, "transforms.namespaceMapp: unknown transform"),
    ({"namespaceMap": ["a"]}, "transforms.namespaceMap: expected a mapping of strings to strings"),
    (
        {"namespaceMap": {"a": "Not_Valid"}},
        "transforms.namespaceMap.a: 'Not_Valid' is not a valid namespace name",
    ),
    ({"removeLabels": "app"}, "transforms.removeLabels: expected a list of strings"),
    ({"uidMap": ["1000"]}, "transforms.uidMap[0]: expected FROM:TO or FROM:TO:COUNT"),
    ({"uidMap": ["1000:1:0"]}, "transforms.uidMap[0]: IDs must be >= 0 and COUNT >= 1"),
    ({"uidMap": ["1000:1:10", "1005:2"]}, "transforms.uidMap: ranges starting at 1000 and 1005 overlap"),
    ({"patches": {"a": 1}}, "transforms.patches: expected a list"),
    ({"patches": [{"target": {"kind": "X"}}]}, "transforms.patches[0]: expected {target"),
    (
        {"patches": [{"target": {"knd": "X"}, "patch": []}]},
        "transforms.patches[0].target: expected a mapping",
    ),
    ({"patches": [{"patch": [{"op": "add"}]}]}, "transforms.patches[0].patch[0]: expected an operation"),
    ({"migrateApiVersions": "yes"}, "transforms.migrateApiVersions: expected true or false"),
]


@pytest.mark.parametrize(("data", "message"), BAD_SPECS)
def test_bad_transforms_are_one_line_errors(data, message):
    with pytest.raises(UsageError) as err:
        TransformSpec.from_dict(data)
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value)


def test_transforms_file(tmp_path):
    f = tmp_path / "t.yaml"
    f.write_text("namespaceMap: {shop: dr}\nstorageClassMap: {'*': fast}\nuidMap: ['0:1000:1']\n")
    spec = TransformSpec.load(f)
    assert spec.namespace_map == {"shop": "dr"} and spec.uid_map == (IdRange(0, 1000, 1),)
    f.write_text("namespaceMap: [\n")
    with pytest.raises(UsageError, match="not valid YAML"):
        TransformSpec.load(f)
    with pytest.raises(UsageError, match="does not exist"):
        TransformSpec.load(tmp_path / "missing.yaml")


def test_parse_pairs():
    assert parse_pairs(["a=b", "c=d=e"], "--x") == {"a": "b", "c": "d=e"}
    with pytest.raises(UsageError, match="--x: expected KEY=VALUE, got 'ab'"):
        parse_pairs(["ab"], "--x")


def test_merged_specs_combine():
    a = TransformSpec(namespace_map={"a": "b"}, remove_labels=("x",))
    b = TransformSpec(namespace_map={"a": "c", "d": "e"}, remove_labels=("y",), migrate_api_versions=False)
    m = a.merged(b)
    assert m.namespace_map == {"a": "c", "d": "e"}
    assert m.remove_labels == ("x", "y")
    assert m.migrate_api_versions is False
