"""Argo Server access: connection settings from options, env and files; the request bodies; and a
round trip against a small local HTTP server that records what it receives."""

from __future__ import annotations

import argparse
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from steps.errors import PermanentError, TemporaryError, UsageError
from tests.fixtures.http import serving
from workflows.cli import main
from workflows.submit import (
    ServerSettings,
    add_server_arguments,
    apply_objects,
    parse_parameters,
    request_body,
    settings_from,
    submit,
    submit_request,
)


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_server_arguments(parser)
    return parser.parse_args(list(argv))


def test_server_and_token_come_from_the_environment():
    settings = settings_from(_args(), {"ARGO_SERVER": "argo.example:2746", "ARGO_TOKEN": "Bearer abc"})
    assert settings.url == "https://argo.example:2746/"
    assert settings.token == "Bearer abc"
    assert settings.verify is True
    assert "abc" not in repr(settings)


def test_plain_http_when_argo_secure_is_false_and_base_href_is_appended():
    env = {"ARGO_SERVER": "localhost:2746", "ARGO_SECURE": "false", "ARGO_BASE_HREF": "/argo/"}
    assert settings_from(_args(), env).url == "http://localhost:2746/argo/"


def test_options_win_over_the_environment(tmp_path):
    token = tmp_path / "token"
    token.write_text("from-file\n")
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    settings = settings_from(
        _args("--server", "https://other:443", "--token-file", str(token), "--ca-file", str(ca)),
        {"ARGO_SERVER": "argo:2746", "ARGO_TOKEN": "from-env"},
    )
    assert (settings.url, settings.token, settings.verify) == ("https://other:443/", "from-file", str(ca))


def test_token_file_from_the_environment_and_insecure_flag(tmp_path):
    token = tmp_path / "token"
    token.write_text("tok")
    env = {"ARGO_SERVER": "argo:2746", "ARGO_TOKEN_FILE": str(token), "ARGO_INSECURE_SKIP_VERIFY": "true"}
    settings = settings_from(_args(), env)
    assert (settings.token, settings.verify) == ("tok", False)


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        ((), {}, "--server: required (or set ARGO_SERVER), expected the Argo Server URL or host:port"),
        (("--server", "ftp://argo"), {}, "--server: expected an http:// or https:// URL, got ftp://"),
        (
            ("--server", "argo", "--token-file", "/nonexistent/token"),
            {},
            "--token-file: cannot read /nonexistent/token (No such file or directory)",
        ),
        (
            ("--server", "argo", "--ca-file", "/nonexistent/ca.pem"),
            {},
            "--ca-file: /nonexistent/ca.pem does not exist",
        ),
        (
            ("--server", "argo", "--ca-file", "/etc/hostname", "--insecure-skip-tls-verify"),
            {},
            "--ca-file: expected either a CA bundle or --insecure-skip-tls-verify, not both",
        ),
        (
            ("--server", "argo", "--client-cert", "/etc/hostname"),
            {},
            "--client-cert: expected both --client-cert and --client-key",
        ),
        (
            ("--server", "argo", "--timeout", "0"),
            {},
            "--timeout: expected a positive number of seconds, got 0.0",
        ),
    ],
    ids=["no-server", "scheme", "token-file", "ca-file", "ca-and-insecure", "half-cert", "timeout"],
)
def test_bad_connection_settings_are_one_line_usage_errors(argv, env, message):
    with pytest.raises(UsageError) as err:
        settings_from(_args(*argv), env)
    assert str(err.value) == message


def test_parameters_must_be_name_value():
    assert parse_parameters(["a=1", "b=x=y", "c="]) == ["a=1", "b=x=y", "c="]
    with pytest.raises(UsageError, match=r"--parameter: expected NAME=VALUE, got 'novalue'"):
        parse_parameters(["novalue"])


def test_submit_request_body_is_what_argo_submit_from_sends():
    request = submit_request("shop", "backup-orders-db", ["read-data-percent=100"], {"team": "db"})
    assert request_body(request) == {
        "namespace": "shop",
        "resourceKind": "WorkflowTemplate",
        "resourceName": "backup-orders-db",
        "submitOptions": {"parameters": ["read-data-percent=100"], "labels": "team=db"},
    }
    assert request_body(submit_request("shop", "backup-orders-db")) == {
        "namespace": "shop",
        "resourceKind": "WorkflowTemplate",
        "resourceName": "backup-orders-db",
        "submitOptions": {},
    }


