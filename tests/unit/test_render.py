"""snapflow render / lint / schema from the command line: stable output, all-or-nothing writes,
one line per problem, --help everywhere."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest
import yaml

from steps.errors import UsageError
from tests.fixtures.policies import EXAMPLES, ROOT, example_files
from workflows.cli import build_parser, main
from workflows.render import GENERATED_MARK, render_files, write

COMMANDS = (
    "apply",
    "audit",
    "backups",
    "exporter",
    "fleet",
    "lint",
    "preflight",
    "render",
    "report",
    "restore",
    "run",
    "schema",
    "submit",
)


def _tree(root) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_examples(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert f"usage: snapflow {command}" in out
    assert "examples:" in out


def _subcommands(parser: argparse.ArgumentParser) -> set[str]:
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return {name for action in actions for name in action.choices}


def test_commands_lists_every_subcommand_snapflow_has():
    # a new subcommand joins COMMANDS, so its help is checked above
    assert _subcommands(build_parser()) == set(COMMANDS)


def test_top_level_help_lists_every_command(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    out = capsys.readouterr().out
    for command in COMMANDS:
        assert f"\n    {command} " in out or f"\n    {command}\n" in out


def test_fleet_status_has_help_with_examples(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["fleet", "status", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "usage: snapflow fleet status" in out
    assert "examples:" in out
    assert "FLEET" in out


def test_render_twice_gives_identical_files(tmp_path):
    # GIVEN every example policy WHEN rendered twice into two directories
    assert main(["render", *map(str, example_files()), "-o", str(tmp_path / "a")]) == 0
    assert main(["render", *map(str, example_files()), "-o", str(tmp_path / "b")]) == 0
    # THEN the files are byte for byte the same
    first, second = _tree(tmp_path / "a"), _tree(tmp_path / "b")
    assert first == second
    assert len(first) > 20


def test_render_writes_one_file_per_object_and_a_kustomization(tmp_path):
    out = tmp_path / "deploy"
    assert main(["render", str(EXAMPLES / "postgresql-statefulset.yaml"), "-o", str(out)]) == 0
    files = _tree(out)
    kustomization = yaml.safe_load(files.pop("kustomization.yaml"))
    assert kustomization["kind"] == "Kustomization"
    assert kustomization["resources"] == [
        "shop/serviceaccount-snapflow-orders-db-capture.yaml",
        "shop/serviceaccount-snapflow-orders-db-check.yaml",
        "shop/serviceaccount-snapflow-orders-db-consistent-point.yaml",
        "shop/serviceaccount-snapflow-orders-db-copy.yaml",
        "shop/serviceaccount-snapflow-orders-db-finalize.yaml",
        "shop/serviceaccount-snapflow-orders-db-init.yaml",
        "shop/serviceaccount-snapflow-orders-db-prepare-clone.yaml",
        "shop/serviceaccount-snapflow-orders-db-prune.yaml",
        "shop/serviceaccount-snapflow-orders-db-restore.yaml",
        "shop/serviceaccount-snapflow-orders-db-restore-volume.yaml",
        "shop/serviceaccount-snapflow-orders-db-verify.yaml",
        "shop/role-snapflow-orders-db-capture.yaml",
        "shop/role-snapflow-orders-db-check.yaml",
        "shop/role-snapflow-orders-db-consistent-point.yaml",
        "shop/role-snapflow-orders-db-copy.yaml",
        "shop/role-snapflow-orders-db-finalize.yaml",
        "shop/role-snapflow-orders-db-init.yaml",
        "shop/role-snapflow-orders-db-prepare-clone.yaml",
        "shop/role-snapflow-orders-db-prune.yaml",
        "shop/role-snapflow-orders-db-restore-volume.yaml",
        "shop/role-snapflow-orders-db-verify.yaml",
        "_cluster/clusterrole-snapflow.shop.orders-db-capture.yaml",
        "_cluster/clusterrole-snapflow.shop.orders-db-consistent-point.yaml",
        "_cluster/clusterrole-snapflow.shop.orders-db-restore.yaml",
        "_cluster/clusterrole-snapflow.shop.orders-db-restore-namespaces.yaml",
        "shop/rolebinding-snapflow-orders-db-capture.yaml",
        "shop/rolebinding-snapflow-orders-db-check.yaml",
        "shop/rolebinding-snapflow-orders-db-consistent-point.yaml",
        "shop/rolebinding-snapflow-orders-db-copy.yaml",
        "shop/rolebinding-snapflow-orders-db-finalize.yaml",
        "shop/rolebinding-snapflow-orders-db-init.yaml",
        "shop/rolebinding-snapflow-orders-db-prepare-clone.yaml",
        "shop/rolebinding-snapflow-orders-db-prune.yaml",
        "shop/rolebinding-snapflow-orders-db-restore-volume.yaml",
        "shop/rolebinding-snapflow-orders-db-verify.yaml",
        "shop/rolebinding-snapflow.shop.orders-db-restore.yaml",
        "_cluster/clusterrolebinding-snapflow.shop.orders-db-capture.yaml",
        "_cluster/clusterrolebinding-snapflow.shop.orders-db-consistent-point.yaml",
        "_cluster/clusterrolebinding-snapflow.shop.orders-db-restore-namespaces.yaml",
        "shop/configmap-snapflow-plan-orders-db.yaml",
        "shop/workflowtemplate-backup-orders-db.yaml",
        "shop/workflowtemplate-check-orders-db.yaml",
        "shop/workflowtemplate-init-orders-db.yaml",
        "shop/workflowtemplate-prune-orders-db.yaml",
        "shop/workflowtemplate-restore-app-orders-db.yaml",
        "shop/workflowtemplate-restore-orders-db.yaml",
        "shop/cronworkflow-backup-orders-db.yaml",
        "shop/cronworkflow-check-orders-db.yaml",
        "shop/cronworkflow-prune-orders-db.yaml",
    ]
    assert sorted(files) == sorted(kustomization["resources"])
    for rel, text in files.items():
        docs = list(yaml.safe_load_all(text))
        assert len(docs) == 1, rel
        assert text.startswith(GENERATED_MARK)
        kind, name = docs[0]["kind"], docs[0]["metadata"]["name"]
        assert rel.endswith(f"{kind.lower()}-{name}.yaml")


def test_render_without_output_prints_one_stream(capsys):
    assert main(["render", str(EXAMPLES / "mongodb.yaml")]) == 0
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    assert {d["kind"] for d in docs} >= {"WorkflowTemplate", "CronWorkflow", "Role", "ConfigMap"}


def test_a_bad_policy_prints_one_line_per_problem_and_writes_nothing(minimal_policy, write_policy, tmp_path):
    # GIVEN an earlier render and a policy with two mistakes
    out = tmp_path / "deploy"
    write(render_files([EXAMPLES / "mongodb.yaml"]), out)
    before = _tree(out)
    minimal_policy["spec"]["parallelism"] = 0
    minimal_policy["spec"]["snapshot"] = {"consistency": "atomic"}
    path = write_policy(minimal_policy)
    # WHEN rendered through the real command line
    result = subprocess.run(
        [sys.executable, "-m", "workflows", "render", str(path), "-o", str(out)],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    # THEN two lines, exit 2, no traceback, and the earlier output is untouched
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"{path}: spec.snapshot.consistency: expected 'volume' or 'group', got 'atomic'",
        f"{path}: spec.parallelism: expected a number >= 1, got 0",
    ]
    assert "Traceback" not in result.stderr
    assert _tree(out) == before


def test_render_refuses_to_replace_a_directory_it_did_not_write(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(UsageError, match="refusing to replace files it did not write"):
        write(render_files([EXAMPLES / "mongodb.yaml"]), out)
    assert (out / "notes.txt").read_text() == "keep me"


def test_rerender_removes_objects_of_a_dropped_policy(tmp_path):
    out = tmp_path / "deploy"
    write(render_files([EXAMPLES / "mongodb.yaml", EXAMPLES / "mariadb.yaml"]), out)
    assert (out / "wiki").is_dir()
    write(render_files([EXAMPLES / "mongodb.yaml"]), out)
    assert not (out / "wiki").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_render_refuses_a_local_policy(minimal_policy, write_policy, tmp_path, capsys):
    minimal_policy["spec"]["volumes"] = [{"path": "/srv/pgdata", "name": "data"}]
    minimal_policy["spec"]["quiesce"] = []
    path = write_policy(minimal_policy)
    assert main(["render", str(path), "-o", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"{path}: spec.volumes[0].path: expected pvc: local paths run with the local runner, not in a cluster"
    ]
    assert not (tmp_path / "out").exists()


def test_render_refuses_undeclared_repository_sharing(minimal_policy, write_policy, capsys):
    other = yaml.safe_load(yaml.safe_dump(minimal_policy))
    other["metadata"]["namespace"] = "billing"
    path = write_policy([minimal_policy, other])
    assert main(["render", str(path)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all("spec.repository.shared: expected true" in line for line in err)


def test_lint_passes_the_examples_and_lists_what_they_need(capsys):
    assert main(["lint", *map(str, example_files())]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ok: 6 policies, ")
    assert "needs Secret shop/snapflow-s3 (keys: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)" in out
    assert "needs ConfigMap media/storage-ca (keys: ca.crt)" in out


def test_lint_reports_bad_policies_with_exit_2(minimal_policy, write_policy, capsys):
    minimal_policy["spec"]["volumes"][0]["sizeGi"] = 10
    path = write_policy(minimal_policy)
    assert main(["lint", str(path)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"{path}: spec.volumes[0].sizeGi: unknown field (expected one of: block, blockTracking, name, path, pvc, role, target)"
    ]


def test_schema_writes_a_file(tmp_path):
    target = tmp_path / "schema.json"
    assert main(["schema", "-o", str(target)]) == 0
    assert '"ProtectionPolicy"' in target.read_text()
