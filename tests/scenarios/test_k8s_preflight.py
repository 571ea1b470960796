"""preflight against a live API: snapshot classes per CSI driver, RBAC, Pod Security, the repository."""

from __future__ import annotations

import json

from tests.fixtures.k8s_app import APP_NS, run_step


def checks(res):
    return {(c["check"], c["status"]) for c in json.loads(res.last_line)["checks"]}


def test_preflight_passes_for_a_ready_cluster(k8s):
    # GIVEN the app, the CSI driver's snapshot class, and an initialised repository
    k8s.deploy_app()

    # WHEN preflight runs for the backup plan
    res = run_step("preflight", "--plan", k8s.plan(), "--json")

    # THEN every check passes
    assert res.rc == 0, res.stdout + res.stderr
    assert {name for name, status in checks(res) if status == "fail"} == set()
    assert {"api", "namespace", "snapshot-api", "snapshot-class", "rbac", "pod-security", "repository"} <= {
        name for name, status in checks(res) if status == "ok"
    }


def test_preflight_names_each_problem(k8s, tmp_path, monkeypatch):
    # GIVEN a plan naming a snapshot class that does not exist, a namespace enforcing "restricted",
    # a ServiceAccount without any role, and a wrong repository password
    k8s.deploy_app()
    plan = json.loads(k8s.plan().read_text())
    plan["snapshot"]["class"] = "no-such-class"
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan))
    k8s.server.patch(
        "namespaces", APP_NS, {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}}
    )
    monkeypatch.setenv("SNAPFLOW_PASSWORD", "wrong password")

    # WHEN preflight runs
    res = run_step("preflight", "--plan", path, "--service-account", f"{APP_NS}/nobody")

    # THEN it fails, with one line per problem
    assert res.rc == 3
    out = res.stdout
    assert "FAIL snapshot-class  VolumeSnapshotClass no-such-class does not exist" in out
    assert (
        "FAIL rbac" in out and "ServiceAccount shop/nobody may not" in out and "create volumesnapshots" in out
    )
    assert "warn pod-security    enforce=restricted rejects the restore mover as root" in out
    assert "FAIL repository" in out
    assert (
        res.stderr.strip().splitlines()[-1].startswith("error: preflight: 3 check(s) failed: snapshot-class:")
    )
