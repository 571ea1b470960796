"""One re-home rule for registry-restore --rehome (where images are pushed) and restore-app's image
transform (where the restored workloads pull them from): crafted workloads of every kind with a pod
template, every container list, tags and digests kept, and the same answer from both sides."""

from __future__ import annotations

import copy

import pytest

from steps.commands.registry_restore import parse_rehome, renamer
from steps.errors import UsageError
from steps.manifests.image_rehome import parse_rehome as parse_rules
from steps.manifests.image_rehome import rehome_image
from steps.manifests.transforms import TransformSpec, transform_objects

A = "harbor-a.example.com"
B = "harbor-b.example.com"
DIGEST = "sha256:" + "9" * 64
RULES = [f"{A}/shop={B}/shop-dr", f"{A}/shop/payments={B}/pay", f"{A}/base={B}/base"]


def pod_spec(tag: str) -> dict:
    return {
        "initContainers": [{"name": "init", "image": f"{A}/base/tools:1.2"}],
        "containers": [
            {"name": "api", "image": f"{A}/shop/api:{tag}@{DIGEST}"},
            {"name": "pay", "image": f"{A}/shop/payments/gw@{DIGEST}"},
            {"name": "hub", "image": "postgres:16"},
        ],
        "ephemeralContainers": [{"name": "debug", "image": f"{A}/shopping/debug:1"}],
    }


def workloads() -> list[dict]:
    template = {"metadata": {"labels": {"app": "x"}}, "spec": pod_spec("v1")}

    def obj(api, kind, spec):
        return {
            "apiVersion": api,
            "kind": kind,
            "metadata": {"name": kind.lower(), "namespace": "shop"},
            "spec": spec,
        }

    return [
        obj("apps/v1", "Deployment", {"template": copy.deepcopy(template)}),
        obj("apps/v1", "StatefulSet", {"template": copy.deepcopy(template)}),
        obj("apps/v1", "DaemonSet", {"template": copy.deepcopy(template)}),
        obj("batch/v1", "Job", {"template": copy.deepcopy(template)}),
        obj("batch/v1", "CronJob", {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": copy.deepcopy(template)}}}),
        obj("v1", "Pod", pod_spec("v1")),
    ]  # fmt: skip


def images(obj: dict) -> dict[str, str]:
    spec = obj["spec"]
    if obj["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]["template"]["spec"]
    elif obj["kind"] != "Pod":
        spec = spec["template"]["spec"]
    return {
        c["name"]: c["image"]
        for key in ("initContainers", "containers", "ephemeralContainers")
        for c in spec.get(key) or []
    }


def test_restore_app_rehomes_every_container_of_every_workload_kind_keeping_tags_and_digests():
    # GIVEN the registry policy's rehome rules as restore-app's image transform
    spec = TransformSpec(image_registry_map=parse_rules(RULES, "--image-registry"))
    # WHEN a backup's workloads are transformed
    result = transform_objects(workloads(), spec)
    # THEN in each, every image of harbor-a's moved repositories points at harbor-b, same tag and digest
    assert len(result.objects) == 6
    for obj in result.objects:
        assert images(obj) == {
            "init": f"{B}/base/tools:1.2",
            "api": f"{B}/shop-dr/api:v1@{DIGEST}",
            "pay": f"{B}/pay/gw@{DIGEST}",  # the longest rule wins over harbor-a/shop
            "hub": "postgres:16",  # no rule: as written
            "debug": f"{A}/shopping/debug:1",  # shop is not a prefix of shopping
        }, obj["kind"]


def test_registry_restore_pushes_each_repository_where_restore_app_points_the_workloads():
    # GIVEN the same rules given to registry-restore, pushing into harbor-b
    rename = renamer(parse_rehome(RULES, B), A)
    for repository, tag in (
        ("shop/api", ":v1"),
        ("shop/payments/gw", ""),
        ("base/tools", ":1.2"),
        ("shopping/debug", ":1"),
    ):
        pushed = f"{B}/{rename(repository)}{tag}@{DIGEST}"
        pulled = rehome_image(f"{A}/{repository}{tag}@{DIGEST}", parse_rules(RULES, "--image-registry"))
        if pulled.startswith(A):  # not moved: pushed under its own name, and workloads keep harbor-a
            assert rename(repository) == repository
        else:
            assert pushed == pulled, repository


def test_the_order_of_the_rules_does_not_matter():
    for rules in (RULES, list(reversed(RULES))):
        assert renamer(parse_rehome(rules, B), A)("shop/payments/gw") == "pay/gw"
        assert rehome_image(f"{A}/shop/payments/gw:1", parse_rules(rules, "x")) == f"{B}/pay/gw:1"


def test_a_rule_naming_a_whole_repository_moves_its_tagged_images():
    rules = parse_rules([f"{A}/shop/api={B}/api-dr"], "--image-registry")
    assert rehome_image(f"{A}/shop/api:v1", rules) == f"{B}/api-dr:v1"
    assert rehome_image(f"{A}/shop/api@{DIGEST}", rules) == f"{B}/api-dr@{DIGEST}"
    assert rehome_image(f"{A}/shop/api-v2:v1", rules) == f"{A}/shop/api-v2:v1"
    assert renamer(parse_rehome([f"{A}/shop/api={B}/api-dr"], B), A)("shop/api") == "api-dr"


def test_registry_hosts_with_ports_and_docker_hub_short_names():
    rules = parse_rules(
        ["127.0.0.1:5000=registry.internal/mirror", "docker.io/library=registry.internal/lib"], "x"
    )
    assert rehome_image("127.0.0.1:5000/app:1", rules) == "registry.internal/mirror/app:1"
    assert rehome_image(f"postgres@{DIGEST}", rules) == f"registry.internal/lib/postgres@{DIGEST}"


@pytest.mark.parametrize(
    ("values", "words"),
    [
        (["harbor-a"], "expected OLD=NEW"),
        (["=b"], "expected OLD=NEW"),
        ([f"{A}/x={B}/y", f"{A}/x/={B}/z"], "is moved twice"),
    ],
)
def test_bad_rules_are_one_line_naming_the_option(values, words):
    with pytest.raises(UsageError) as err:
        parse_rehome(values, B)
    assert str(err.value).startswith("--rehome: ") and words in str(err.value) and "\n" not in str(err.value)


def test_registry_restore_refuses_a_rule_moving_images_to_another_registry():
    with pytest.raises(UsageError, match=r"moves images to harbor-c\.example\.com, but --registry is"):
        parse_rehome([f"{A}/shop=harbor-c.example.com/shop"], B)
