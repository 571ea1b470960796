"""snapflow render --fleet: one directory per cluster, every object labelled with its cluster and
annotated with a stable render-hash, every cluster checked by the same lint as a single render; a bad
cluster is reported and the others are still written."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from tests.fixtures import policies
from workflows.cli import main
from workflows.fleetdef.model import load_fleet
from workflows.fleetdef.render import CLUSTER_LABEL, RENDER_HASH, render_fleet, render_hash
from workflows.validate import lint_rendering

EXAMPLE = policies.EXAMPLES / "fleet"


@pytest.fixture
def fleet_dir(tmp_path: Path) -> Path:
    target = tmp_path / "fleet"
    shutil.copytree(EXAMPLE, target)
    return target


@pytest.fixture(scope="module")
def rendered_example(tmp_path_factory) -> tuple[Path, str]:
    """The example fleet rendered once by the command: (output folder, its stderr)."""
    import contextlib
    import io

    out = tmp_path_factory.mktemp("fleet") / "gitops"
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main(["render", "--fleet", str(EXAMPLE / "fleet.yaml"), "-o", str(out)]) == 0
    return out, err.getvalue()


def _objects(directory: Path) -> list[tuple[str, dict]]:
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    return [(rel, yaml.safe_load((directory / rel).read_text())) for rel in kustomization["resources"]]


def _edit(fleet_dir: Path, change) -> Path:
    path = fleet_dir / "fleet.yaml"
    doc = yaml.safe_load(path.read_text())
    change(doc)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_each_cluster_gets_a_directory_ready_for_kubectl_apply_k(rendered_example):
    # WHEN the example fleet is rendered
    out, err = rendered_example
    # THEN there is one directory per cluster, each with a kustomization listing every file it holds
    assert sorted(p.name for p in out.iterdir()) == ["prod-eu", "prod-us"]
    for cluster in ("prod-eu", "prod-us"):
        listed = {rel for rel, _ in _objects(out / cluster)}
        on_disk = {str(p.relative_to(out / cluster)) for p in (out / cluster).rglob("*.yaml")}
        assert on_disk == listed | {"kustomization.yaml"}
    # AND the wiki runs in the EU only, and the US cluster's objects name its own bucket
    eu_names = {obj["metadata"]["name"] for _, obj in _objects(out / "prod-eu")}
    us_text = "".join((out / "prod-us" / rel).read_text() for rel, _ in _objects(out / "prod-us"))
    assert "backup-wiki-db" in eu_names
    assert "wiki-db" not in us_text and "s3://backups-us/shop" in us_text and "backups-eu" not in us_text
    assert f"wrote 50 files to {out / 'prod-us'}" in err


def test_every_object_carries_its_cluster_and_a_hash_of_its_content(rendered_example):
    out, _ = rendered_example
    for cluster in ("prod-eu", "prod-us"):
        for rel, obj in _objects(out / cluster):
            meta = obj["metadata"]
            assert meta["labels"][CLUSTER_LABEL] == cluster, rel
            assert meta["annotations"][RENDER_HASH] == render_hash(obj), rel
            assert meta["annotations"][RENDER_HASH].startswith("sha256:")


def test_the_render_hash_is_stable_and_changes_with_the_content(rendered_example):
    out, _ = rendered_example
    fleet = load_fleet(EXAMPLE / "fleet.yaml")
    (eu,) = [r for r in render_fleet(fleet) if r.name == "prod-eu" and r.ok]
    first = {rel: (out / "prod-eu" / rel).read_text() for rel in eu.rendering.files()}
    assert eu.rendering.files() == first  # rendered again, byte for byte
    (_rel, obj) = next(
        (p, o) for p, o in ((p, yaml.safe_load(t)) for p, t in first.items()) if o["kind"] == "ConfigMap"
    )
    obj["data"]["plan.json"] += " "
    assert render_hash(obj) != obj["metadata"]["annotations"][RENDER_HASH]


@pytest.mark.slow
def test_every_cluster_passes_the_full_lint_of_a_single_render():
    for result in render_fleet(load_fleet(EXAMPLE / "fleet.yaml")):
        assert result.ok, result.problems
        assert lint_rendering(result.rendering) == [], result.name


@pytest.mark.slow
def test_one_bad_cluster_is_reported_and_the_others_are_written(fleet_dir, tmp_path, capsys):
    # GIVEN an earlier output, then a fleet whose prod-us entry names an inline token
    out = tmp_path / "gitops"
    assert main(["render", "--fleet", str(fleet_dir / "fleet.yaml"), "-o", str(out)]) == 0
    before = {p: p.read_bytes() for p in (out / "prod-us").rglob("*") if p.is_file()}
    capsys.readouterr()

    def inline_token(doc):
        doc["spec"]["clusters"][1]["argoServer"] = {"url": "https://argo.us:2746", "token": "s3cr3t"}
        doc["spec"]["policies"][0]["files"] = ["policies/orders-db.yaml", "policies/wiki-db.yaml"]

    path = _edit(fleet_dir, inline_token)
    # WHEN it is rendered again
    code = main(["render", "--fleet", str(path), "-o", str(out)])
    # THEN the exit status is non-zero, the problem is one line naming the field, the token is not shown
    err = capsys.readouterr().err
    assert code == 2
    assert f"{path}: spec.clusters[1].argoServer.token: expected no token in the fleet file" in err
    assert "s3cr3t" not in err and "Traceback" not in err
    assert "not rendered: prod-us (1 of 2 clusters written)" in err
    # AND prod-eu is written (now with the wiki in every placement), prod-us is left as it was
    assert f"wrote 97 files to {out / 'prod-eu'}" in err
    assert {p: p.read_bytes() for p in (out / "prod-us").rglob("*") if p.is_file()} == before


def test_a_cluster_whose_override_breaks_a_policy_fails_alone(fleet_dir, tmp_path, capsys):
    path = _edit(fleet_dir, lambda d: d["spec"]["overrides"][0]["schedule"].update(cron="61 * * * *"))
    out = tmp_path / "gitops"
    assert main(["render", "--fleet", str(path), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "spec.schedule.cron" in line]
    assert len(lines) == 1 and lines[0].startswith(f"{path}: cluster prod-us: ")
    assert "(with overrides[0])" in lines[0]
    assert sorted(p.name for p in out.iterdir()) == ["prod-eu"]


@pytest.mark.slow
def test_a_cluster_directory_the_fleet_no_longer_names_is_pointed_out(fleet_dir, tmp_path, capsys):
    out = tmp_path / "gitops"
    assert main(["render", "--fleet", str(fleet_dir / "fleet.yaml"), "-o", str(out)]) == 0

    def rename(doc):
        doc["spec"]["clusters"][1]["name"] = "prod-us-2"
        doc["spec"]["overrides"][0]["cluster"] = "prod-us-2"

    assert main(["render", "--fleet", str(_edit(fleet_dir, rename)), "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"{out / 'prod-us'}: warning: not a cluster of {fleet_dir / 'fleet.yaml'} any more" in err
    assert (out / "prod-us").is_dir()  # never removed by render


def test_a_directory_it_did_not_write_is_not_replaced(tmp_path, capsys):
    out = tmp_path / "gitops"
    (out / "prod-eu").mkdir(parents=True)
    (out / "prod-eu" / "mine.yaml").write_text("kept: true\n")
    assert main(["render", "--fleet", str(EXAMPLE / "fleet.yaml"), "-o", str(out)]) == 2
    assert "refusing to replace files it did not write" in capsys.readouterr().err
    assert (out / "prod-eu" / "mine.yaml").read_text() == "kept: true\n"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["render", "--fleet", "F", "p.yaml", "-o", "x"], "POLICY: expected none with --fleet"),
        (["render", "--fleet", "F"], "--output: required with --fleet"),
        (["render"], "POLICY: required"),
    ],
)
def test_render_arguments_are_checked_in_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and len(err.splitlines()) == 1
