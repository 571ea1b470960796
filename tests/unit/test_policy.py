"""Protection policies: loading, defaults, errors (one line per problem), JSON schema, plan."""

from __future__ import annotations

import json
import subprocess
import sys

import jsonschema
import pytest
import yaml

from steps.plan import plan_from_dict
from tests.fixtures.policies import ROOT, example_files
from workflows.pipelines import plan_for
from workflows.policy import PolicyError, json_schema, load_policies, repository_sharing


def _set(doc: dict, dotted: str, value) -> dict:
    """Set doc[a][b][0][c] for 'a.b.0.c'; the value DELETE removes the key."""
    parts = dotted.split(".")
    node = doc
    for part in parts[:-1]:
        node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
    last = parts[-1]
    if value is DELETE:
        del node[last]
    elif last.isdigit():
        node[int(last)] = value
    else:
        node[last] = value
    return doc


DELETE = object()

# (what is changed in the minimal policy, the exact line reported for FILE)
BAD_POLICIES = [
    ({"kind": "BackupPolicy"}, "kind: expected 'ProtectionPolicy', got 'BackupPolicy'"),
    ({"apiVersion": "v1"}, "apiVersion: expected 'snapflow.io/v1alpha1', got 'v1'"),
    (
        {"metadata.name": "Orders_DB"},
        "metadata.name: expected a DNS-1123 label (lowercase letters, digits and '-', starting and ending alphanumeric), got 'Orders_DB'",
    ),
    ({"metadata.name": "a" * 46}, "metadata.name: expected at most 45 characters, got 46"),
    ({"metadata.namespace": DELETE}, "metadata.namespace: required"),
    ({"spec.repository": DELETE}, "spec.repository: required"),
    (
        {"spec.repository.url": "https://backups/shop"},
        "spec.repository.url: expected a repository URL s3://BUCKET/PREFIX (file:///PATH or mem://NAME for local runs), got 'https://backups/shop'",
    ),
    (
        {"spec.repository.endpoint": "minio:9000"},
        "spec.repository.endpoint: expected an http:// or https:// URL, got 'minio:9000'",
    ),
    (
        {"spec.repository.passwordSecret": "hunter2"},
        "spec.repository.passwordSecret: expected a mapping, got string",
    ),
    (
        {"spec.repository.accessKey": "AKIA1234"},
        "spec.repository.accessKey: unknown field (expected one of: caBundle, credentialsSecret, endpoint, objectLock, passwordSecret, pathStyle, pruneCredentialsSecret, region, shared, url)",
    ),
    ({"spec.repository.shared": "maybe"}, "spec.repository.shared: expected true or false, got 'maybe'"),
    ({"spec.volumes": []}, "spec.volumes: expected at least 1 item(s)"),
    ({"spec.volumes": {"pvc": "data"}}, "spec.volumes: expected a list, got mapping"),
    (
        {"spec.volumes.0.pvc": DELETE},
        "spec.volumes[0]: expected exactly one of pvc (a PersistentVolumeClaim) or path (local runs)",
    ),
    ({"spec.volumes.0.role": "log"}, "spec.volumes[0].role: expected 'data' or 'wal', got 'log'"),
    (
        {"spec.volumes+": {"pvc": "wal-orders-db-0", "name": "data"}},
        "spec.volumes[1].name: expected a unique volume name, 'data' is also spec.volumes[0]",
    ),
    (
        {"spec.volumes.0.target": "orders-db-1"},
        "spec.volumes[0].target: expected the name of a quiesce target (orders-db-0), got 'orders-db-1'",
    ),
    (
        {"spec.quiesce.0.hook": "oracle"},
        "spec.quiesce[0].hook: expected 'postgresql', 'mysql', 'mariadb', 'mongodb', 'redis', 'fsfreeze', 'custom' or 'none', got 'oracle'",
    ),
    (
        {"spec.quiesce.0.pod": DELETE},
        "spec.quiesce[0].pod: required for a postgresql hook (the pod it runs in)",
    ),
    (
        {"spec.quiesce.0.params": {"password": "s3cr3t"}},
        "spec.quiesce[0].params.password: credentials are not accepted inline; expected password_file (a mounted file) or password_env (a variable name)",
    ),
    (
        {"spec.quiesce.0.params": {"port": {"n": 1}}},
        "spec.quiesce[0].params.port: expected a string, number, boolean or a list of strings",
    ),
    (
        {"spec.quiesce.0.hook": "custom"},
        "spec.quiesce[0].params: the custom hook needs 'freeze' (and 'thaw') or 'prepare' commands",
    ),
    (
        {"spec.snapshot.consistency": "atomic"},
        "spec.snapshot.consistency: expected 'volume' or 'group', got 'atomic'",
    ),
    ({"spec.snapshot.timeoutSeconds": 0}, "spec.snapshot.timeoutSeconds: expected a number > 0, got 0"),
    (
        {"spec.snapshot.groupClassName": "csi-groupsnapclass"},
        "spec.snapshot.groupClassName: expected only with consistency: group (it names a VolumeGroupSnapshotClass)",
    ),
    ({"spec.capture.secrets": "maybe"}, "spec.capture.secrets: expected true or false, got 'maybe'"),
    (
        {"spec.capture.configMaps": False},
        "spec.capture.configMaps: unknown field (expected one of: secrets)",
    ),
    (
        {"spec.freeze.deadlineSeconds": "half a minute"},
        "spec.freeze.deadlineSeconds: expected a number, got 'half a minute'",
    ),
    (
        {"spec.freeze.deadlineSeconds": 4000},
        "spec.freeze.deadlineSeconds: expected a number <= 3600, got 4000",
    ),
    (
        {"spec.freeze.keepaliveSeconds": 60},
        "spec.freeze.keepaliveSeconds: expected less than spec.freeze.deadlineSeconds",
    ),
    (
        {"spec.schedule": {"cron": "every night"}},
        "spec.schedule.cron: expected a cron expression of 5 fields (minute hour day month weekday) or @daily, got 'every night'",
    ),
    (
        {"spec.schedule": {"cron": "@daily", "timezone": "Mars/Olympus"}},
        "spec.schedule.timezone: expected an IANA time zone like UTC or Europe/Berlin, got 'Mars/Olympus'",
    ),
    (
        {"spec.schedule": {"cron": "@daily", "startingDeadlineSeconds": -1}},
        "spec.schedule.startingDeadlineSeconds: expected a number >= 0, got -1",
    ),
    (
        {"spec.retention": {"keepLast": 0}},
        "spec.retention: expected at least one keep rule above 0 (e.g. keepLast: 7)",
    ),
    (
        {"spec.retention": {"keepForever": True}},
        "spec.retention.keepForever: unknown field (expected one of: keepDaily, keepHourly, keepLast, keepMonthly, keepWeekly, keepYearly)",
    ),
    ({"spec.verify.readDataPercent": 150}, "spec.verify.readDataPercent: expected a number <= 100, got 150"),
    ({"spec.parallelism": "two"}, "spec.parallelism: expected an integer, got 'two'"),
    (
        {"spec.resources.requests": {"cpu": "lots"}},
        "spec.resources.requests.cpu: expected a Kubernetes quantity like 500m, 2, 512Mi or 4Gi, got 'lots'",
    ),
    (
        {"spec.resources.requests": {"gpu": "1"}},
        "spec.resources.requests.gpu: expected 'cpu', 'memory' or 'ephemeral-storage', got 'gpu'",
    ),
    (
        {"spec.workflow.podGC": "Always"},
        "spec.workflow.podGC: expected 'OnPodCompletion', 'OnPodSuccess', 'OnWorkflowCompletion' or 'OnWorkflowSuccess', got 'Always'",
    ),
    (
        {"spec.imagePullPolicy": "Sometimes"},
        "spec.imagePullPolicy: expected 'Always', 'IfNotPresent' or 'Never', got 'Sometimes'",
    ),
]


