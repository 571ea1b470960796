"""Structure of the rendered workflows: the freeze, the exit handler, dependencies, retries, RBAC,
schedules, and no credential anywhere."""

from __future__ import annotations

import json
import re

import pytest

from steps.errors import RETRYABLE_EXIT_CODES
from tests.fixtures.policies import example_files
from workflows.pipeline import (
    BackupId,
    CloneOf,
    Needs,
    Pipeline,
    Retry,
    Step,
)
from workflows.pipelines import backup_pipeline, pipelines_for
from workflows.policy import load_policies
from workflows.render import render_files, render_policies

STEP_COMMANDS = {
    "init", "copy", "verify", "restore", "prune", "check", "capture",
    "consistent-point", "prepare-clone", "finalize", "restore-app",
}  # fmt: skip
# Steps never retried: the freeze holder (a retry would quiesce again) and the whole-app restore (a
# retry would meet the objects of the first attempt).
NEVER_RETRIED = {"consistent-point", "restore-app"}


def _objects(rendering, kind: str) -> list[dict]:
    return [o.obj for o in rendering.ordered() if o.kind == kind]


def _backups(rendered_examples) -> list[dict]:
    out = []
    for rendering in rendered_examples.values():
        out += [
            o for o in _objects(rendering, "WorkflowTemplate") if o["metadata"]["name"].startswith("backup-")
        ]
    return out


def _templates(wt: dict) -> dict[str, dict]:
    return {t["name"]: t for t in wt["spec"]["templates"]}


def _tasks(wt: dict) -> dict[str, dict]:
    entry = _templates(wt)[wt["spec"]["entrypoint"]]
    return {t["name"]: t for t in entry["dag"]["tasks"]}


def _step_command(template: dict) -> str:
    return template["container"]["args"][0]


def test_every_example_renders_a_backup_for_each_policy(rendered_examples):
    backups = _backups(rendered_examples)
    assert len(backups) == len(load_policies(example_files()))
    for wt in backups:
        assert wt["spec"]["entrypoint"] == "main"
        assert set(_tasks(wt)) >= {"capture", "consistent-point", "verify"}


def test_the_freeze_is_held_by_one_step_that_never_copies_and_is_never_retried(rendered_examples):
    for wt in _backups(rendered_examples):
        templates = _templates(wt)
        holders = [
            t for t in templates.values() if "container" in t and _step_command(t) == "consistent-point"
        ]
        assert len(holders) == 1, wt["metadata"]["name"]
        holder = holders[0]
        # never retried: an explicit limit of 0 and no retry expression, on the template and the workflow
        assert holder["retryStrategy"] == {"limit": 0}
        assert "retryStrategy" not in wt["spec"]
        # never copies: no other step command, no data volume mounted
        args = holder["container"]["args"]
        assert "copy" not in args and "--source" not in args
        assert {m["name"] for m in holder["container"]["volumeMounts"]} <= {
            "scratch",
            "plan",
            "repository-password",
            "ca-bundle",
        }
        # freeze and thaw are inside it: no separate freeze/thaw step in the graph
        commands = {_step_command(templates[t["template"]]) for t in _tasks(wt).values()}
        assert not commands & {"freeze", "thaw", "snapshot"}
        # bounded: the pod cannot outlive the freeze deadline by much
        assert 0 < holder["activeDeadlineSeconds"] <= 3600 + 300


def test_finalize_is_the_exit_handler_and_not_part_of_the_graph(rendered_examples):
    for wt in _backups(rendered_examples):
        assert wt["spec"]["onExit"] == "finalize"
        assert "finalize" not in _tasks(wt)
        finalize = _templates(wt)["finalize"]
        args = finalize["container"]["args"]
        assert args[0] == "finalize"
        assert args[args.index("--workflow-status") + 1] == "{{workflow.status}}"
        assert args[args.index("--backup-id") + 1] == "{{workflow.name}}"


