"""Policies with spec.source (etcd, registry, bucket): each example in examples/sources lints and renders
to manifests the project's validators accept, with a backup, a CronWorkflow and a restore template;
every step account holds Argo's executor rule only; the source step's container gets no API token;
registry and bucket pods pass Pod Security restricted, etcd from the node's certificates needs
privileged; a bad spec.source is one line naming the field."""

from __future__ import annotations

import copy
import json

import pytest
import yaml

from steps.manifests.podsecurity import check
from tests.fixtures.policies import MINIMAL_POLICY, ROOT
from workflows.cli import main
from workflows.pod_security import argo_pods, pod_templates
from workflows.policy import PolicyError, load_policies, parse_policy
from workflows.render import render_files
from workflows.validate import lint_rendering

SOURCES = sorted((ROOT / "examples" / "sources").glob("*.yaml"))
SOURCE_STEPS = {"etcd": "etcd-snapshot", "registry": "registry-backup", "bucket": "bucket-backup"}
EXECUTOR_ONLY = [
    {"apiGroups": ["argoproj.io"], "resources": ["workflowtaskresults"], "verbs": ["create", "patch"]}
]


def _kind(path) -> str:
    return load_policies([path])[0].policy.source_kind or ""


def _objects(path) -> dict[tuple[str, str], dict]:
    return {(o.kind, o.name): o.obj for o in render_files([path]).objects}


def _source_policy(**source) -> dict:
    doc = copy.deepcopy(MINIMAL_POLICY)
    for field in ("volumes", "quiesce", "app", "selector"):
        doc["spec"].pop(field, None)
    doc["spec"]["source"] = source
    return doc


def test_there_is_an_example_of_each_source():
    assert sorted(_kind(p) for p in SOURCES) == ["bucket", "etcd", "registry"]


@pytest.mark.slow  # kubernetes-validate of every object: about a second each
@pytest.mark.parametrize("path", SOURCES, ids=[p.stem for p in SOURCES])
def test_example_lints_clean_without_warnings_about_its_source(path, capsys):
    # GIVEN a source example WHEN snapflow lint runs on it
    code = main(["lint", str(path)])
    out = capsys.readouterr()
    # THEN it passes, and nothing warns that its backups are not committed (finalize commits them)
    assert code in (0, None), out.err + out.out
    assert not [line for line in (out.err + out.out).splitlines() if "spec.source:" in line]
    assert "not commit" not in out.err + out.out


@pytest.mark.slow
@pytest.mark.parametrize("path", SOURCES, ids=[p.stem for p in SOURCES])
def test_example_renders_backup_cron_and_restore_that_the_validators_accept(path):
    rendering = render_files([path])
    assert lint_rendering(rendering) == []
    objects = {(o.kind, o.name): o.obj for o in rendering.objects}
    name = load_policies([path])[0].policy.name
    kind = _kind(path)
    backup = objects[("WorkflowTemplate", f"backup-{name}")]
    assert ("CronWorkflow", f"backup-{name}") in objects
    assert ("WorkflowTemplate", f"restore-{name}") in objects
    # the plan finalize reads: the source's kind, no targets, no volumes, no credential
    (plan_map,) = [o for (k, _), o in objects.items() if k == "ConfigMap"]
    plan = json.loads(plan_map["data"]["plan.json"])
    assert plan["source"] == {"kind": kind, "name": name}
    assert plan["targets"] == [] and plan["volumes"] == []
    assert "password" not in plan_map["data"]["plan.json"].lower()
    assert not any(n.startswith("restore-app-") for _, n in objects)
    templates = {t["name"]: t for t in backup["spec"]["templates"]}
    step = templates[SOURCE_STEPS[kind]]
    args = step["container"]["args"]
    assert args[args.index("--backup-id") + 1] == "{{workflow.name}}"
    assert step["retryStrategy"]["expression"] == "asInt(lastRetry.exitCode) == 75"
    dag = {t["name"]: t for t in templates["main"]["dag"]["tasks"]}
    assert dag["verify"]["dependencies"] == [SOURCE_STEPS[kind]]
    # finalize commits the backup, after everything, with the plan and the repository only
    assert backup["spec"]["onExit"] == "finalize" and "finalize" not in dag
    final = templates["finalize"]
    fargs = final["container"]["args"]
    assert fargs[0] == "finalize" and fargs[fargs.index("--workflow-status") + 1] == "{{workflow.status}}"
    assert final["automountServiceAccountToken"] is False
    assert {v["name"] for v in final["volumes"]} >= {"plan"}
    assert (
        "hostPath" not in str(final["volumes"])
        and "committed only when" in backup["metadata"]["annotations"]["workflows.argoproj.io/description"]
    )


