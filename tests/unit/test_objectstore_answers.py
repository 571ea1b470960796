"""What the S3 driver makes of answers that are not S3: a web server's page is a permanent error naming
the endpoint (exit 3), a gateway's 5xx page is retried and then a temporary error (exit 75)."""

from __future__ import annotations

import contextlib
from http.server import BaseHTTPRequestHandler

import pytest

from steps.drivers.objectstore_s3 import S3Settings, S3Store
from steps.errors import PermanentError, StoreUnavailable
from tests.fixtures.http import serving


@contextlib.contextmanager
def web_server(status: int):
    """A plain HTTP server on a free loopback port answering every request with ``status`` and a page."""
    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def _answer(self):
            hits.append(f"{self.command} {self.path}")
            body = b"<html><body>not here</body></html>"
            self.send_response(status)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_PUT = do_HEAD = do_DELETE = do_POST = _answer

        def log_message(self, *args):
            pass

    with serving(Handler) as server:
        yield f"http://127.0.0.1:{server.server_address[1]}", hits


@pytest.fixture
def keys(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")


@pytest.mark.parametrize("status", [403, 404])
def test_a_web_server_is_not_an_object_store(keys, status):
    with web_server(status) as (endpoint, hits):
        store = S3Store(S3Settings(endpoint, region="us-east-1", retries=3, backoff=0.01), "bucket", "p")
        with pytest.raises(PermanentError) as err:
            store.get("config")
    assert str(err.value) == (
        f"object store {endpoint} answered GET config with HTTP {status} (text/html), not an S3 response"
        " (is the endpoint an S3 server?)"
    )
    assert len(hits) == 1  # not retried


def test_a_gateway_error_page_is_retried_then_temporary(keys):
    with web_server(502) as (endpoint, hits):
        store = S3Store(S3Settings(endpoint, region="us-east-1", retries=2, backoff=0.01), "bucket", "p")
        with pytest.raises(StoreUnavailable) as err:
            store.get("config")
    assert len(hits) == 3
    assert str(err.value).startswith(f"object store {endpoint} did not answer GET config after 3 attempts")
    assert "HTTP 502 (text/html)" in str(err.value) and "<html>" not in str(err.value)