def test_each_copy_depends_only_on_its_own_volumes_snapshot(rendered_examples):
    for wt in _backups(rendered_examples):
        tasks = _tasks(wt)
        copies = [name for name in tasks if name.startswith("copy-")]
        assert copies
        for copy in copies:
            volume = copy.removeprefix("copy-")
            assert tasks[copy]["dependencies"] == [f"prepare-clone-{volume}"]
            clone = tasks[f"prepare-clone-{volume}"]
            assert clone["dependencies"] == ["consistent-point"]
            # the clone is made from this volume's snapshot (found by backup ID and volume) ...
            clone_args = _templates(wt)[clone["template"]]["container"]["args"]
            assert clone_args[clone_args.index("--volume") + 1] == volume
            assert clone_args[clone_args.index("--backup-id") + 1] == "{{workflow.name}}"
            # ... and the copy mounts this volume's clone
            (claim_arg,) = tasks[copy]["arguments"]["parameters"]
            assert claim_arg == {
                "name": "claim",
                "value": f"{{{{tasks.prepare-clone-{volume}.outputs.parameters.claim}}}}",
            }


def test_the_copy_pod_mounts_its_clone_read_only_through_a_parameter(rendered_examples):
    for wt in _backups(rendered_examples):
        for name, template in _templates(wt).items():
            if not name.startswith("copy-"):
                continue
            volume = name.removeprefix("copy-")
            (data,) = [v for v in template["volumes"] if v["name"] == "data"]
            assert data["persistentVolumeClaim"] == {
                "claimName": "{{inputs.parameters.claim}}",
                "readOnly": True,
            }
            (mount,) = [m for m in template["container"]["volumeMounts"] if m["name"] == "data"]
            assert mount == {"mountPath": f"/snapflow/volumes/{volume}", "name": "data", "readOnly": True}
            args = template["container"]["args"]
            assert args[args.index("--source") + 1] == f"/snapflow/volumes/{volume}"
            assert args[args.index("--volume") + 1] == volume
            assert "--json" in args
            # the step writes Argo's progress file itself: nothing may override the variable
            assert "ARGO_PROGRESS_FILE" not in json.dumps(template)


def test_verify_waits_for_every_copy_and_the_capture(rendered_examples):
    for wt in _backups(rendered_examples):
        tasks = _tasks(wt)
        copies = sorted(n for n in tasks if n.startswith("copy-"))
        assert sorted(tasks["verify"]["dependencies"]) == sorted(["capture", *copies])


def test_only_temporary_failures_are_retried(rendered_examples):
    expected = f"asInt(lastRetry.exitCode) == {RETRYABLE_EXIT_CODES[0]}"
    assert RETRYABLE_EXIT_CODES == (75,)
    for rendering in rendered_examples.values():
        for wt in _objects(rendering, "WorkflowTemplate"):
            for template in wt["spec"]["templates"]:
                if "container" not in template:
                    continue
                strategy = template["retryStrategy"]
                if _step_command(template) in NEVER_RETRIED:
                    assert strategy == {"limit": 0}
                else:
                    assert strategy["expression"] == expected
                    assert strategy["retryPolicy"] == "OnFailure"
                    assert 1 <= strategy["limit"] <= 5


def test_workflow_settings_for_production(rendered_examples):
    for rendering in rendered_examples.values():
        for wt in _objects(rendering, "WorkflowTemplate"):
            spec = wt["spec"]
            name = wt["metadata"]["name"]
            assert spec["activeDeadlineSeconds"] > 0
            assert spec["podGC"]["strategy"].startswith("On")
            assert spec["ttlStrategy"]["secondsAfterSuccess"] > 0
            assert wt["metadata"]["annotations"]["workflows.argoproj.io/title"]
            assert wt["metadata"]["annotations"]["workflows.argoproj.io/description"]
            assert "serviceAccountName" not in spec  # each pod template names its step's own
            for template in spec["templates"]:
                if "container" in template:
                    assert template["serviceAccountName"].startswith("snapflow-"), (name, template["name"])
            metric_names = {m["name"] for m in spec["metrics"]["prometheus"]}
            assert "snapflow_workflow_duration_seconds" in metric_names
            if "onExit" not in spec:  # a backup reports its outcome from its exit handler
                assert "snapflow_last_success_timestamp_seconds" in metric_names
            for param in spec.get("arguments", {}).get("parameters", []):
                assert param["description"], (name, param)
                if "enum" in param and "value" in param:
                    assert param["value"] in param["enum"]
            if name.startswith(("backup-", "restore-")):
                app = wt["metadata"]["labels"]["snapflow.io/app"]
                assert spec["synchronization"] == {"mutexes": [{"name": f"snapflow-app-{app}"}]}


