"""``spec.notifications`` of a policy: checked by the same function finalize uses, rendered as finalize's
``--notify`` options (names and file paths only) with the Secrets mounted as files, never in the
environment, and nothing for policies without it or for local runs."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from steps.manifests.notifications import parse_arg
from workflows.hera_builder import build_workflow_template
from workflows.pipeline_notifications import notification_secrets
from workflows.pipelines import pipelines_for
from workflows.policy import PolicyError, parse_policy

ROOT = Path(__file__).resolve().parents[2]
APP = {
    "apiVersion": "snapflow.io/v1alpha1",
    "kind": "ProtectionPolicy",
    "metadata": {"name": "orders-db", "namespace": "shop"},
    "spec": {
        "volumes": [{"pvc": "data-orders-db-0"}],
        "repository": {
            "url": "s3://backups/shop",
            "credentialsSecret": {"name": "snapflow-s3"},
            "passwordSecret": {"name": "snapflow-repository"},
        },
    },
}
HOOKS = [
    {
        "name": "ops",
        "format": "slack",
        "urlSecret": {"name": "hooks", "key": "slack-url"},
        "secretRef": {"name": "hooks", "key": "hmac"},
        "on": ["failure"],
    },
    {
        "name": "audit",
        "url": "https://audit.example/hook",
        "caBundleSecret": {"name": "audit-ca", "key": "ca.crt"},
    },
]


def policy_with(notifications, base=APP):
    data = copy.deepcopy(base)
    data["spec"]["notifications"] = notifications
    return parse_policy(data, "p.yaml")


def finalize_template(policy) -> dict:
    backup = next(p for p in pipelines_for(policy) if p.name == "backup")
    template = build_workflow_template(backup).to_dict()
    return next(t for t in template["spec"]["templates"] if t["name"] == "finalize")


def test_finalize_gets_each_webhook_as_a_spec_of_files_and_mounts_its_secrets():
    policy = policy_with(HOOKS)
    finalize = finalize_template(policy)
    args = finalize["container"]["args"]
    specs = [json.loads(args[i + 1]) for i, a in enumerate(args) if a == "--notify"]
    assert specs == [
        {"format": "slack", "name": "ops", "on": ["failure"], "secret_file": "/etc/snapflow/notify/ops/hmac/key",
         "url_file": "/etc/snapflow/notify/ops/url/url"},
        {"ca_file": "/etc/snapflow/notify/audit/ca/ca.crt", "format": "json", "name": "audit",
         "on": ["commit", "failure"], "url": "https://audit.example/hook"},
    ]  # fmt: skip
    for i, a in enumerate(args):  # what finalize will parse, with the same check lint used
        if a == "--notify":
            parse_arg(args[i + 1])
    mounted = {v["name"]: v["secret"] for v in finalize["volumes"] if v["name"].startswith("notify-")}
    assert mounted["notify-0-url"] == {
        "secretName": "hooks", "items": [{"key": "slack-url", "path": "url"}], "defaultMode": 0o440,
    }  # fmt: skip
    assert set(mounted) == {"notify-0-url", "notify-0-hmac", "notify-1-ca"}
    mounts = {m["name"]: m for m in finalize["container"]["volumeMounts"]}
    assert mounts["notify-0-hmac"] == {
        "name": "notify-0-hmac",
        "mountPath": "/etc/snapflow/notify/ops/hmac",
        "readOnly": True,
    }
    env_secrets = {
        e["valueFrom"]["secretKeyRef"]["name"]
        for e in finalize["container"].get("env") or []
        if "valueFrom" in e
    }
    assert env_secrets == {"snapflow-s3"}  # the repository's keys, as before; no webhook Secret
    assert "automountServiceAccountToken" not in finalize  # an app's finalize still calls the API
    assert notification_secrets(policy) == [
        ("Secret", "shop", "audit-ca", ("ca.crt",)), ("Secret", "shop", "hooks", ("hmac", "slack-url")),
    ]  # fmt: skip


def test_the_rendered_template_holds_no_secret_and_no_credential_in_a_url():
    text = yaml.safe_dump(finalize_template(policy_with(HOOKS)))
    assert "slack.com" not in text and "hooks.slack" not in text
    assert (
        "secretKeyRef:\n        key: hmac" not in text and "key: slack-url" in text
    )  # a file, not a variable


def test_a_policy_without_notifications_renders_finalize_as_before():
    plain = finalize_template(parse_policy(copy.deepcopy(APP), "p.yaml"))
    empty = finalize_template(policy_with([]))
    assert plain == empty and "--notify" not in plain["container"]["args"]
    assert not any(v["name"].startswith("notify-") for v in plain["volumes"])


def test_a_source_policys_finalize_notifies_without_an_api_token():
    bucket = yaml.safe_load((ROOT / "examples/sources/bucket.yaml").read_text())
    policy = policy_with([HOOKS[1]], base=bucket)
    finalize = finalize_template(policy)
    assert "--notify" in finalize["container"]["args"]
    assert finalize.get("automountServiceAccountToken") is False
    assert any(v["name"] == "notify-0-ca" for v in finalize["volumes"])


def test_the_bare_yaml_key_on_is_read_as_the_events():
    data = yaml.safe_load("name: ops\nurl: https://h.example/x\non: [failure]\n")
    assert True in data  # YAML 1.1
    assert policy_with([data]).spec.notifications[0].on == ["failure"]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"name": "a", "url": "https://h.example/x?token=s3cr3t"}, "[0].url: expected no query string"),
        ({"name": "a", "url": "https://me:pw@h.example/x"}, "[0].url: expected no user or password"),
        (
            {"name": "a", "format": "teams", "url": "https://x.webhook.office.com/a"},
            "[0].url: expected the URL of a teams webhook in a Secret",
        ),
        ({"name": "a"}, "[0].url: expected exactly one"),
        ({"name": "Ops!", "url": "https://h.example/"}, "[0].name: expected a name of lowercase"),
        (
            {"name": "a", "url": "https://h.example/", "on": ["always"]},
            "[0].on[0]: expected 'commit' or 'failure'",
        ),
        ({"name": "a", "url": "https://h.example/", "headers": {}}, "[0].headers: unknown field"),
    ],
)
def test_lint_refuses_what_finalize_would_in_one_line_naming_the_field(entry, message):
    with pytest.raises(PolicyError) as caught:
        policy_with([entry])
    assert len(caught.value.problems) == 1, caught.value.problems
    line = caught.value.problems[0]
    assert line.startswith("p.yaml: spec.notifications") and message in line, line
    assert "s3cr3t" not in line and "pw@" not in line


def test_names_are_distinct():
    with pytest.raises(PolicyError, match=r"spec.notifications: expected distinct names, 'a' is given twice"):
        policy_with(
            [{"name": "a", "url": "https://h.example/1"}, {"name": "a", "url": "https://h.example/2"}]
        )


def test_render_and_lint_list_the_webhooks_secrets_with_the_others(tmp_path):
    data = copy.deepcopy(APP)
    data["spec"]["notifications"] = HOOKS
    data["spec"]["repository"]["passwordSecret"] = {"name": "hooks"}  # one Secret holding both
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(data))
    for command in (["lint", str(path)], ["render", str(path), "-o", str(tmp_path / "out")]):
        proc = subprocess.run(
            [sys.executable, "-m", "workflows", *command], cwd=ROOT, capture_output=True, text=True
        )
        assert proc.returncode == 0, proc.stderr
        needs = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("needs ")]
        assert "needs Secret shop/hooks (keys: hmac, password, slack-url)" in needs
        assert "needs Secret shop/audit-ca (keys: ca.crt)" in needs
