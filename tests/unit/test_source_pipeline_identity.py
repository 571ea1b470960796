"""The backup pipeline of a source policy: the etcd, registry and bucket steps get the app's identity (cluster,
namespace, app, policy) as copy does, and finalize gets spec.anomaly.lockLastGood; the rendered
arguments parse with the steps' own parser."""

from __future__ import annotations

import pytest
import yaml

from tests.fixtures.policies import ROOT
from workflows.render import render_files

SOURCE_STEPS = {"etcd": "etcd-snapshot", "registry": "registry-backup", "bucket": "bucket-backup"}


def _backup_templates(path) -> dict[str, dict]:
    (backup,) = [
        o.obj
        for o in render_files([path]).objects
        if o.kind == "WorkflowTemplate" and o.name.startswith("backup-")
    ]
    return {t["name"]: t for t in backup["spec"]["templates"]}


def _parse(args: list[str]):
    from steps.cli import build_parser

    return build_parser().parse_args(args)


@pytest.mark.parametrize("kind", sorted(SOURCE_STEPS))
def test_source_step_records_the_apps_identity_and_its_arguments_parse(kind):
    path = ROOT / "examples" / "sources" / f"{kind}.yaml"
    policy = yaml.safe_load(path.read_text())
    step = _backup_templates(path)[SOURCE_STEPS[kind]]
    args = step["container"]["args"]
    assert args[0] == SOURCE_STEPS[kind]
    parsed = _parse(args)
    name = policy["metadata"]["name"]
    assert (parsed.cluster, parsed.namespace, parsed.app, parsed.policy) == (
        policy["spec"]["cluster"],
        policy["metadata"]["namespace"],
        name,  # (a source policy's app is its own name)
        name,
    )


def test_bucket_policy_hands_lock_last_good_to_finalize(tmp_path):
    doc = yaml.safe_load((ROOT / "examples" / "sources" / "bucket.yaml").read_text())
    doc["spec"]["anomaly"] = {"lockLastGood": "14d"}
    path = tmp_path / "bucket.yaml"
    path.write_text(yaml.safe_dump(doc))
    args = _backup_templates(path)["finalize"]["container"]["args"]
    assert args[args.index("--lock-last-good") + 1] == "14d"
    assert _parse(args).lock_last_good == "14d"
    # (without the setting, finalize locks nothing)
    plain = _backup_templates(ROOT / "examples" / "sources" / "bucket.yaml")["finalize"]["container"]["args"]
    assert "--lock-last-good" not in plain


@pytest.mark.slow  # (six backups through copy, verify and finalize: about 1.5 s)
def test_finalize_of_a_bucket_plan_with_lock_last_good_names_the_last_good_backup(source_repo, tmp_path):
    # GIVEN a bucket's history, then a backup after a mass deletion, committed with --lock-last-good
    records = source_repo.mass_deletion(
        "bucket", tmp_path / "bucket", "uploads", 40, "--lock-last-good", "14d"
    )
    # THEN it is flagged, and the lock went to the newest unflagged backup of the bucket's app (this
    # repository has no Object Lock: nothing could be locked, and the record says so)
    anomaly = records[-1]["anomaly"]
    assert anomaly["flagged"] is True
    assert anomaly["lockedLastGood"]["backupId"] == records[-2]["backup_id"]
    assert anomaly["lockedLastGood"]["until"] is None and anomaly["lockedLastGood"]["extended"] == 0
