"""`snapflow preflight` of a policy with a restore test, against the fake API server through the real
kubernetes client: the scratch volume's StorageClass exists and the volume is as large as the PVCs."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.fakes.csi import STORAGE_CLASS
from tests.fixtures.rendered import app_policy
from workflows.cli import main


def _preflight(k8s, capsys, **restore_test) -> dict[str, dict]:
    doc = app_policy(k8s, "volume", secrets=True)
    doc["spec"]["verify"]["restoreTest"] = {"enabled": True, **restore_test}
    path = k8s.tmp / "policy.yaml"
    path.write_text(yaml.safe_dump(doc))
    main(["preflight", str(path), "--skip-repository", "--json"])
    (policy,) = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["policies"]
    return {c["check"]: c for c in policy["checks"]}


@pytest.mark.parametrize(
    ("restore_test", "status", "message"),
    [
        (
            {"scratchSize": "2Gi"},
            "ok",
            f"scratch volume of 2Gi from the default StorageClass {STORAGE_CLASS}",
        ),
        (
            {"scratchSize": "2Gi", "storageClassName": STORAGE_CLASS},
            "ok",
            f"scratch volume of 2Gi from StorageClass {STORAGE_CLASS}",
        ),
        (
            {"storageClassName": "no-such-class"},
            "fail",
            "StorageClass no-such-class (verify.restoreTest.storageClassName) does not exist",
        ),
        (
            {"scratchSize": "1Gi"},
            "warn",
            "the app's PVCs request 1.5 GiB, the scratch volume (verify.restoreTest.scratchSize) is 1Gi: "
            "a full backup may not fit",
        ),
    ],
    ids=["default-class", "named-class", "missing-class", "too-small"],
)
def test_preflight_checks_the_restore_tests_scratch_volume(k8s, capsys, restore_test, status, message):
    # GIVEN the app (PVCs of 1Gi and 512Mi) and a policy whose check runs a restore test
    k8s.deploy_app()
    # WHEN preflight runs
    checks = _preflight(k8s, capsys, **restore_test)
    # THEN the restore test's scratch volume is judged, in one line
    assert (checks["restore-test"]["status"], checks["restore-test"]["message"]) == (status, message)


def test_preflight_of_a_policy_without_a_restore_test_does_not_mention_it(k8s, capsys):
    k8s.deploy_app()
    doc = app_policy(k8s, "volume", secrets=True)
    path = k8s.tmp / "policy.yaml"
    path.write_text(yaml.safe_dump(doc))
    main(["preflight", str(path), "--skip-repository", "--json"])
    (policy,) = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["policies"]
    assert "restore-test" not in {c["check"] for c in policy["checks"]}
