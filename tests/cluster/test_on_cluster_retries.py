"""The copy step's retry strategy, as rendered, on a real Argo Workflows controller.

Argo counts ``backoff.maxDuration`` from the first attempt's start: a budget smaller than one attempt
means a step failing late with a temporary error (exit 75) is never retried. The rendered budget
covers (limit + 1) x activeDeadlineSeconds plus the backoffs; here the rendered copy template runs a
container that fails with 75 only after running longer than every backoff together.

Deselected by default; run with ``pytest -m on_cluster tests/cluster`` (docs/user/on-cluster-tests.md).
"""

from __future__ import annotations

import copy

import pytest

from tests.cluster.argo_world import ARGO, controller_version, describe, exit_code, pod_nodes, setup_app
from workflows.argo_rules import duration_s, retry_budget_holds_every_attempt

pytestmark = pytest.mark.on_cluster

COPY_DEADLINE_S = 150


def copy_template_running(backup_template: dict, name: str, script: str) -> dict:
    """The rendered copy template (retry strategy, deadline, account, security context, image) with a
    container running ``script`` instead of the copy, and nothing that needs a clone PVC."""
    original = next(t for t in backup_template["spec"]["templates"] if t["name"].startswith("copy-"))
    template = copy.deepcopy(original)
    for key in ("inputs", "outputs", "volumes", "metrics"):
        template.pop(key, None)
    container = {k: v for k, v in original["container"].items() if k in ("image", "imagePullPolicy")}
    container.update(command=["sh", "-c", script], args=[])
    if "securityContext" in original["container"]:
        container["securityContext"] = original["container"]["securityContext"]
    template["container"] = container
    template["name"] = name
    return template


def backoff_waits_s(strategy: dict) -> float:
    backoff = strategy["backoff"]
    first, factor = duration_s(backoff["duration"]), int(backoff.get("factor") or 1)
    cap = duration_s(backoff["cap"]) if backoff.get("cap") else None
    waits = [first * factor**i for i in range(int(strategy["limit"]))]
    return sum(min(w, cap) if cap else w for w in waits)


def test_a_copy_failing_with_75_after_running_longer_than_its_backoffs_is_retried(real_cluster, tmp_path):
    world = real_cluster
    with world.client() as client:
        version = controller_version(client)
        app = setup_app(
            world,
            client,
            tmp_path,
            "sf-retry",
            ["files-a"],
            workflow={"stepTimeouts": {"copy": COPY_DEADLINE_S}},
            data=False,
        )
        try:
            app.apply()
            backup = next(
                o
                for o in app.rendered()
                if o["kind"] == "WorkflowTemplate" and o["metadata"]["name"] == app.template("backup")
            )
            assert retry_budget_holds_every_attempt(backup) == []
            strategy = next(t for t in backup["spec"]["templates"] if t["name"].startswith("copy-"))[
                "retryStrategy"
            ]
            late = int(backoff_waits_s(strategy)) + 5
            assert late < COPY_DEADLINE_S
            templates = {
                # first attempt: fails with a temporary error after `late` seconds; the retry passes
                "late-temporary": copy_template_running(
                    backup, "late-temporary", f'if [ "{{{{retries}}}}" = 0 ]; then sleep {late}; exit 75; fi'
                ),
                # a permanent error is never retried
                "permanent": copy_template_running(backup, "permanent", "sleep 5; exit 3"),
            }
            names = {}
            for entry, template in templates.items():
                wf = client.create(
                    {
                        "apiVersion": ARGO,
                        "kind": "Workflow",
                        "metadata": {"generateName": f"retry-{entry}-", "namespace": app.namespace},
                        "spec": {
                            "entrypoint": entry,
                            "serviceAccountName": app.account("copy"),
                            "templates": [template],
                        },
                    }
                )
                names[entry] = wf["metadata"]["name"]

            late_wf = app.wait(names["late-temporary"], timeout=COPY_DEADLINE_S * 5)
            permanent_wf = app.wait(names["permanent"], timeout=600)

            attempts = pod_nodes(late_wf, "late-temporary")
            assert late_wf["status"]["phase"] == "Succeeded", f"Argo {version}\n{describe(late_wf)}"
            assert [exit_code(a) for a in attempts] == ["75", "0"], describe(late_wf)
            attempts = pod_nodes(permanent_wf, "permanent")
            assert permanent_wf["status"]["phase"] == "Failed", describe(permanent_wf)
            assert [exit_code(a) for a in attempts] == ["3"], describe(permanent_wf)
        finally:
            app.cleanup()