@pytest.mark.parametrize("path", SOURCES, ids=[p.stem for p in SOURCES])
def test_every_step_account_holds_only_the_executor_rule_and_source_steps_get_no_token(path):
    objects = _objects(path)
    roles = [o for (k, _), o in objects.items() if k == "Role"]
    assert roles and all(r["rules"] == EXECUTOR_ONLY for r in roles)
    assert not any(k in ("ClusterRole", "ClusterRoleBinding") for k, _ in objects)
    for (k, _), obj in objects.items():
        if k != "WorkflowTemplate":
            continue
        for t in obj["spec"]["templates"]:
            if t.get("container", {}).get("args", [""])[0] in (*SOURCE_STEPS.values(), "etcd-restore",
                                                                "registry-restore", "bucket-restore"):  # fmt: skip
                assert t["automountServiceAccountToken"] is False
                assert t["executor"]["serviceAccountName"] == t["serviceAccountName"]


@pytest.mark.parametrize("path", SOURCES, ids=[p.stem for p in SOURCES])
def test_pod_security_registry_and_bucket_restricted_etcd_on_the_node_privileged(path):
    kind = _kind(path)
    for (k, name), obj in _objects(path).items():
        if k != "WorkflowTemplate":
            continue
        for template, spec, notes in argo_pods(obj):
            on_node = any("hostPath" in v for v in spec["volumes"])
            if kind == "etcd" and template.startswith("etcd-"):
                # kubeadm's certificates (and the restored data directory) are the node's files
                assert on_node
                assert check(spec, "baseline", notes), f"{name}/{template}"
                assert not check(spec, "privileged", notes)
            else:
                assert not on_node
                assert not check(spec, "restricted", notes), f"{name}/{template}"


def test_credentials_are_secret_references_only(tmp_path):
    # GIVEN the registry example WHEN rendered THEN the robot's Secret is only ever a reference
    path = next(p for p in SOURCES if _kind(p) == "registry")
    text = yaml.safe_dump([o.obj for o in render_files([path]).objects])
    assert "--password-file" in text and "secretName: harbor-robot" in text
    assert "--password\n" not in text and "stringData" not in text


def test_etcd_with_a_secret_runs_as_non_root_and_passes_restricted():
    policy = parse_policy(_source_policy(etcd={"tls": {"secretName": "etcd-client"}}))
    etcd = [t for t in pod_templates(policy) if t.template.startswith("etcd-snapshot")]
    assert etcd and not check(etcd[0].spec, "restricted", etcd[0].annotations)


@pytest.mark.parametrize(
    ("source", "extra", "expected"),
    [
        ({}, {}, "spec.source: expected exactly one of etcd, registry and bucket"),
        (
            {
                "etcd": {"tls": {"secretName": "a"}},
                "bucket": {"endpoint": "https://s3.example.com", "bucket": "abc"},
            },
            {},
            "spec.source: expected exactly one of etcd, registry and bucket, got etcd and bucket",
        ),
        ({"etcd": {"tls": {}}}, {}, "spec.source.etcd.tls: expected exactly one of hostPath and secretName"),
        (
            {"registry": {"url": "https://r.example.com"}},
            {},
            "spec.source.registry: expected exactly one of repositories, images and imagesOf",
        ),
        (
            {"bucket": {"endpoint": "https://s3.example.com", "bucket": "abc", "color": 1}},
            {},
            "spec.source.bucket.color: unknown field",
        ),
        (
            {
                "registry": {
                    "url": "https://r.example.com",
                    "images": ["r.example.com/a:1"],
                    "rehome": [
                        {"from": "r.example.com/a", "to": "b.example.com/a"},
                        {"from": "r.example.com/c", "to": "c.example.com/c"},
                    ],
                }
            },
            {},
            "spec.source.registry.rehome: expected every rule to move to one registry",
        ),
        (
            {"etcd": {"tls": {"secretName": "a"}}},
            {"volumes": [{"pvc": "data"}]},
            "spec.volumes: expected no volumes with spec.source (it protects no app)",
        ),
        (
            {"etcd": {"tls": {"secretName": "a"}}},
            {"schedule": {"cron": "@daily", "prune": "@weekly"}},
            "spec.schedule: expected no prune schedule with spec.source",
        ),
    ],
)
def test_bad_source_is_one_line_naming_the_field(source, extra, expected):
    doc = _source_policy(**source)
    doc["spec"].update(extra)
    with pytest.raises(PolicyError) as err:
        parse_policy(doc, "p.yaml")
    assert len(err.value.problems) == 1
    assert err.value.problems[0].startswith(f"p.yaml: {expected}")