@pytest.mark.parametrize(("changes", "expected"), BAD_POLICIES, ids=[c[1][:60] for c in BAD_POLICIES])
def test_bad_policy_is_reported_in_one_exact_line(minimal_policy, write_policy, changes, expected):
    # GIVEN a policy with one mistake
    for dotted, value in changes.items():
        if dotted.endswith("+"):  # append to a list
            minimal_policy["spec"][dotted[5:-1]].append(value)
        else:
            _set(minimal_policy, dotted, value)
    path = write_policy(minimal_policy)
    # WHEN it is loaded
    with pytest.raises(PolicyError) as err:
        load_policies([path])
    # THEN exactly one line names the file, the field and what was expected
    assert err.value.problems == [f"{path}: {expected}"]


def test_credential_values_are_never_echoed_in_errors(minimal_policy, write_policy):
    # GIVEN credentials pasted where they do not belong
    minimal_policy["spec"]["repository"]["secretKey"] = "wJalrXUtnFEMI-K7MDENG"
    minimal_policy["spec"]["repository"]["passwordSecret"] = "correct-horse-battery"
    minimal_policy["spec"]["quiesce"][0]["params"] = {"db_password": "pg-pass-123"}
    path = write_policy(minimal_policy)
    # WHEN it is loaded
    with pytest.raises(PolicyError) as err:
        load_policies([path])
    # THEN every problem is reported and none of the values appears
    text = str(err.value)
    assert len(err.value.problems) == 3
    for secret in ("wJalrXUtnFEMI-K7MDENG", "correct-horse-battery", "pg-pass-123"):
        assert secret not in text


