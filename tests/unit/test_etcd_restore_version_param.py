"""The etcd restore WorkflowTemplate's allow-version-mismatch parameter: false by default, handed to
etcd-restore as --allow-version-mismatch VALUE in the cluster and in a local run, and parsed there."""

from __future__ import annotations

from pathlib import Path

from steps.commands import etcd_restore
from tests.fixtures.policies import ROOT
from tests.scenarios.test_local_sources_files import args_of, option, policy_of
from workflows.render import render_files


def test_the_rendered_restore_template_passes_the_parameter_to_every_etcd_restore_step():
    objects = {
        (o.kind, o.name): o.obj for o in render_files([ROOT / "examples" / "sources" / "etcd.yaml"]).objects
    }
    (restore,) = [
        o for (kind, name), o in objects.items() if kind == "WorkflowTemplate" and name.startswith("restore-")
    ]
    params = {p["name"]: p for p in restore["spec"]["arguments"]["parameters"]}
    assert params["allow-version-mismatch"]["value"] == "false"
    assert sorted(params["allow-version-mismatch"]["enum"]) == ["false", "true"]
    steps = [t for t in restore["spec"]["templates"] if "container" in t]
    assert steps
    for t in steps:
        args = t["container"]["args"]
        assert (
            args[args.index("--allow-version-mismatch") + 1]
            == "{{workflow.parameters.allow-version-mismatch}}"
        )


def test_a_local_run_hands_the_value_and_etcd_restore_parses_it(tmp_path: Path):
    import argparse

    policy = policy_of({"etcd": {"tls": {"hostPath": "/etc/kubernetes/pki/etcd"}}})
    parser = argparse.ArgumentParser()
    etcd_restore.configure(parser)
    for value in ("true", "false"):
        args, _ = args_of(tmp_path, policy, "restore", {}, name="cp1", **{"peer-url": "https://10.0.0.1:2380",
                          "allow-version-mismatch": value})  # fmt: skip
        assert option(args, "--allow-version-mismatch") == value
        assert parser.parse_args(args).allow_version_mismatch == value
    # the flag alone still means true, and its absence false
    base = [
        "--repo",
        "file:///r",
        "--data-dir",
        "/d",
        "--name",
        "a",
        "--initial-advertise-peer-urls",
        "http://h:1",
    ]
    assert parser.parse_args([*base, "--allow-version-mismatch"]).allow_version_mismatch == "true"
    assert parser.parse_args(base).allow_version_mismatch == "false"