class _Recorder(BaseHTTPRequestHandler):
    """Answers like an Argo Server for the few calls used, and records every request."""

    def log_message(self, *args):  # keep test output clean
        pass

    def _reply(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _record(self) -> dict:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        entry = {
            "method": self.command,
            "path": self.path.split("?")[0],
            "auth": self.headers.get("Authorization"),
            "body": body,
        }
        self.server.requests.append(entry)
        return entry

    def do_GET(self):
        entry = self._record()
        if self.server.status != 200:
            return self._reply(self.server.status, {"message": "token not valid"})
        name = entry["path"].rsplit("/", 1)[1]
        if entry["path"] in self.server.existing:
            spec = (
                {"schedules": ["0 0 * * *"], "workflowSpec": {}}
                if "/cron-workflows/" in entry["path"]
                else {}
            )
            meta = {"name": name, "namespace": "shop", "resourceVersion": "41"}
            return self._reply(200, {"metadata": meta, "spec": spec})
        return self._reply(404, {"message": f"{name} not found"})

    def do_POST(self):
        entry = self._record()
        if self.server.status != 200:
            return self._reply(self.server.status, {"message": "token not valid"})
        body = entry["body"]
        if entry["path"].endswith("/submit"):
            return self._reply(
                200, {"metadata": {"name": "backup-orders-db-x7k2p", "namespace": "shop"}, "spec": {}}
            )
        obj = body.get("template") or body.get("cronWorkflow")
        return self._reply(200, obj)

    def do_PUT(self):
        entry = self._record()
        obj = entry["body"].get("template") or entry["body"].get("cronWorkflow")
        return self._reply(200, obj)


@pytest.fixture
def argo_server():
    with serving(_Recorder, requests=[], existing=set(), status=200) as server:
        yield server


def _settings(server, token="Bearer t0ken") -> ServerSettings:
    return ServerSettings(url=f"http://127.0.0.1:{server.server_address[1]}/", token=token, timeout_s=5)


def test_submit_posts_the_request_with_the_token(argo_server):
    name = submit(_settings(argo_server), submit_request("shop", "backup-orders-db", ["read-data-percent=5"]))
    assert name == "backup-orders-db-x7k2p"
    (req,) = argo_server.requests
    assert req["method"] == "POST"
    assert req["path"] == "/api/v1/workflows/shop/submit"
    assert req["auth"] == "Bearer t0ken"
    assert req["body"]["resourceName"] == "backup-orders-db"
    assert req["body"]["submitOptions"] == {"parameters": ["read-data-percent=5"]}


def test_a_refused_token_is_a_permanent_error_that_does_not_show_it(argo_server):
    argo_server.status = 401
    with pytest.raises(PermanentError) as err:
        submit(_settings(argo_server, "Bearer sup3r-s3cret"), submit_request("shop", "backup-orders-db"))
    assert "401" in str(err.value) and "sup3r-s3cret" not in str(err.value)


def test_an_unreachable_server_is_a_temporary_error():
    with ThreadingHTTPServer(("127.0.0.1", 0), _Recorder) as probe:
        port = probe.server_address[1]
    settings = ServerSettings(url=f"http://127.0.0.1:{port}/", token="Bearer x", timeout_s=2)
    with pytest.raises(TemporaryError, match="cannot reach the Argo Server"):
        submit(settings, submit_request("shop", "backup-orders-db"))


def test_apply_creates_missing_objects_and_updates_existing_ones(argo_server, rendered_examples):
    # GIVEN the backup template exists already and its CronWorkflow does not
    rendering = rendered_examples["postgresql-statefulset.yaml"]
    objects = [o.obj for o in rendering.ordered() if o.name == "backup-orders-db"]
    argo_server.existing = {"/api/v1/workflow-templates/shop/backup-orders-db"}
    # WHEN applied
    lines = apply_objects(_settings(argo_server), objects)
    # THEN the template is updated with the server's resourceVersion, the CronWorkflow created
    assert lines == [
        "updated WorkflowTemplate shop/backup-orders-db",
        "created CronWorkflow shop/backup-orders-db",
    ]
    writes = [(r["method"], r["path"]) for r in argo_server.requests if r["method"] != "GET"]
    assert writes == [
        ("PUT", "/api/v1/workflow-templates/shop/backup-orders-db"),
        ("POST", "/api/v1/cron-workflows/shop"),
    ]
    put = next(r for r in argo_server.requests if r["method"] == "PUT")
    assert put["body"]["template"]["metadata"]["resourceVersion"] == "41"
    assert put["body"]["template"]["spec"]["onExit"] == "finalize"


def test_apply_creates_what_the_server_does_not_have(argo_server, rendered_examples):
    rendering = rendered_examples["mongodb.yaml"]
    objects = [o.obj for o in rendering.ordered() if o.kind in ("WorkflowTemplate", "CronWorkflow")]
    lines = apply_objects(_settings(argo_server), objects)
    assert all(line.startswith("created ") for line in lines) and len(lines) == len(objects)
    posts = [r for r in argo_server.requests if r["method"] == "POST"]
    sent = [p["body"].get("template") or p["body"].get("cronWorkflow") for p in posts]
    assert sent[0]["metadata"]["name"] == objects[0]["metadata"]["name"]
    assert sent[0]["spec"]["templates"] == objects[0]["spec"]["templates"]


def test_submit_command_prints_the_workflow_name(argo_server, capsys, monkeypatch):
    monkeypatch.setenv("ARGO_TOKEN", "Bearer env-token")
    port = argo_server.server_address[1]
    rc = main(["submit", "-n", "shop", "backup-orders-db", "-p", "read-data-percent=25",
               "--server", f"http://127.0.0.1:{port}"])  # fmt: skip
    assert rc == 0
    assert capsys.readouterr().out.strip() == "backup-orders-db-x7k2p"
    assert argo_server.requests[0]["auth"] == "Bearer env-token"


def test_apply_dry_run_sends_nothing(capsys):
    from tests.fixtures.policies import EXAMPLES

    rc = main(["apply", "--dry-run", str(EXAMPLES / "postgresql-statefulset.yaml")])
    out = capsys.readouterr()
    assert rc == 0
    assert "would apply WorkflowTemplate shop/backup-orders-db" in out.out
    assert "kubectl apply -k" in out.err


@pytest.mark.on_cluster
def test_submit_to_a_real_argo_server():
    """Needs ARGO_SERVER/ARGO_TOKEN of a cluster where the example policy was applied with kubectl."""
    import os

    settings = settings_from(_args(), os.environ)
    name = submit(settings, submit_request(os.environ.get("ARGO_NAMESPACE", "shop"), "check-orders-db"))
    assert name.startswith("check-orders-db-")