def test_backup_runs_with_defaults_and_shows_its_results(rendered_examples):
    for wt in _backups(rendered_examples):
        params = wt["spec"]["arguments"]["parameters"]
        assert all("value" in p for p in params), "argo submit --from must work without -p"
        entry = _templates(wt)["main"]
        outputs = {p["name"] for p in entry["outputs"]["parameters"]}
        copies = [n for n in _tasks(wt) if n.startswith("copy-")]
        assert {"consistency", "freeze-window-ms"} | {f"snapshot-{c[5:]}" for c in copies} == outputs
        metrics = {
            m["name"] for t in wt["spec"]["templates"] for m in (t.get("metrics") or {}).get("prometheus", [])
        }
        assert {"snapflow_backup_bytes_added", "snapflow_last_committed_backup_timestamp_seconds"} <= metrics


def test_restore_needs_only_a_target_and_restores_the_chosen_volumes_latest_by_default(rendered_examples):
    for rendering in rendered_examples.values():
        for wt in _objects(rendering, "WorkflowTemplate"):
            name = wt["metadata"]["name"]
            if not name.startswith("restore-") or name.startswith("restore-app-"):
                continue
            params = {p["name"]: p for p in wt["spec"]["arguments"]["parameters"]}
            assert {n for n, p in params.items() if "value" not in p} == {"target-pvc"}
            # the volume is one of the policy's, the first by default
            backup = next(
                o for o in _objects(rendering, "WorkflowTemplate")
                if o["metadata"]["name"] == "backup-" + name.removeprefix("restore-")
            )  # fmt: skip
            volumes = [c.removeprefix("copy-") for c in _tasks(backup) if c.startswith("copy-")]
            assert sorted(params["volume"]["enum"]) == sorted(volumes)
            assert {n: p["value"] for n, p in params.items() if "value" in p} == {
                "snapshot": "latest",
                "volume": params["volume"]["enum"][0],
                "write-backup-label": "false",
                "uid-map": "",
                "gid-map": "",
                "overwrite": "refuse",
            }
            restore = _templates(wt)["restore"]
            # latest is the chosen volume's in the newest committed backup of this app, in this namespace
            args = restore["container"]["args"]
            assert args[args.index("--volume") + 1] == "{{workflow.parameters.volume}}"
            assert args[args.index("--source-namespace") + 1] == wt["metadata"]["namespace"]
            assert args[args.index("--app") + 1] == backup["metadata"]["labels"]["snapflow.io/app"]
            (data,) = [v for v in restore["volumes"] if v["name"] == "data"]
            assert data["persistentVolumeClaim"] == {"claimName": "{{workflow.parameters.target-pvc}}"}


def test_prune_runs_one_of_two_steps_by_the_dry_run_parameter(rendered_examples):
    wt = next(
        o for o in _objects(rendered_examples["postgresql-statefulset.yaml"], "WorkflowTemplate")
        if o["metadata"]["name"] == "prune-orders-db"
    )  # fmt: skip
    tasks = _tasks(wt)
    assert tasks["prune"]["when"] == "{{workflow.parameters.dry-run}} == false"
    assert tasks["prune-dry-run"]["when"] == "{{workflow.parameters.dry-run}} == true"
    args = _templates(wt)["prune"]["container"]["args"]
    assert args[args.index("--keep-daily") + 1] == "14"
    assert "--dry-run" not in args
    assert "--dry-run" in _templates(wt)["prune-dry-run"]["container"]["args"]
    assert args[args.index("--app") + 1] == "orders-db"


