"""The images an app's pods run (registry-backup --images-of): every imageID form a runtime reports,
the tag the pod spec names, init containers, and the hostile cases (no digest, another registry, one
tag running as two digests)."""

from __future__ import annotations

import pytest

from steps.errors import PermanentError, UsageError
from steps.manifests.pod_images import images_of_pods, parse_images_of

HOST = "harbor.example.com"
D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
D3 = "sha256:" + "3" * 64


def pod(
    name: str,
    containers: list[tuple[str, str, str]],
    init: list[tuple[str, str, str]] = (),
    status_image=None,
):
    """A pod whose containers are (name, spec image, imageID)."""
    return {
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {
            "initContainers": [{"name": n, "image": i} for n, i, _ in init],
            "containers": [{"name": n, "image": i} for n, i, _ in containers],
        },
        "status": {
            "initContainerStatuses": [
                {"name": n, "image": status_image or i, "imageID": d} for n, i, d in init
            ],
            "containerStatuses": [
                {"name": n, "image": status_image or i, "imageID": d} for n, i, d in containers
            ],
        },
    }


def test_every_imageid_form_resolves_to_the_repository_and_digest_with_the_spec_tag():
    pods = [
        pod("api-1", [("api", f"{HOST}/shop/api:v1", f"docker-pullable://{HOST}/shop/api@{D1}")],
            init=[("migrate", f"{HOST}/shop/migrate:2.0", f"{HOST}/shop/migrate@{D2}")]),
        pod("worker-1", [("worker", f"{HOST}/shop/worker@{D3}", D3)]),
    ]  # fmt: skip
    found = images_of_pods(pods, HOST)
    assert found.roots == [("shop/api", D1, "v1"), ("shop/migrate", D2, "2.0"), ("shop/worker", D3, None)]
    assert found.warnings == []
    assert {p["container"] for p in found.pods} == {"api", "migrate", "worker"}


def test_a_bare_digest_takes_its_repository_from_the_image_field():
    (root,) = images_of_pods([pod("a", [("a", f"{HOST}/shop/a", D1)])], HOST).roots
    assert root == ("shop/a", D1, "latest")  # no tag and no digest in the spec: latest, as the kubelet pulls


def test_an_image_on_another_registry_is_skipped_with_a_warning_naming_it():
    pods = [pod("api-1", [("api", f"{HOST}/shop/api:v1", f"{HOST}/shop/api@{D1}"),
                          ("proxy", "istio/proxyv2:1.20", f"docker.io/istio/proxyv2@{D2}")])]  # fmt: skip
    found = images_of_pods(pods, HOST)
    assert found.roots == [("shop/api", D1, "v1")]
    (warning,) = found.warnings
    assert "pod shop/api-1 container proxy" in warning and f"docker.io/istio/proxyv2@{D2}" in warning
    assert HOST in warning


def test_a_spec_on_another_repository_gives_no_tag():
    # pulled through a mirror: the imageID names another repository than the spec
    (root,) = images_of_pods(
        [pod("a", [("a", "mirror.example.com/shop/a:v1", f"{HOST}/shop/a@{D1}")])], HOST
    ).roots
    assert root == ("shop/a", D1, None)


@pytest.mark.parametrize(
    "image_id", [f"{HOST}/shop/api:v1", f"docker-pullable://{HOST}/shop/api", f"{HOST}/shop/api@sha256:abc"]
)
def test_an_imageid_without_a_digest_is_refused_in_one_line(image_id):
    with pytest.raises(PermanentError) as err:
        images_of_pods([pod("api-1", [("api", f"{HOST}/shop/api:v1", image_id)])], HOST)
    text = str(err.value)
    assert "\n" not in text and "pod shop/api-1 container api" in text and "names no digest" in text


def test_a_container_not_started_is_skipped():
    found = images_of_pods(
        [pod("a", [("a", f"{HOST}/shop/a:v1", ""), ("b", f"{HOST}/shop/b:v1", f"{HOST}/shop/b@{D2}")])], HOST
    )
    assert found.roots == [("shop/b", D2, "v1")]
    assert "container a: not started yet" in found.warnings[0]


