"""preflight of a registry policy with imagesOf checks that registry-backup's account may read the pods
of each namespace named (``rbac-source``); other source policies have no rights to check."""

from __future__ import annotations

import yaml

from steps.drivers.kube import KubeClient, KubeSettings
from tests.fixtures.rendered import apply_rendered
from workflows.cluster_preflight import preflight_policy
from workflows.policy import load_policies
from workflows.render import render_files


def _policy(tmp_path, images_of: bool):
    registry = {"url": "https://registry.example:5000", "credentialsSecret": {"name": "registry-robot"}}
    if images_of:
        registry["imagesOf"] = [{"namespace": "shop", "selector": "app=web"}, {"namespace": "blog"}]
    else:
        registry["repositories"] = ["shop/*"]
    doc = {
        "apiVersion": "snapflow.io/v1alpha1",
        "kind": "ProtectionPolicy",
        "metadata": {"name": "images", "namespace": "snapflow-registry"},
        "spec": {
            "source": {"registry": registry},
            "repository": {
                "url": "s3://backups/registry",
                "credentialsSecret": {"name": "snapflow-s3"},
                "passwordSecret": {"name": "snapflow-repository"},
            },
        },
    }
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path, load_policies([path])[0].policy


def _checks(kube_server, tmp_path, policy) -> dict[str, tuple[str, str]]:
    kubeconfig = kube_server.write_kubeconfig(tmp_path / "kubeconfig")
    with KubeClient(KubeSettings.from_env(kubeconfig=str(kubeconfig))) as client:
        items = preflight_policy(client, policy, repository=False).items
    return {c["check"]: (c["status"], c["message"]) for c in items}


def test_images_of_needs_the_pod_reads_the_rendered_rbac_grants(kube_server, tmp_path):
    # GIVEN a registry policy backing up the images of pods in two namespaces, its RBAC applied
    path, policy = _policy(tmp_path, images_of=True)
    for ns in ("snapflow-registry", "shop", "blog"):
        kube_server.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    objects = [o.obj for o in render_files([path]).ordered()]
    apply_rendered(kube_server, objects)
    account = "snapflow-registry/snapflow-images-registry-backup"

    # THEN preflight finds the rights in both namespaces
    status, message = _checks(kube_server, tmp_path, policy)["rbac-source"]
    assert status == "ok" and f"{account} in blog" in message and f"{account} in shop" in message

    # ... and names the one missing once the Role in blog is gone
    (role,) = [o for o in objects if o["kind"] == "Role" and o["metadata"]["namespace"] == "blog"]
    kube_server.delete("roles", role["metadata"]["name"], "blog")
    status, message = _checks(kube_server, tmp_path, policy)["rbac-source"]
    assert status == "fail"
    assert message == (
        f"may not: {account}: get pods in namespace blog; {account}: list pods in namespace blog "
        "(apply the rendered RBAC)"
    )


def test_a_registry_policy_by_repository_patterns_has_no_rights_to_check(kube_server, tmp_path):
    _path, policy = _policy(tmp_path, images_of=False)
    kube_server.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "snapflow-registry"}})
    assert "rbac-source" not in _checks(kube_server, tmp_path, policy)