def test_an_app_without_volumes_still_needs_them():
    doc = copy.deepcopy(MINIMAL_POLICY)
    doc["spec"].pop("volumes")
    with pytest.raises(PolicyError) as err:
        parse_policy(doc, "p.yaml")
    assert err.value.problems == ["p.yaml: spec.volumes: required"]


# -- preflight against the fake API server -----------------------------------------------------------


@pytest.fixture
def client(kube_server, kubeconfig):
    from steps.drivers.kube import KubeClient, KubeSettings

    return KubeClient(KubeSettings.from_env())


def _namespace(server, name: str, level: str) -> None:
    labels = {"pod-security.kubernetes.io/enforce": level}
    server.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})


def test_preflight_says_etcd_on_the_node_needs_privileged_and_names_missing_secrets(kube_server, client):
    from workflows.cluster_preflight import preflight_policy

    # GIVEN the etcd example's namespace enforcing baseline, without the repository's Secrets
    policy = load_policies([next(p for p in SOURCES if _kind(p) == "etcd")])[0].policy
    _namespace(kube_server, policy.namespace, "baseline")
    # WHEN preflight checks the policy
    result = preflight_policy(client, policy)
    failed = [c["message"] for c in result.failed]
    # THEN the Secrets are named, and each etcd template is rejected with the level it needs
    assert any("Secret snapflow-etcd/snapflow-repository does not exist" in m for m in failed)
    etcd = [m for m in failed if "template etcd-" in m]
    assert etcd and all("it needs the privileged level" in m for m in etcd)


def test_preflight_admits_registry_pods_at_restricted(kube_server, client):
    from workflows.cluster_preflight import preflight_policy

    policy = load_policies([next(p for p in SOURCES if _kind(p) == "registry")])[0].policy
    _namespace(kube_server, policy.namespace, "restricted")
    result = preflight_policy(client, policy)
    security = [(c["status"], c["message"]) for c in result.items if c["check"] == "pod-security"]
    admitted = ("ok", "enforce=restricted admits the 7 step pods of the workflows")  # finalize included
    assert admitted in security
    assert not [c for c in result.failed if c["check"] == "pod-security"]


def test_source_examples_validate_against_the_exported_json_schema():
    import jsonschema

    from workflows.policy import json_schema

    validator = jsonschema.Draft202012Validator(json_schema())
    for path in SOURCES:
        assert not list(validator.iter_errors(yaml.safe_load(path.read_text()))), path
    # and an unknown key under spec.source is an editor error too
    doc = _source_policy(bucket={"endpoint": "https://s3.example.com", "bucket": "abc", "color": 1})
    assert list(validator.iter_errors(doc))


def test_registry_restore_pushes_to_the_registry_its_rehome_rules_move_to():
    path = next(p for p in SOURCES if _kind(p) == "registry")
    restore = _objects(path)[("WorkflowTemplate", "restore-harbor-shop")]
    params = {p["name"]: p.get("value") for p in restore["spec"]["arguments"]["parameters"]}
    assert params["target-registry"] == "https://harbor-dr.example.com"
    assert params["allow-uncommitted"] == "false"
    for t in restore["spec"]["templates"]:
        if "container" in t:
            args = t["container"]["args"]
            assert args[args.index("--registry") + 1] == "{{workflow.parameters.target-registry}}"
            assert args[args.index("--rehome") + 1] == "harbor.example.com/shop=harbor-dr.example.com/shop"


def test_bucket_restore_takes_the_target_keys_from_a_secret_named_at_submit():
    path = next(p for p in SOURCES if _kind(p) == "bucket")
    restore = _objects(path)[("WorkflowTemplate", "restore-shop-uploads")]
    params = {p["name"]: p for p in restore["spec"]["arguments"]["parameters"]}
    assert params["target-credentials-secret"]["value"] == "uploads-reader"
    assert params["dry-run"]["value"] == "true"
    for t in restore["spec"]["templates"]:
        if "container" in t:
            (creds,) = [v for v in t["volumes"] if v["name"] == "bucket-credentials"]
            assert creds["secret"]["secretName"] == "{{workflow.parameters.target-credentials-secret}}"
            args = t["container"]["args"]
            assert "--target-access-key-file" in args and "AWS_SECRET_ACCESS_KEY" not in " ".join(args)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.stem)
def test_plan_of_a_source_policy_names_its_source_and_no_volume(path):
    from workflows.pipelines import plan_for

    policy = load_policies([path])[0].policy
    plan = plan_for(policy)
    assert plan.source is not None and plan.source.kind == _kind(path)
    assert plan.volumes == () and plan.targets == ()
