"""An Argo Server (or whatever answers in its place) that sends garbage gets one clear line, never a
JSON or pydantic traceback."""

from __future__ import annotations

import subprocess
import sys
from http.server import BaseHTTPRequestHandler

import pytest

from steps.errors import PermanentError
from tests.fixtures.http import serving
from workflows.submit import ServerSettings, apply_objects, submit, submit_request

ANSWERS = {
    "not-json": (b"<html><body>Welcome to nginx</body></html>", "text/html"),
    "truncated-json": (b'{"metadata": {"name": "backup-', "application/json"),
    "wrong-shape": (b'{"metadata": "backup-orders-db-x7k2p", "spec": []}', "application/json"),
    "a-list": (b"[1, 2, 3]", "application/json"),
}


class _Garbage(BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep the test output quiet
        pass

    def _answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        body, kind = ANSWERS[self.server.answer]
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = _answer


@pytest.fixture
def garbage_server():
    with serving(_Garbage, answer="not-json") as server:
        yield server


def _settings(server) -> ServerSettings:
    return ServerSettings(
        url=f"http://127.0.0.1:{server.server_address[1]}/", token="Bearer t0ken", timeout_s=5
    )


@pytest.mark.parametrize("answer", sorted(ANSWERS))
def test_a_malformed_submit_answer_is_one_permanent_error_line(garbage_server, answer):
    # GIVEN a server that answers 200 with something that is not a Workflow
    garbage_server.answer = answer
    # WHEN a workflow is submitted
    with pytest.raises(PermanentError) as err:
        submit(_settings(garbage_server), submit_request("shop", "backup-orders-db"))
    # THEN one line names the call and the server, says what was wrong, and shows neither body nor token
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("submit shop/backup-orders-db: the Argo Server at http://127.0.0.1:")
    assert "not JSON" in message or "not the expected Argo object" in message
    assert "nginx" not in message and "t0ken" not in message


def test_a_malformed_answer_while_applying_is_one_line(garbage_server, rendered_examples):
    garbage_server.answer = "wrong-shape"
    rendering = rendered_examples["postgresql-statefulset.yaml"]
    template = next(o.obj for o in rendering.objects if o.kind == "WorkflowTemplate")
    with pytest.raises(PermanentError) as err:
        apply_objects(_settings(garbage_server), [template])
    assert str(err.value).startswith(f"apply WorkflowTemplate shop/{template['metadata']['name']}: ")
    assert "not the expected Argo object" in str(err.value)


def test_the_submit_command_prints_one_line_and_no_traceback(garbage_server):
    # GIVEN the snapflow command pointed at a server answering an HTML page
    port = garbage_server.server_address[1]
    # WHEN it submits
    done = subprocess.run(
        [sys.executable, "-m", "workflows", "submit", "-n", "shop", "backup-orders-db",
         "--server", f"http://127.0.0.1:{port}"],
        capture_output=True, text=True, timeout=60, env={"ARGO_TOKEN": "Bearer t0ken", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    # THEN it fails with one line on stderr, without a traceback
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "not JSON" in lines[0], done.stderr