def test_schedules_reference_their_templates(rendered_examples):
    rendering = rendered_examples["postgresql-statefulset.yaml"]
    crons = {c["metadata"]["name"]: c for c in _objects(rendering, "CronWorkflow")}
    templates = {t["metadata"]["name"] for t in _objects(rendering, "WorkflowTemplate")}
    assert set(crons) == {"backup-orders-db", "prune-orders-db", "check-orders-db"}
    for name, cron in crons.items():
        spec = cron["spec"]
        assert spec["concurrencyPolicy"] == "Forbid"
        assert spec["startingDeadlineSeconds"] == 600
        assert spec["timezone"] == "Europe/Berlin"
        assert spec["workflowSpec"]["workflowTemplateRef"] == {"name": name}
        assert name in templates
    assert crons["backup-orders-db"]["spec"]["schedules"] == ["15 3 * * *"]


def test_an_unscheduled_policy_has_no_cron_workflow(minimal_policy, write_policy):
    assert _objects(render_files([write_policy(minimal_policy)]), "CronWorkflow") == []


def test_group_snapshots_only_when_the_policy_asks(rendered_examples):
    for name, rendering in rendered_examples.items():
        by_policy: dict[str, set[str]] = {}
        for obj in _objects(rendering, "Role") + _objects(rendering, "ClusterRole"):
            if obj["metadata"]["labels"]["app.kubernetes.io/component"] != "rbac":
                continue  # the restore identity's roles never touch snapshots
            groups = {g for rule in obj["rules"] for g in rule["apiGroups"]}
            by_policy.setdefault(obj["metadata"]["labels"]["snapflow.io/policy"], set()).update(groups)
        for policy, groups in by_policy.items():
            plan_map = next(
                c
                for c in _objects(rendering, "ConfigMap")
                if c["metadata"]["labels"]["snapflow.io/policy"] == policy
            )
            consistency = json.loads(plan_map["data"]["plan.json"])["consistency"]
            assert ("groupsnapshot.storage.k8s.io" in groups) == (consistency == "group"), (name, policy)


