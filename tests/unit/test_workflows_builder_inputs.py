"""The Hera builder works from a pipeline alone: what each step's pod gets (repository access, block
mode, resources, deadline, metrics) is carried by the step, and the template's settings by the
pipeline; the builder never reads the policy."""

from __future__ import annotations

import ast
import copy
from dataclasses import replace
from pathlib import Path

import pytest

from tests.fixtures.policies import MINIMAL_POLICY
from workflows.hera_builder import build_workflow_template
from workflows.pipeline import Metrics, Needs
from workflows.pipelines import backup_pipeline, prune_pipeline
from workflows.policy import parse_policy

ROOT = Path(__file__).resolve().parents[2]


def _policy(**spec):
    doc = copy.deepcopy(MINIMAL_POLICY)
    doc["spec"].update(spec)
    return parse_policy(doc, "p.yaml")


def test_the_builder_imports_nothing_of_the_policy():
    tree = ast.parse((ROOT / "workflows/hera_builder.py").read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not {m for m in imported if m and m.startswith("workflows.policy")}


def test_prune_gets_its_own_keys_and_the_backup_the_append_only_ones():
    repo = copy.deepcopy(MINIMAL_POLICY["spec"]["repository"])
    repo["pruneCredentialsSecret"] = {"name": "snapflow-s3-prune"}
    policy = _policy(repository=repo)
    (prune, _dry_run) = prune_pipeline(policy).steps
    copy_step = backup_pipeline(policy).step("copy-data")
    assert prune.repository.credentials.name == "snapflow-s3-prune"
    assert copy_step.repository.credentials.name == "snapflow-s3"
    env = build_workflow_template(prune_pipeline(policy)).to_dict()["spec"]["templates"]
    (template,) = [t for t in env if t["name"] == "prune"]
    refs = {e["valueFrom"]["secretKeyRef"]["name"] for e in template["container"]["env"] if "valueFrom" in e}
    assert refs == {"snapflow-s3-prune"}


def test_a_block_volume_is_carried_by_its_copy_step_and_mounted_as_a_device():
    policy = _policy(volumes=[{"pvc": "data-orders-db-0", "name": "data", "block": True}])
    pipeline = backup_pipeline(policy)
    assert pipeline.step("copy-data").block and not pipeline.step("verify").block
    templates = build_workflow_template(pipeline).to_dict()["spec"]["templates"]
    (copy_template,) = [t for t in templates if t["name"] == "copy-data"]
    assert copy_template["container"]["volumeDevices"] == [
        {"name": "data", "devicePath": "/dev/snapflow/data"}
    ]
    assert "data" not in {m["name"] for m in copy_template["container"]["volumeMounts"]}


def test_steps_carry_their_deadline_resources_and_metrics():
    policy = _policy(workflow={"stepTimeouts": {"copy": 1234}, "stepMemoryLimit": "300Mi"})
    pipeline = backup_pipeline(policy)
    assert pipeline.step("copy-data").timeout_s == 1234
    assert pipeline.step("consistent-point").timeout_s == 30 + 300  # the freeze deadline and a margin
    assert dict(pipeline.step("capture").resources.limits) == {"memory": "300Mi"}
    assert Needs.DATA_MOVER in pipeline.step("copy-data").needs
    assert dict(pipeline.step("copy-data").resources.limits) == {"memory": "2Gi"}
    assert pipeline.step("copy-data").metrics is Metrics.COPY
    assert pipeline.step("consistent-point").metrics is Metrics.FREEZE_WINDOW
    assert pipeline.exit_step is not None and pipeline.exit_step.metrics is Metrics.OUTCOME


def test_a_pipeline_without_template_settings_is_refused():
    pipeline = replace(backup_pipeline(_policy()), settings=None)
    with pytest.raises(ValueError, match="no template settings"):
        build_workflow_template(pipeline)
