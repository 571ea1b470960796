"""The restore workflow of a bucket policy offers older versions: its ``versions`` (latest or all) and
``as-of`` parameters reach ``bucket-restore`` in both the writing and the dry-run step."""

from __future__ import annotations

from pathlib import Path

import yaml

from workflows.hera_builder import build_workflow_template
from workflows.pipeline_sources import source_pipelines
from workflows.policy import parse_policy

ROOT = Path(__file__).resolve().parents[2]


def test_versions_and_as_of_are_parameters_of_the_bucket_restore():
    policy = parse_policy(yaml.safe_load((ROOT / "examples/sources/bucket.yaml").read_text()), "bucket.yaml")
    restore = next(p for p in source_pipelines(policy) if p.name == "restore")
    template = build_workflow_template(restore).to_dict()
    params = {p["name"]: p for p in template["spec"]["arguments"]["parameters"]}
    assert params["versions"]["value"] == "latest" and params["versions"]["enum"] == ["latest", "all"]
    assert params["as-of"]["value"] == ""
    steps = [t for t in template["spec"]["templates"] if t["name"].startswith("bucket-restore")]
    assert len(steps) == 2  # writing, and the dry run
    for step in steps:
        args = step["container"]["args"]
        assert args[args.index("--versions") + 1] == "{{workflow.parameters.versions}}"
        assert args[args.index("--as-of") + 1] == "{{workflow.parameters.as-of}}"