def test_role_grants_only_what_the_steps_use(rendered_examples):
    rendering = rendered_examples["postgresql-statefulset.yaml"]
    roles = {r["metadata"]["name"]: r for r in _objects(rendering, "Role")}
    role = roles["snapflow-orders-db-consistent-point"]
    grants = {
        (g, r, v)
        for rule in role["rules"]
        for g in rule["apiGroups"]
        for r in rule["resources"]
        for v in rule["verbs"]
    }
    assert ("", "pods/exec", "create") in grants
    assert ("argoproj.io", "workflowtaskresults", "create") in grants
    assert ("snapshot.storage.k8s.io", "volumesnapshots", "create") in grants
    assert ("", "persistentvolumeclaims", "create") not in grants  # prepare-clone's
    assert ("", "persistentvolumeclaims", "create", "prepare-clone") in {
        (g, r, v, n.removeprefix("snapflow-orders-db-"))
        for n, other in roles.items()
        for rule in other["rules"]
        for g in rule["apiGroups"]
        for r in rule["resources"]
        for v in rule["verbs"]
    }
    for group, resource, verb in grants:
        assert "*" not in (group, resource, verb)
        assert resource != "secrets" or verb == "list"  # capture.secrets: listed, never changed
        assert verb not in ("update", "deletecollection", "escalate", "bind", "impersonate")
    cluster_roles = {c["metadata"]["name"]: c for c in _objects(rendering, "ClusterRole")}
    assert cluster_roles["snapflow.shop.orders-db-capture"]["rules"] == [
        {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get"]},
    ]
    assert cluster_roles["snapflow.shop.orders-db-consistent-point"]["rules"] == [
        {"apiGroups": ["snapshot.storage.k8s.io"], "resources": ["volumesnapshotcontents"], "verbs": ["get"]},
    ]
    bindings = {b["metadata"]["name"]: b for b in _objects(rendering, "RoleBinding")}
    assert bindings["snapflow-orders-db-consistent-point"]["subjects"] == [
        {"kind": "ServiceAccount", "name": "snapflow-orders-db-consistent-point", "namespace": "shop"}
    ]
    assert bindings["snapflow-orders-db-consistent-point"]["roleRef"]["kind"] == "Role"


def test_a_policy_without_hooks_cannot_exec_into_pods(minimal_policy, write_policy):
    minimal_policy["spec"]["quiesce"] = []
    roles = _objects(render_files([write_policy(minimal_policy)]), "Role")
    assert len(roles) > 1  # one per step kind
    for role in roles:
        resources = {r for rule in role["rules"] for r in rule["resources"]}
        assert "pods/exec" not in resources and "pods" not in resources


def test_an_existing_service_account_replaces_the_rendered_rbac(minimal_policy, write_policy):
    minimal_policy["spec"]["workflow"] = {"serviceAccountName": "platform-backup"}
    rendering = render_files([write_policy(minimal_policy)])
    assert {o.kind for o in rendering.objects} == {"ConfigMap", "WorkflowTemplate"}
    for wt in _objects(rendering, "WorkflowTemplate"):
        assert wt["spec"]["serviceAccountName"] == "platform-backup"


def test_no_credential_value_reaches_any_rendered_file(minimal_policy, write_policy, monkeypatch):
    # GIVEN a policy naming real Secrets, and an environment holding the secret values
    secrets = {
        "AWS_ACCESS_KEY_ID": "AKIAEXAMPLEKEY123456",
        "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "SNAPFLOW_PASSWORD": "correct horse battery staple",
        "ARGO_TOKEN": "Bearer eyJhbGciOiJSUzI1NiJ9.secret",
    }
    for key, value in secrets.items():
        monkeypatch.setenv(key, value)
    minimal_policy["spec"]["repository"]["endpoint"] = "https://minio.example:9000"
    minimal_policy["spec"]["schedule"] = {"cron": "@daily"}
    path = write_policy(minimal_policy)
    # WHEN it is rendered
    files = render_files([path]).files()
    text = "\n".join(files.values())
    # THEN no value appears, credentials come only from Secret references, and the password is a file
    for value in secrets.values():
        assert value not in text
    assert "AKIA" not in text and "Bearer" not in text
    for content in files.values():
        for match in re.finditer(r"name: (AWS_SECRET_ACCESS_KEY|AWS_ACCESS_KEY_ID)\n(\s+)(\S+)", content):
            assert match.group(3) == "valueFrom:"
    assert "SNAPFLOW_PASSWORD_FILE" in text and "name: SNAPFLOW_PASSWORD\n" not in text
    plan = json.loads(
        next(v for k, v in files.items() if "configmap-snapflow-plan" in k)
        .split("plan.json: |")[1]
        .replace("\n    ", "\n")
    )
    assert set(plan["repository"]) == {"url", "endpoint"}


# Options of restore-app whose values are the policy's Secret *names* (its mover pods mount them).
SECRET_NAME_OPTIONS = ("--password-secret", "--credentials-secret", "--secrets-namespace")


def test_steps_get_only_arguments_of_the_step_contract(rendered_examples):
    for rendering in rendered_examples.values():
        for wt in _objects(rendering, "WorkflowTemplate"):
            for template in wt["spec"]["templates"]:
                if "container" not in template:
                    continue
                container = template["container"]
                assert container["command"] == ["python", "-m", "steps"]
                assert _step_command(template) in STEP_COMMANDS
                args = list(container["args"])
                for option in SECRET_NAME_OPTIONS:
                    if option in args:
                        assert _step_command(template) == "restore-app"
                        i = args.index(option)
                        del args[i : i + 2]
                joined = " ".join(args)
                assert "--password" not in joined and "secret" not in joined.lower()


def test_restore_app_names_the_policys_secrets_never_their_values(rendered_examples):
    wt = next(
        o for o in _objects(rendered_examples["multi-volume-app.yaml"], "WorkflowTemplate")
        if o["metadata"]["name"] == "restore-app-media-uploads"
    )  # fmt: skip
    args = _templates(wt)["restore-app"]["container"]["args"]

    def value(option: str) -> str:
        return args[args.index(option) + 1]

    assert value("--password-secret") == "media-backup-repository:password"
    assert value("--credentials-secret") == "media-backup-s3:AWS_ACCESS_KEY_ID:AWS_SECRET_ACCESS_KEY"
    assert value("--ca-bundle") == "storage-ca:ca.crt"
    assert value("--secrets-namespace") == "media"
    assert value("--mover") == "pod"
    assert value("--image") == "snapflow/steps:0.1.0"


def test_pipeline_refuses_a_retried_freeze_holder(minimal_policy, write_policy):
    policy = load_policies([write_policy(minimal_policy)])[0].policy
    pipeline = backup_pipeline(policy)
    holder = pipeline.freeze_step
    assert holder is not None and holder.name == "consistent-point"
    broken = Pipeline(
        name="backup",
        title="t",
        description="d",
        steps=tuple(
            Step(**{**s.__dict__, "retry": Retry.TEMPORARY}) if s.holds_freeze else s for s in pipeline.steps
        ),
    )
    with pytest.raises(ValueError, match="must never be retried"):
        broken.check()


def test_pipeline_refuses_a_copy_that_waits_for_no_clone():
    early = Pipeline(
        name="backup",
        title="t",
        description="d",
        steps=(
            Step(name="consistent-point", command="consistent-point", args=(), title="t", retry=Retry.NEVER,
                 holds_freeze=True),
            Step(name="copy-data", command="copy", args=("--backup-id", BackupId()), title="t",
                 depends=("consistent-point",), needs=frozenset({Needs.SOURCE}),
                 claim=CloneOf("data")),
        ),
    )  # fmt: skip
    with pytest.raises(ValueError, match="reads the clone of data too early"):
        early.check()


def test_the_same_pipeline_definition_drives_every_template(minimal_policy, write_policy):
    # GIVEN the pipelines of a policy
    loaded = load_policies([write_policy(minimal_policy)])
    policy = loaded[0].policy
    pipelines = {p.name: p for p in pipelines_for(policy)}
    # WHEN rendered
    templates = {o.name: o.obj for o in render_policies(loaded).objects if o.kind == "WorkflowTemplate"}
    # THEN each template has exactly the pipeline's steps, dependencies and exit step
    for name, pipeline in pipelines.items():
        wt = templates[f"{name}-orders-db"]
        tasks = _tasks(wt)
        assert list(tasks) == [s.name for s in pipeline.order()]
        for step in pipeline.steps:
            assert tasks[step.name].get("dependencies", []) == list(step.depends)
        assert wt["spec"].get("onExit") == (pipeline.exit_step.name if pipeline.exit_step else None)


def test_a_block_volume_is_attached_as_a_device(minimal_policy, write_policy):
    minimal_policy["spec"]["volumes"][0]["block"] = True
    (backup,) = [
        o for o in _objects(render_files([write_policy(minimal_policy)]), "WorkflowTemplate")
        if o["metadata"]["name"] == "backup-orders-db"
    ]  # fmt: skip
    copy = _templates(backup)["copy-data"]
    assert copy["container"]["volumeDevices"] == [{"devicePath": "/dev/snapflow/data", "name": "data"}]
    assert "data" not in {m["name"] for m in copy["container"]["volumeMounts"]}
    args = copy["container"]["args"]
    assert args[args.index("--source") + 1] == "/dev/snapflow/data"
