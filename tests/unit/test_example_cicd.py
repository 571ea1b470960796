"""The CI/CD examples (examples/cicd: Argo Workflows and Gitea as apps, the registry policy for their
images) lint clean, and the images policy renders the narrow pod-reading RBAC its imagesOf needs.
examples/*.yaml are linted by tests/unit/test_render.py; these live in a folder of their own."""

from __future__ import annotations

import pytest

from tests.fixtures.policies import EXAMPLES
from workflows.cli import main
from workflows.policy import load_policies
from workflows.render import render_files

CICD = sorted((EXAMPLES / "cicd").glob("*.yaml"))


def test_the_cicd_examples_are_found():
    assert {p.name for p in CICD} >= {"argo-workflows.yaml", "gitea.yaml", "ci-images.yaml"}


@pytest.mark.slow  # kubernetes-validate of every rendered object
@pytest.mark.parametrize("path", CICD, ids=[p.stem for p in CICD])
def test_each_cicd_example_lints_clean(path, capsys):
    code = main(["lint", str(path)])
    out = capsys.readouterr()
    assert code in (0, None), out.err + out.out
    assert "error" not in out.err.lower()


def test_argo_workflows_protects_its_namespace_and_its_archive_database_in_backup_mode():
    (loaded,) = load_policies([EXAMPLES / "cicd" / "argo-workflows.yaml"])
    spec = loaded.policy.spec
    assert loaded.policy.namespace == "argo" and spec.selector is None  # every object of the namespace
    assert [t.hook for t in spec.quiesce] == ["postgresql"]
    assert [v.name for v in spec.volumes] == ["archive"]


def test_the_images_policy_reads_pods_only_in_the_namespaces_it_names():
    path = EXAMPLES / "cicd" / "ci-images.yaml"
    objects = [o.obj for o in render_files([path]).objects]
    roles = {
        (o["metadata"]["namespace"], o["metadata"]["name"]): o["rules"]
        for o in objects
        if o["kind"] == "Role" and o["metadata"]["name"].endswith("-registry-backup")
    }
    pods = [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]
    assert roles[("argo", "snapflow-ci-images-registry-backup")] == pods
    assert roles[("gitea", "snapflow-ci-images-registry-backup")] == pods
    home = roles[("snapflow-registry", "snapflow-ci-images-registry-backup")]
    assert not [r for r in home if "pods" in r["resources"]]  # no pod of its own namespace is read
    assert not [o for o in objects if o["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    bindings = [
        o for o in objects if o["kind"] == "RoleBinding" and o["metadata"]["namespace"] in ("argo", "gitea")
    ]
    assert {b["subjects"][0]["namespace"] for b in bindings} == {"snapflow-registry"}
    (backup,) = [
        o for o in objects if o["kind"] == "WorkflowTemplate" and o["metadata"]["name"] == "backup-ci-images"
    ]
    (step,) = [t for t in backup["spec"]["templates"] if t["name"] == "registry-backup"]
    args = step["container"]["args"]
    assert [args[i + 1] for i, a in enumerate(args) if a == "--images-of"] == [
        "argo:app.kubernetes.io/part-of=argo-workflows",
        "argo:app.kubernetes.io/name=postgresql",
        "gitea",
    ]
    # finalize, the other step that would call nothing, still gets no token
    (final,) = [t for t in backup["spec"]["templates"] if t["name"] == "finalize"]
    assert final["automountServiceAccountToken"] is False


def test_the_images_policy_pods_pass_pod_security_restricted():
    from steps.manifests.podsecurity import check
    from workflows.pod_security import argo_pods

    for o in render_files([EXAMPLES / "cicd" / "ci-images.yaml"]).objects:
        if o.kind == "WorkflowTemplate":
            pods = list(argo_pods(o.obj))
            assert pods
            for template, spec, notes in pods:
                assert not check(spec, "restricted", notes), f"{o.name}/{template}"


def test_the_cicd_examples_validate_against_the_exported_json_schema():
    import jsonschema
    import yaml

    from workflows.policy import json_schema

    validator = jsonschema.Draft202012Validator(json_schema())
    for path in CICD:
        for doc in yaml.safe_load_all(path.read_text()):
            assert not list(validator.iter_errors(doc)), path
    # an unknown key in an imagesOf entry is an editor error too
    doc = yaml.safe_load((EXAMPLES / "cicd" / "ci-images.yaml").read_text())
    doc["spec"]["source"]["registry"]["imagesOf"][0]["labels"] = {"app": "x"}
    assert list(validator.iter_errors(doc))


def test_a_shared_account_is_told_what_imagesof_needs(tmp_path, capsys):
    import yaml

    doc = yaml.safe_load((EXAMPLES / "cicd" / "ci-images.yaml").read_text())
    doc["spec"]["workflow"] = {"serviceAccountName": "ci-backup"}
    path = tmp_path / "shared.yaml"
    path.write_text(yaml.safe_dump(doc))
    rendering = render_files([path])
    assert not [o for o in rendering.objects if o.kind in ("Role", "RoleBinding")]
    (note,) = [w for w in rendering.warnings if "imagesOf" in w]
    assert "'ci-backup'" in note and "get and list on pods in namespaces argo, gitea" in note
