"""The single-volume restore template's ``overwrite`` parameter: ``refuse`` (the default) refuses a
non-empty target PVC; every mode reaches the restore step as ``--overwrite MODE``. Run by the
local runner with the same :class:`Pipeline` the WorkflowTemplate is rendered from; the rendered Argo
argument is checked against the restore step's own parser. Repository on SeaweedFS."""

from __future__ import annotations

import argparse
import dataclasses
import re

from tests.fixtures.k8s_app import run_step


def _restore(tmp_path, local_policy, run_settings, target, **params: str):
    from workflows.local.local_policy import load_local_policy
    from workflows.local.runner import run_local

    policy = load_local_policy(local_policy(tmp_path / "unused-source"))
    given = {"snapshot": params.pop("snapshot"), "target-pvc": str(target), **params}
    settings = dataclasses.replace(run_settings, params=given)
    return run_local(policy, "restore", settings, restore_target=str(target))


def test_overwrite_parameter_refuses_a_non_empty_target_by_default_and_passes_the_mode_through(
    tmp_path, s3_repo, local_policy, run_settings
):
    # GIVEN a snapshot of a directory, and a target that already holds an older copy of one file and a
    # file of its own
    assert run_step("init", "--repo", s3_repo).rc == 0
    src = tmp_path / "unused-source"
    src.mkdir()
    (src / "data.bin").write_bytes(b"new" * 1000)
    res = run_step("copy", "--repo", s3_repo, "--source", src)
    assert res.rc == 0, res.stderr
    snapshot = res.last_line
    target = tmp_path / "pvc"
    target.mkdir()
    (target / "data.bin").write_bytes(b"old")
    (target / "mine.txt").write_text("kept\n")

    # WHEN the restore pipeline runs with its defaults, then with overwrite=always
    refused = _restore(tmp_path, local_policy, run_settings, target, snapshot=snapshot)
    old = (target / "data.bin").read_bytes()
    always = _restore(tmp_path, local_policy, run_settings, target, snapshot=snapshot, overwrite="always")

    # THEN the first is refused with exit 2 and writes nothing; the second replaces what is in the way
    assert not refused.ok and refused.steps[0].exit_code == 2, refused.steps[0].error
    assert "data.bin" in refused.steps[0].error
    assert old == b"old"
    assert always.ok, always.steps[0].error
    assert (target / "data.bin").read_bytes() == b"new" * 1000
    assert (target / "mine.txt").read_text() == "kept\n"


def test_rendered_overwrite_argument_parses_as_the_restore_step_expects(rendered_examples):
    from steps.commands import restore
    from workflows.pipeline import OVERWRITE_CHOICES

    # GIVEN the rendered single-volume restore template of the PostgreSQL example
    wt = next(
        o.obj
        for o in rendered_examples["postgresql-statefulset.yaml"].ordered()
        if o.kind == "WorkflowTemplate" and o.obj["metadata"]["name"] == "restore-orders-db"
    )
    (step,) = [t for t in wt["spec"]["templates"] if t["name"] == "restore"]
    args = step["container"]["args"]
    params = {p["name"]: p for p in wt["spec"]["arguments"]["parameters"]}
    assert params["overwrite"]["value"] == "refuse"
    assert tuple(params["overwrite"]["enum"]) == OVERWRITE_CHOICES
    parser = argparse.ArgumentParser()
    restore.configure(parser)

    # WHEN Argo fills in each value of the parameter
    for mode in OVERWRITE_CHOICES:
        given = {name: p.get("value", "abc") for name, p in params.items()} | {"overwrite": mode}
        argv = [
            re.sub(r"\{\{workflow\.parameters\.([-\w]+)\}\}", lambda m, g=given: g[m[1]], a) for a in args[1:]
        ]
        parsed = parser.parse_args(argv)

        # THEN every mode reaches the step as its --overwrite
        assert parsed.overwrite == mode
        assert parsed.target == "/snapflow/target"