def test_one_tag_running_as_two_digests_keeps_both_by_digest_and_the_tag_for_neither():
    pods = [
        pod("api-old", [("api", f"{HOST}/shop/api:v1", f"{HOST}/shop/api@{D1}")]),
        pod("api-new", [("api", f"{HOST}/shop/api:v1", f"{HOST}/shop/api@{D2}")]),
    ]
    found = images_of_pods(pods, HOST)
    assert found.roots == [("shop/api", D1, None), ("shop/api", D2, None)]
    assert any("shop/api:v1 runs as 2 digests" in w for w in found.warnings)


def test_the_same_image_in_many_pods_is_backed_up_once():
    pods = [pod(f"api-{i}", [("api", f"{HOST}/shop/api:v1", f"{HOST}/shop/api@{D1}")]) for i in range(3)]
    found = images_of_pods(pods, HOST)
    assert found.roots == [("shop/api", D1, "v1")] and len(found.pods) == 3


def test_registry_hosts_with_ports_compare_exactly():
    found = images_of_pods(
        [pod("a", [("a", "127.0.0.1:5000/p/a:v1", f"127.0.0.1:5000/p/a@{D1}")])], "127.0.0.1:5000"
    )
    assert found.roots == [("p/a", D1, "v1")]
    found = images_of_pods(
        [pod("a", [("a", "127.0.0.1:5001/p/a:v1", f"127.0.0.1:5001/p/a@{D1}")])], "127.0.0.1:5000"
    )
    assert found.roots == [] and found.warnings


@pytest.mark.parametrize(
    ("text", "namespace", "selector"),
    [
        ("shop", "shop", ""),
        ("shop:app=orders", "shop", "app=orders"),
        ("ci:tier in (a,b),!canary", "ci", "tier in (a,b),!canary"),
    ],
)
def test_images_of_parses_namespace_and_selector(text, namespace, selector):
    sel = parse_images_of(text)
    assert (sel.namespace, sel.selector) == (namespace, selector)
    assert str(sel) == text


@pytest.mark.parametrize(
    ("text", "words"), [("Shop:app=a", "namespace name"), ("shop:app==(", "cannot parse"), ("", "NAMESPACE")]
)
def test_a_bad_images_of_is_one_line_naming_the_option(text, words):
    with pytest.raises(UsageError) as err:
        parse_images_of(text, "spec.source.registry.imagesOf[0]")
    assert str(err.value).startswith("spec.source.registry.imagesOf[0]: ") and words in str(err.value)


def test_one_digest_run_under_two_tags_keeps_both_tags():
    pods = [
        pod("a", [("a", f"{HOST}/shop/api:v1", f"{HOST}/shop/api@{D1}")]),
        pod("b", [("b", f"{HOST}/shop/api:stable", f"{HOST}/shop/api@{D1}")]),
    ]
    assert images_of_pods(pods, HOST).roots == [("shop/api", D1, "stable"), ("shop/api", D1, "v1")]


def test_a_repository_name_no_registry_serves_is_skipped_never_asked_for():
    # a hostile pod status: path tricks, upper case, a fragment; none reaches a request path
    pods = [
        pod("a", [("a", f"{HOST}/shop/api:v1", f"{HOST}/shop/../../v2/_catalog?n=1&x=@{D1}")]),
        pod("b", [("b", f"{HOST}/Other Team/Secret:v1", f"{HOST}/Other Team/Secret@{D2}")]),
        pod("c", [("c", f"{HOST}/shop/api#x:v1", f"{HOST}/shop/api#x@{D3}")]),
        pod("d", [("d", f"{HOST}/shop/web:v2", f"{HOST}/shop/web@{D1}")]),
    ]
    found = images_of_pods(pods, HOST)
    assert found.roots == [("shop/web", D1, "v2")]
    assert len(found.warnings) == 3
    assert all("expected a repository name" in w for w in found.warnings)


def test_hosts_compare_without_the_default_port_and_with_docker_hubs_aliases():
    pods = [pod("a", [("a", f"{HOST}/shop/api:v1", f"{HOST}:443/shop/api@{D1}")])]
    assert images_of_pods(pods, f"{HOST}:443").roots == [("shop/api", D1, "v1")]
    assert images_of_pods(pods, HOST).roots == [("shop/api", D1, "v1")]
    hub = [pod("p", [("p", "postgres:16", f"docker.io/library/postgres@{D2}")])]
    assert images_of_pods(hub, "registry-1.docker.io").roots == [("library/postgres", D2, "16")]
    other = images_of_pods(pods, f"{HOST}:5000")
    assert other.roots == [] and "not an image of registry" in other.warnings[0]
