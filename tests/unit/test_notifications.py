"""Notifications of a backup's outcome, posted to local HTTP receivers on ephemeral ports: the HMAC
signature over the exact body, the json, slack and teams bodies, no secret in a message, receivers that
are down, answer 500 or hang (bounded in time, counted and logged in one line, the outcome unchanged),
redirects followed only to the same host, and the one check of a target's spec."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from steps.drivers.webhooks import post
from steps.manifests.notifications import SIGNATURE_HEADER, spec_problems
from steps.manifests.notify import notify
from steps.plan import AppRef, Plan, SourceRef
from tests.fixtures.http import serving

ROOT = Path(__file__).resolve().parents[2]
HMAC_KEY = "n0t1fy-hmac-k3y-value"
URL_TOKEN = "T0KEN-in-the-url-path"


class Receiver(BaseHTTPRequestHandler):
    """Records each POST (path, headers, body); answers ``server.status`` after ``server.delay`` s, or
    redirects to ``server.location``."""

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.got.append((self.path, dict(self.headers), body))
        if self.server.delay:
            time.sleep(self.server.delay)
        if self.server.location and not self.path.endswith("/moved"):
            self.send_response(307)
            self.send_header("Location", self.server.location)
        else:
            self.send_response(self.server.status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def receiving(status=200, delay=0.0, location=None):
    return serving(Receiver, got=[], status=status, delay=delay, location=location)


def url_of(server, path="/hook/" + URL_TOKEN) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}{path}"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def files(tmp_path):
    def write(name: str, text: str) -> str:
        path = tmp_path / name
        path.write_text(text + "\n")
        return str(path)

    return write


PLAN = Plan(AppRef("shop", "uploads", "prod", "uploads"), None, (), (), source=SourceRef("bucket", "uploads"))


def spec(name: str, *, url_file: str, fmt: str = "json", on=("commit", "failure"), secret_file=None) -> str:
    out = {"name": name, "url_file": url_file, "format": fmt, "on": list(on)}
    if secret_file:
        out["secret_file"] = secret_file
    return json.dumps(out)


def test_each_format_is_posted_signed_over_the_exact_body_without_secrets(files):
    key_file = files("hmac", HMAC_KEY)
    with receiving() as server:
        specs = [
            spec(
                fmt,
                url_file=files(f"url-{fmt}", url_of(server, f"/{fmt}/{URL_TOKEN}")),
                fmt=fmt,
                secret_file=key_file,
            )
            for fmt in ("json", "slack", "teams")
        ]
        logged: list[str] = []
        summary = {
            "backup_id": "backup-uploads-x1",
            "workflow_status": "Succeeded",
            "committed": True,
            "record": "r1",
        }
        counts = notify(specs, summary, PLAN, logged.append)
    assert (counts["event"], counts["sent"], counts["failed"], logged) == ("commit", 3, 0, [])
    bodies = {}
    for path, headers, body in server.got:
        expected = "sha256=" + hmac.new(HMAC_KEY.encode(), body, hashlib.sha256).hexdigest()
        assert headers[SIGNATURE_HEADER] == expected
        assert headers["X-Snapflow-Event"] == "commit" and headers["Content-Type"] == "application/json"
        assert HMAC_KEY.encode() not in body and URL_TOKEN.encode() not in body
        bodies[path.split("/")[1]] = json.loads(body)
    plain = bodies["json"]
    assert (plain["event"], plain["backup_id"], plain["committed"], plain["source"]) == (
        "commit", "backup-uploads-x1", True, "bucket/uploads"
    )  # fmt: skip
    assert plain["cluster"] == "prod" and plain["delivery"] == counts["delivery"]
    assert bodies["slack"]["text"] == "Backup backup-uploads-x1 of bucket/uploads committed"
    assert bodies["slack"]["blocks"][0]["text"]["type"] == "mrkdwn"
    card = bodies["teams"]["attachments"][0]
    assert card["contentType"] == "application/vnd.microsoft.card.adaptive"
    assert card["content"]["type"] == "AdaptiveCard" and card["content"]["body"][0]["color"] == "Good"


def test_a_failure_goes_only_to_targets_listening_for_it_with_its_reasons(files):
    with receiving() as server:
        specs = [
            spec("ops", url_file=files("u1", url_of(server, "/ops")), on=("failure",)),
            spec("audit", url_file=files("u2", url_of(server, "/audit")), on=("commit",)),
        ]
        summary = {
            "backup_id": "b2",
            "workflow_status": "Failed",
            "committed": False,
            "error": "verify failed",
        }
        counts = notify(specs, summary, PLAN, print)
    assert [p for p, _, _ in server.got] == ["/ops"] and counts["sent"] == 1
    body = json.loads(server.got[0][2])
    assert body["event"] == "failure" and body["problems"] == ["verify failed"]
    assert SIGNATURE_HEADER not in server.got[0][1]  # no key: unsigned


def test_a_500_is_retried_within_bounds_then_counted_and_logged_in_one_line(files):
    with receiving(status=500) as server:
        started = time.monotonic()
        result = post(url_of(server), b"{}", {}, attempts=3, deadline_s=5, backoff_s=0.05)
        assert time.monotonic() - started < 2
    assert (result.ok, result.status, result.attempts, result.error) == (False, 500, 3, "HTTP 500")
    assert len(server.got) == 3


def test_a_4xx_is_final(files):
    with receiving(status=404) as server:
        result = post(url_of(server), b"{}", {}, attempts=3, backoff_s=0.05)
    assert (result.ok, result.attempts, len(server.got)) == (False, 1, 1)


def test_a_receiver_that_hangs_is_given_up_at_the_deadline():
    with receiving(delay=3) as server:
        started = time.monotonic()
        result = post(
            url_of(server), b"{}", {}, attempts=5, deadline_s=1.0, read_timeout_s=0.4, backoff_s=0.05
        )
        took = time.monotonic() - started
    assert not result.ok and result.error == "timed out" and took < 1.6, (result, took)


def test_a_redirect_is_followed_to_the_same_host_only():
    with receiving() as elsewhere, receiving() as same:
        same.location = url_of(same, "/moved")
        result = post(url_of(same, "/first"), b"{}", {}, attempts=1)
        assert result.ok and [p for p, _, _ in same.got] == ["/first", "/moved"]
        # "localhost" is another host than "127.0.0.1", as far as a signature is concerned
        same.location = f"http://localhost:{elsewhere.server_address[1]}/moved"
        refused = post(url_of(same, "/third"), b"{}", {}, attempts=3, backoff_s=0.01)
    assert not refused.ok and refused.attempts == 1 and "not followed" in refused.error
    assert elsewhere.got == []
    assert "localhost" in refused.error and "/moved" not in refused.error


def test_a_name_resolving_to_a_metadata_address_is_never_posted_to(monkeypatch):
    import socket

    real = socket.getaddrinfo

    def resolve(host, *args, **kwargs):  # the name answers with the metadata service's address
        if host == "hooks.example":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("169.254.169.254", 80))]
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    result = post("http://hooks.example/x", b"{}", {}, attempts=3, backoff_s=0.01)
    assert not result.ok and result.attempts == 1 and result.status is None
    assert result.error == (
        "hooks.example resolves to 169.254.169.254, a link-local or cloud metadata address (never posted to)"
    )


def _finalize(tmp_path: Path, *notify_args: str, status: str = "Failed") -> subprocess.CompletedProcess:
    plan = tmp_path / "plan.json"
    plan.write_text(PLAN.to_json())
    args = [a for n in notify_args for a in ("--notify", n)]
    return subprocess.run(
        [sys.executable, "-m", "steps", "finalize", "--plan", str(plan), "--backup-id", "backup-uploads-9",
         "--workflow-status", status, "--json", *args],
        cwd=ROOT, env=dict(os.environ), capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.mark.slow
def test_finalize_outcome_is_unchanged_when_a_receiver_is_down_or_the_spec_is_bad(tmp_path, files):
    down = f"http://127.0.0.1:{free_port()}/hook?token={URL_TOKEN}"
    started = time.monotonic()
    with receiving() as up:
        proc = _finalize(
            tmp_path,
            spec("down", url_file=files("down", down), secret_file=files("k", HMAC_KEY)),
            spec("up", url_file=files("up", url_of(up))),
            '{"name": "bad", "url": "http://user:pw@example.invalid/"}',
        )
    took = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr  # a failed workflow: nothing to commit, the thaw worked
    summary = json.loads(proc.stdout)
    assert (summary["notifications"]["sent"], summary["notifications"]["failed"]) == (1, 2)
    lines = [line for line in proc.stderr.splitlines() if "notification" in line]
    assert len(lines) == 2, proc.stderr
    assert any("down (http://127.0.0.1:" in line and "connection refused" in line for line in lines)
    assert any("bad" in line and "no user or password" in line for line in lines)
    for text in (proc.stderr, proc.stdout):
        assert URL_TOKEN not in text and HMAC_KEY not in text and "pw@" not in text
    assert took < 30 and len(up.got) == 1


@pytest.mark.parametrize(
    ("given", "field", "why"),
    [
        ({"name": "a", "url": "https://h/x?sig=1"}, "url", "no query string"),
        ({"name": "a", "url": "https://u:p@h/x"}, "url", "no user or password"),
        ({"name": "a", "url": "ftp://h/x"}, "url", "http:// or https://"),
        ({"name": "a", "url": "https://hooks.slack.com/services/x", "format": "slack"}, "url", "in a Secret"),
        ({"name": "a", "url_file": "/f", "url": "https://h/"}, "url", "exactly one"),
        ({"name": "A", "url": "https://h/"}, "name", "lowercase"),
        ({"name": "a", "url": "https://h/", "on": ["commit", "commit"]}, "on", "distinct"),
        ({"name": "a", "url": "https://h/", "format": "xml"}, "format", "json, slack, teams"),
        ({"name": "a", "url": "https://h/", "retries": 3}, "retries", "unknown field"),
        ({"name": "a", "url": "http://169.254.169.254/latest/meta-data/"}, "url", "cloud metadata"),
        ({"name": "a", "url": "http://[fe80::1]:8080/x"}, "url", "link-local"),
    ],
)
def test_one_check_of_a_target_names_the_field(given, field, why):
    problems = spec_problems(given)
    assert problems and problems[0][0] == field and why in problems[0][1], problems


def test_targets_are_sent_side_by_side(files):
    with receiving(delay=0.5) as server:
        specs = [spec(f"t{i}", url_file=files(f"u{i}", url_of(server, f"/{i}"))) for i in range(4)]
        started = time.monotonic()
        counts = notify(specs, {"backup_id": "b", "committed": True}, PLAN, print)
        took = time.monotonic() - started
    assert counts["sent"] == 4 and took < 1.5
    assert threading.active_count() < 50


def test_https_is_verified_against_the_ca_bundle_given(tmp_path):
    import ssl
    from http.server import ThreadingHTTPServer

    from tests.fixtures.etcd import make_pki

    pki = make_pki(tmp_path / "pki")
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    server.got, server.status, server.delay, server.location = [], 200, 0.0, None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        url = f"https://127.0.0.1:{server.server_address[1]}/hook"
        trusted = post(url, b"{}", {}, ca_file=str(pki.ca), attempts=1)
        untrusted = post(url, b"{}", {}, ca_file=str(pki.other_ca), attempts=3)
        system = post(url, b"{}", {}, attempts=1)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    assert trusted.ok and len(server.got) == 1
    assert (untrusted.ok, untrusted.error, untrusted.attempts) == (False, "TLS verification failed", 1)
    assert (system.ok, system.error) == (False, "TLS verification failed")


def test_a_commit_is_told_and_counted_in_the_run_record_and_a_refused_commit_keeps_its_exit(
    tmp_path, monkeypatch, capsys, files
):
    from steps.cli import main
    from steps.drivers.objectstore import LocalStore
    from steps.repository.records import save_run_record
    from steps.repository.repo import Repository
    from tests.fixtures.repository import TEST_KDF

    monkeypatch.setenv("SNAPFLOW_PASSWORD", "notify-pw")
    store = LocalStore(str(tmp_path / "repo"))
    Repository.init(store, "notify-pw", kdf_params=TEST_KDF)
    repo = Repository.open(store, "notify-pw")
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({
        "app": {"namespace": "shop", "name": "uploads", "cluster": "eu", "policy": "uploads"},
        "repository": {"url": f"file://{tmp_path / 'repo'}"}, "source": {"kind": "bucket", "name": "uploads"},
    }))  # fmt: skip

    def finalize(backup: str, *extra: str) -> tuple[int, dict]:
        rc = main(["finalize", "--plan", str(plan), "--backup-id", backup, "--workflow-status", "Succeeded",
                   "--json", *extra])  # fmt: skip
        return rc, json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    sid = repo.save_snapshot({"time": "2026-01-02T03:04:05Z", "backup_id": "b-ok",
                              "tags": {"kind": "bucket", "backup": "b-ok"}, "summary": {}})  # fmt: skip
    save_run_record(repo, "b-ok", "verify", {"ok": True, "snapshots": [sid], "problems": []})
    with receiving() as server:
        hook = spec("ops", url_file=files("url", url_of(server)), secret_file=files("key", HMAC_KEY))
        rc, summary = finalize("b-ok", "--notify", hook)
        assert rc == 0 and summary["committed"] and summary["notifications"]["sent"] == 1
        body = json.loads(server.got[0][2])
        assert (body["event"], body["record"], body["source"]) == (
            "commit",
            summary["record"],
            "bucket/uploads",
        )
        records = [r for r in Repository.open(store, "notify-pw").list_records("runs", key="b-ok")]
        told = [r.data for r in records if r.data.get("name") == "notifications"]
        assert len(told) == 1 and (told[0]["event"], told[0]["sent"], told[0]["failed"]) == ("commit", 1, 0)

        # WHEN verify never ran THEN the commit is refused with the exit it has without notifications
        without, _ = finalize("b-none")
        with_, refused = finalize("b-none", "--notify", hook)
        assert without == with_ != 0 and refused["notifications"]["sent"] == 1
        assert json.loads(server.got[1][2])["event"] == "failure"
        assert json.loads(server.got[1][2])["problems"]


class Trickle(BaseHTTPRequestHandler):
    """Answers one header line every 0.2 s, for 5 s: no single read ever times out."""

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            self.wfile.write(b"HTTP/1.1 200 OK\r\n")
            for i in range(25):
                self.wfile.write(b"X-Slow-%d: 1\r\n" % i)
                self.wfile.flush()
                time.sleep(0.2)
        except OSError:
            pass

    def log_message(self, *args):
        pass


def test_a_receiver_that_trickles_its_answer_is_given_up_at_the_hard_limit(files, monkeypatch):
    import steps.manifests.notify as notifying

    monkeypatch.setattr(notifying, "HARD_LIMIT_S", 1.0)
    with serving(Trickle) as server:
        logged: list[str] = []
        started = time.monotonic()
        counts = notify(
            [spec("slow", url_file=files("u", url_of(server)))], {"committed": True}, PLAN, logged.append
        )
        took = time.monotonic() - started
    assert took < 2 and (counts["sent"], counts["failed"]) == (0, 1), (took, counts)
    assert counts["targets"][0]["error"] == "no answer within 1 s"
    assert len(logged) == 1 and "notification slow (http://127.0.0.1:" in logged[0]