def test_yaml_syntax_error_names_file_line_and_column(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("apiVersion: snapflow.io/v1alpha1\nkind: [ProtectionPolicy\n")
    with pytest.raises(PolicyError) as err:
        load_policies([path])
    assert err.value.problems == [
        f"{path}: line 3 column 1: expected valid YAML (expected ',' or ']', but got '<stream end>')"
    ]


def test_missing_and_empty_files_are_one_line_each(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing yet\n")
    missing = tmp_path / "missing.yaml"
    with pytest.raises(PolicyError) as err:
        load_policies([empty, missing])
    assert err.value.problems == [
        f"{empty}: expected at least one ProtectionPolicy, the file is empty",
        f"{missing}: cannot read: no such file",
    ]


def test_several_policies_per_file_are_numbered_in_errors(minimal_policy, write_policy):
    # GIVEN a file with a good and a bad policy, and a document that is not a mapping
    second = json.loads(json.dumps(minimal_policy))
    second["metadata"]["name"] = "orders-db-2"
    second["spec"]["parallelism"] = 0
    path = write_policy([minimal_policy, second, "just some text"])
    # WHEN it is loaded
    with pytest.raises(PolicyError) as err:
        load_policies([path])
    # THEN the problems name the document they are in
    assert err.value.problems == [
        f"{path}#2: spec.parallelism: expected a number >= 1, got 0",
        f"{path}#3: expected a mapping (a ProtectionPolicy), got string",
    ]


def test_a_list_document_holds_several_policies(minimal_policy, write_policy):
    second = json.loads(json.dumps(minimal_policy))
    second["metadata"]["name"] = "orders-replica"
    path = write_policy([minimal_policy, second])
    loaded = load_policies([path])
    assert [item.source for item in loaded] == [f"{path}#1", f"{path}#2"]
    assert [item.policy.name for item in loaded] == ["orders-db", "orders-replica"]


def test_duplicate_policy_names_in_one_namespace_are_refused(minimal_policy, write_policy, tmp_path):
    first = write_policy(minimal_policy, "a.yaml")
    second = write_policy(minimal_policy, "b.yaml")
    with pytest.raises(PolicyError) as err:
        load_policies([first, second])
    assert err.value.problems == [
        f"{second}: metadata.name: expected a unique name per namespace, 'orders-db' in 'shop' is also defined in {first}"
    ]


def test_defaults_make_a_minimal_policy_complete(minimal_policy, write_policy):
    policy = load_policies([write_policy(minimal_policy)])[0].policy
    spec = policy.spec
    assert policy.app == "orders-db"
    assert spec.cluster == "default"
    assert spec.snapshot.consistency == "volume"
    assert spec.freeze.deadline_seconds == 30
    assert spec.retention.rules() == [("last", 7)]
    assert spec.schedule is None
    assert spec.repository.shared is False
    assert spec.parallelism == 2


def test_every_example_policy_is_valid():
    files = example_files()
    names = {f.name for f in files}
    assert {"postgresql-statefulset.yaml", "mariadb.yaml", "mongodb.yaml", "multi-volume-app.yaml"} <= names
    loaded = load_policies(files)
    hooks = {t.hook for item in loaded for t in item.policy.spec.quiesce}
    assert {"postgresql", "mariadb", "mongodb"} <= hooks
    assert any(len(item.policy.spec.volumes) > 1 for item in loaded)


def test_sharing_a_repository_across_namespaces_needs_an_explicit_setting(minimal_policy, write_policy):
    # GIVEN two namespaces pointing at the same repository
    other = json.loads(json.dumps(minimal_policy))
    other["metadata"]["namespace"] = "billing"
    loaded = load_policies([write_policy([minimal_policy, other])])
    # WHEN neither sets shared: true THEN both are refused
    problems, warnings = repository_sharing(loaded)
    assert len(problems) == 2
    assert (
        "spec.repository.shared: expected true to share s3://backups/shop with namespace(s) billing"
        in problems[0]
    )
    assert warnings == []
    # WHEN both set it THEN it is allowed, with a warning
    for doc in (minimal_policy, other):
        doc["spec"]["repository"]["shared"] = True
    loaded = load_policies([write_policy([minimal_policy, other], "shared.yaml")])
    problems, warnings = repository_sharing(loaded)
    assert problems == []
    assert warnings == [
        "warning: repository s3://backups/shop is shared (namespaces: billing, shop): whoever holds its key "
        "can read every backup in it"
    ]


def test_policies_of_one_namespace_may_share_a_repository(minimal_policy, write_policy):
    other = json.loads(json.dumps(minimal_policy))
    other["metadata"]["name"] = "orders-cache"
    problems, warnings = repository_sharing(load_policies([write_policy([minimal_policy, other])]))
    assert (problems, warnings) == ([], [])


def test_every_example_validates_against_the_exported_json_schema():
    schema = json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    for path in example_files():
        for doc in yaml.safe_load_all(path.read_text()):
            assert not list(validator.iter_errors(doc)), path


def test_json_schema_rejects_an_unknown_key(minimal_policy):
    minimal_policy["spec"]["volumes"][0]["size"] = "10Gi"
    errors = list(jsonschema.Draft202012Validator(json_schema()).iter_errors(minimal_policy))
    assert errors and "size" in errors[0].message


def test_plan_is_read_back_by_the_steps_unchanged():
    for item in load_policies(example_files()):
        plan = plan_for(item.policy)
        again = plan_from_dict(json.loads(plan.to_json()))
        assert again == plan
        assert again.repository.url == item.policy.spec.repository.url
        assert [v.name for v in again.volumes] == [v.volume_name for v in item.policy.spec.volumes]


def test_group_consistency_reaches_the_plan_with_its_group_class():
    loaded = {i.policy.name: i.policy for i in load_policies([ROOT / "examples/multi-volume-app.yaml"])}
    plan = plan_for(loaded["media-uploads"])
    assert plan.consistency == "group"
    # the VolumeGroupSnapshotClass has its own field; "class" stays the VolumeSnapshotClass
    assert plan.snapshot.group_class == "csi-hostpath-groupsnapclass"
    assert plan.snapshot.snapshot_class is None
    assert json.loads(plan.to_json())["snapshot"]["group_class"] == "csi-hostpath-groupsnapclass"
    assert plan_for(loaded["media-indexer"]).consistency == "volume"
    assert plan_for(loaded["media-indexer"]).snapshot.group_class is None


def test_a_plan_without_the_newer_keys_still_reads():
    # GIVEN a plan written before snapshot.group_class and capture existed
    plan = json.loads(plan_for(load_policies(example_files())[0].policy).to_json())
    del plan["snapshot"]["group_class"]
    del plan["capture"]
    # WHEN the steps read it THEN the defaults apply
    again = plan_from_dict(plan)
    assert again.snapshot.group_class is None
    assert again.capture.secrets is True


def test_capture_secrets_is_on_by_default_and_reaches_the_plan(minimal_policy, write_policy):
    policy = load_policies([write_policy(minimal_policy)])[0].policy
    assert policy.spec.capture.secrets is True
    assert plan_for(policy).capture.secrets is True
    minimal_policy["spec"]["capture"] = {"secrets": False}
    policy = load_policies([write_policy(minimal_policy)])[0].policy
    assert json.loads(plan_for(policy).to_json())["capture"] == {"secrets": False}


def test_local_paths_make_a_local_plan(minimal_policy, write_policy, tmp_path):
    minimal_policy["spec"]["volumes"] = [{"path": str(tmp_path / "pgdata"), "name": "data"}]
    minimal_policy["spec"]["quiesce"][0] = {"hook": "postgresql", "local": True, "params": {"port": 5432}}
    minimal_policy["spec"]["repository"]["url"] = f"file://{tmp_path}/repo"
    policy = load_policies([write_policy(minimal_policy)])[0].policy
    plan = plan_for(policy)
    assert plan.snapshot.driver == "local"
    assert plan.volumes[0].path == str(tmp_path / "pgdata")
    assert plan.targets[0].local is True


def test_schema_command_prints_the_schema():
    out = subprocess.run(
        [sys.executable, "-m", "workflows", "schema"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    schema = json.loads(out.stdout)
    assert schema["title"] == "Snapflow ProtectionPolicy"
    assert set(schema["required"]) == {"apiVersion", "kind", "metadata", "spec"}


def test_every_policy_field_is_in_the_policy_reference():
    from pydantic import BaseModel

    from workflows.policy import Policy

    text = (ROOT / "docs/user/policy-reference.md").read_text()
    missing = []
    stack: list[tuple[type[BaseModel], str]] = [(Policy, "")]
    while stack:
        model, prefix = stack.pop()
        for name, field in model.model_fields.items():
            path = f"{prefix}{field.alias or name}"
            if f"`{path}`" not in text:
                missing.append(path)
            annotation = field.annotation
            for arg in (annotation, *getattr(annotation, "__args__", ())):
                for inner in (arg, *getattr(arg, "__args__", ())):
                    if isinstance(inner, type) and issubclass(inner, BaseModel):
                        is_list = "list[" in str(annotation)
                        stack.append((inner, f"{path}{'[]' if is_list else ''}."))
    assert missing == []
