"""The fleet file: clusters, placements and per-cluster overrides, validated like a policy (one line per
problem naming the file and the field); a bad cluster entry is set aside, the others go on."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import pytest
import yaml

from tests.fixtures import policies
from workflows.fleetdef.model import load_fleet, merge_patch, policies_for
from workflows.policy_fields import PolicyError

EXAMPLE = policies.EXAMPLES / "fleet"


@pytest.fixture
def fleet_dir(tmp_path: Path) -> Path:
    """A copy of examples/fleet to change."""
    target = tmp_path / "fleet"
    shutil.copytree(EXAMPLE, target)
    return target


def _doc(fleet_dir: Path) -> dict:
    return yaml.safe_load((fleet_dir / "fleet.yaml").read_text())


def _write(fleet_dir: Path, doc: dict) -> Path:
    path = fleet_dir / "fleet.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _problems(path: Path) -> list[str]:
    with pytest.raises(PolicyError) as err:
        load_fleet(path)
    return err.value.problems


def _cluster(fleet, name):
    return next(c for c in fleet.clusters if c.name == name)


def test_the_example_fleet_loads_without_warnings():
    fleet = load_fleet(EXAMPLE / "fleet.yaml")
    assert [c.name for c in fleet.clusters] == ["prod-eu", "prod-us"]
    assert fleet.bad_clusters == [] and fleet.warnings == []


def test_the_example_loops_over_policies_do_not_pick_up_the_fleet_files():
    assert all(p.parent == policies.EXAMPLES for p in policies.example_files())
    assert "fleet.yaml" not in {p.name for p in policies.example_files()}


def test_policies_are_placed_by_cluster_labels_and_namespaces():
    fleet = load_fleet(EXAMPLE / "fleet.yaml")
    eu = policies_for(fleet, _cluster(fleet, "prod-eu"))
    us = policies_for(fleet, _cluster(fleet, "prod-us"))
    assert eu.problems == [] and us.problems == []
    assert sorted(p.policy.name for p in eu.loaded) == ["orders-db", "wiki-db"]
    assert [p.policy.name for p in us.loaded] == ["orders-db"]


def test_every_policy_records_the_cluster_it_runs_on():
    fleet = load_fleet(EXAMPLE / "fleet.yaml")
    for cluster in fleet.clusters:
        assert {p.policy.spec.cluster for p in policies_for(fleet, cluster).loaded} == {cluster.name}


def test_an_override_changes_only_its_cluster():
    # GIVEN the example, whose override moves prod-us to a US bucket, time zone and storage classes
    fleet = load_fleet(EXAMPLE / "fleet.yaml")
    (eu,) = [
        p.policy
        for p in policies_for(fleet, _cluster(fleet, "prod-eu")).loaded
        if p.policy.name == "orders-db"
    ]
    (us,) = [p.policy for p in policies_for(fleet, _cluster(fleet, "prod-us")).loaded]
    # THEN the merged fields change on prod-us, the rest of the section is kept
    assert us.spec.repository.url == "s3://backups-us/shop"
    assert us.spec.repository.endpoint == "https://minio.storage.prod-us.example.com:9000"
    assert us.spec.repository.password_secret == eu.spec.repository.password_secret
    assert us.spec.schedule.timezone == "America/New_York" and us.spec.schedule.cron == eu.spec.schedule.cron
    assert us.spec.verify.restore_test.storage_class_name == "gp3"
    assert us.spec.snapshot.class_name == "ebs-snapclass"
    # AND prod-eu keeps the policy's own settings
    assert eu.spec.repository.url == "s3://backups-eu/shop"
    assert eu.spec.schedule.timezone == "Europe/Berlin"
    assert eu.spec.verify.restore_test.storage_class_name == "csi-rbd"


def test_an_inline_token_is_refused_without_echoing_it_and_the_other_cluster_stays(fleet_dir):
    doc = _doc(fleet_dir)
    doc["spec"]["clusters"][1]["argoServer"] = {"url": "https://argo.example:2746", "token": "s3cr3t-t0ken"}
    fleet = load_fleet(_write(fleet_dir, doc))
    assert [c.name for c in fleet.clusters] == ["prod-eu"]
    (bad,) = fleet.bad_clusters
    assert bad.name == "prod-us"
    assert bad.problems == [
        f"{fleet_dir / 'fleet.yaml'}: spec.clusters[1].argoServer.token: expected no token in the fleet "
        "file: name a Secret (tokenSecret) or a file (tokenFile)"
    ]
    assert "s3cr3t" not in "".join(bad.problems)


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        (
            {"name": "dr", "labels": {"env": "dr"}},
            "spec.clusters[2].kubeContext: expected a kubeContext or an argoServer",
        ),
        ({"name": "Bad_Name", "kubeContext": "x"}, "spec.clusters[2].name: expected a DNS-1123 label"),
        ({"name": "dr", "kubeContext": "dr", "region": "eu"}, "spec.clusters[2].region: unknown field"),
        (
            {
                "name": "dr",
                "argoServer": {
                    "url": "https://a:2746",
                    "tokenFile": "t",
                    "tokenSecret": {"namespace": "argo", "name": "t"},
                },
            },
            "spec.clusters[2].argoServer.tokenFile: expected either tokenSecret or tokenFile, not both",
        ),
        ("dr", "spec.clusters[2]: expected a mapping, got string"),
    ],
)
def test_a_bad_cluster_entry_is_one_line_naming_the_field(fleet_dir, entry, expected):
    doc = _doc(fleet_dir)
    doc["spec"]["clusters"].append(entry)
    fleet = load_fleet(_write(fleet_dir, doc))
    (bad,) = fleet.bad_clusters
    assert len(bad.problems) == 1 and bad.problems[0].startswith(f"{fleet_dir / 'fleet.yaml'}: {expected}")
    assert [c.name for c in fleet.clusters] == ["prod-eu", "prod-us"]


def test_an_override_of_an_unknown_cluster_is_an_error_naming_the_known_ones(fleet_dir):
    doc = _doc(fleet_dir)
    doc["spec"]["overrides"][0]["cluster"] = "prod-usa"
    assert _problems(_write(fleet_dir, doc)) == [
        f"{fleet_dir / 'fleet.yaml'}: spec.overrides[0].cluster: expected the name of a cluster of this fleet "
        "(prod-eu, prod-us), got 'prod-usa'"
    ]


def test_two_clusters_of_one_name_are_an_error(fleet_dir):
    doc = _doc(fleet_dir)
    doc["spec"]["clusters"].append(copy.deepcopy(doc["spec"]["clusters"][0]))
    assert _problems(_write(fleet_dir, doc)) == [
        f"{fleet_dir / 'fleet.yaml'}: spec.clusters[2].name: expected a unique cluster name, 'prod-eu' is "
        "also spec.clusters[0]"
    ]


def test_an_unknown_field_of_an_overridden_section_is_named(fleet_dir):
    doc = _doc(fleet_dir)
    doc["spec"]["overrides"][0]["repository"]["urll"] = "s3://x/y"
    (line,) = _problems(_write(fleet_dir, doc))
    assert line.startswith(
        f"{fleet_dir / 'fleet.yaml'}: spec.overrides[0].repository.urll: unknown field (expected one of:"
    )


def test_a_selector_that_matches_no_cluster_is_a_warning(fleet_dir):
    doc = _doc(fleet_dir)
    doc["spec"]["policies"][1]["clusterSelector"] = {"matchLabels": {"env": "staging"}}
    doc["spec"]["policies"][1]["namespaces"] = ["wikki"]
    fleet = load_fleet(_write(fleet_dir, doc))
    path = fleet_dir / "fleet.yaml"
    assert fleet.warnings == [
        f"{path}: spec.policies[1].clusterSelector: warning: matches no cluster of the fleet",
        f"{path}: spec.policies[1].namespaces: warning: 'wikki' matches no policy of policies/wiki-db.yaml",
    ]


def test_an_override_that_makes_a_policy_invalid_fails_only_that_cluster(fleet_dir):
    doc = _doc(fleet_dir)
    doc["spec"]["overrides"][0]["repository"] = {"url": "http://backups-us/shop"}
    fleet = load_fleet(_write(fleet_dir, doc))
    us = policies_for(fleet, _cluster(fleet, "prod-us"))
    path = fleet_dir / "fleet.yaml"
    (line,) = us.problems
    assert line.startswith(
        f"{path}: cluster prod-us: {fleet_dir / 'policies/orders-db.yaml'} (with overrides[0]): spec.repository.url: "
    )
    assert policies_for(fleet, _cluster(fleet, "prod-eu")).problems == []


def test_an_override_for_a_policy_not_on_the_cluster_is_an_error_of_that_cluster(fleet_dir):
    doc = _doc(fleet_dir)
    doc["spec"]["overrides"][0]["policies"] = ["wiki/wiki-db"]
    fleet = load_fleet(_write(fleet_dir, doc))
    us = policies_for(fleet, _cluster(fleet, "prod-us"))
    assert us.problems == [
        f"{fleet_dir / 'fleet.yaml'}: cluster prod-us: spec.overrides[0].policies: wiki/wiki-db: expected a "
        "policy placed on this cluster (shop/orders-db)"
    ]


def test_a_null_schedule_override_leaves_backups_on_demand(fleet_dir):
    doc = _doc(fleet_dir)
    doc["spec"]["overrides"][0]["schedule"] = None
    fleet = load_fleet(_write(fleet_dir, doc))
    (us,) = policies_for(fleet, _cluster(fleet, "prod-us")).loaded
    assert us.policy.spec.schedule is None


def test_a_missing_policy_file_fails_the_clusters_it_is_placed_on(fleet_dir):
    (fleet_dir / "policies" / "wiki-db.yaml").unlink()
    fleet = load_fleet(fleet_dir / "fleet.yaml")
    eu = policies_for(fleet, _cluster(fleet, "prod-eu"))
    assert eu.problems == [
        f"{fleet_dir / 'fleet.yaml'}: cluster prod-eu: {fleet_dir / 'policies/wiki-db.yaml'}: cannot read: no such file"
    ]
    assert policies_for(fleet, _cluster(fleet, "prod-us")).problems == []


def test_a_file_that_is_not_a_fleet_is_one_line(tmp_path):
    path = tmp_path / "fleet.yaml"
    path.write_text(
        "apiVersion: snapflow.io/v1alpha1\nkind: ProtectionPolicy\nmetadata: {name: x}\nspec: {clusters: []}\n"
    )
    problems = _problems(path)
    assert f"{path}: kind: expected 'Fleet', got 'ProtectionPolicy'" in problems
    assert f"{path}: spec.clusters: expected at least 1 item(s)" in problems


def test_merge_patch_follows_rfc_7386():
    assert merge_patch({"a": "b", "c": {"d": "e", "f": "g"}}, {"a": "z", "c": {"f": None}}) == {
        "a": "z",
        "c": {"d": "e"},
    }
    assert merge_patch({"a": ["b"]}, {"a": ["c"]}) == {"a": ["c"]}
    assert merge_patch(None, {"a": {"b": None}}) == {"a": {}}


def test_an_override_names_its_policies_as_namespace_and_name(fleet_dir):
    doc = _doc(fleet_dir)
    doc["spec"]["overrides"][0]["policies"] = ["shop/orders-db", "orders-db"]
    assert _problems(_write(fleet_dir, doc)) == [
        f"{fleet_dir / 'fleet.yaml'}: spec.overrides[0].policies[1]: expected NAMESPACE/NAME of a policy, "
        "got 'orders-db'"
    ]
