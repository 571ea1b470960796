"""The Kubernetes client the steps share: errors mapped to exit codes, bounded waits, resumed watches."""

from __future__ import annotations

import socket
import time

import pytest

from steps.drivers.kube import AlreadyExists, KubeClient, KubeSettings, KubeUnavailable, NotFound
from steps.errors import EXIT_PERMANENT, EXIT_TEMPORARY, EXIT_USAGE, UsageError


@pytest.fixture
def client(kube_server, kubeconfig):
    c = KubeClient(KubeSettings.from_env())
    kube_server.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "t"}})
    yield c
    c.close()


def cm(name, **data):
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "t"},
        "data": data,
    }


def test_crud_through_the_real_client(client):
    client.create(cm("a", x="1"))
    assert client.get("v1", "ConfigMap", "a", "t")["data"] == {"x": "1"}
    client.patch("v1", "ConfigMap", "a", "t", {"data": {"x": None, "y": "2"}})
    assert client.get("v1", "ConfigMap", "a", "t")["data"] == {"y": "2"}
    client.patch(
        "v1", "ConfigMap", "a", "t", [{"op": "add", "path": "/data/z", "value": "3"}], patch_type="json"
    )
    items, rv = client.list("v1", "ConfigMap", "t", field_selector="metadata.name=a")
    assert [i["data"] for i in items] == [{"y": "2", "z": "3"}] and rv
    assert client.delete("v1", "ConfigMap", "a", "t") is True
    assert client.delete("v1", "ConfigMap", "a", "t") is False  # idempotent
    assert client.get_or_none("v1", "ConfigMap", "a", "t") is None


def test_errors_carry_the_servers_message_and_the_right_exit_code(client):
    client.create(cm("a"))
    with pytest.raises(AlreadyExists) as err:
        client.create(cm("a"))
    assert err.value.exit_code == EXIT_PERMANENT and 'configmaps "a" already exists' in str(err.value)
    with pytest.raises(NotFound, match="ConfigMap/zzz in namespace t"):
        client.get("v1", "ConfigMap", "zzz", "t")


def test_a_server_error_is_retryable(client, kube_server):
    kube_server.fail_next("GET", "configmaps", 503, message="etcd is sick")
    with pytest.raises(KubeUnavailable) as err:
        client.get("v1", "ConfigMap", "a", "t")
    assert err.value.exit_code == EXIT_TEMPORARY and "etcd is sick" in str(err.value)


def test_an_unreachable_api_server_fails_fast_and_retryable(tmp_path, monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    kc = tmp_path / "kubeconfig"
    kc.write_text(f"""apiVersion: v1
kind: Config
clusters: [{{name: c, cluster: {{server: "http://127.0.0.1:{port}"}}}}]
users: [{{name: u, user: {{token: t}}}}]
contexts: [{{name: x, context: {{cluster: c, user: u}}}}]
current-context: x
""")
    started = time.monotonic()
    with pytest.raises(KubeUnavailable) as err:
        KubeClient(KubeSettings(kubeconfig=str(kc), retries=1, connect_timeout=1)).get("v1", "Namespace", "x")
    assert time.monotonic() - started < 10
    assert err.value.exit_code == EXIT_TEMPORARY and f"127.0.0.1:{port} did not answer" in str(err.value)


def test_missing_configuration_is_a_usage_error(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "nope"))
    with pytest.raises(UsageError) as err:
        KubeClient(KubeSettings.from_env())
    assert err.value.exit_code == EXIT_USAGE and "KUBECONFIG: file" in str(err.value)
    monkeypatch.setenv("SNAPFLOW_KUBE_READ_TIMEOUT", "soon")
    with pytest.raises(UsageError, match="SNAPFLOW_KUBE_READ_TIMEOUT: expected a number of seconds"):
        KubeSettings.from_env()


def test_wait_for_resumes_when_the_watch_history_expired(client, kube_server):
    client.create(cm("a", step="0"))
    calls = []

    def ready(obj):
        calls.append(obj["data"]["step"] if obj else None)
        if len(calls) == 1:  # between the list and the watch: history compacted, object changed
            kube_server.patch("configmaps", "a", {"data": {"step": "1"}}, "t")
            kube_server.compact_history()
        return obj is not None and obj["data"]["step"] == "1"

    obj = client.wait_for("v1", "ConfigMap", "a", "t", ready, timeout_s=10)
    assert obj["data"]["step"] == "1" and calls == ["0", "1"]


def test_wait_for_times_out_with_the_callers_error(client):
    client.create(cm("a", step="0"))
    started = time.monotonic()
    with pytest.raises(UsageError, match="still 0"):
        client.wait_for(
            "v1",
            "ConfigMap",
            "a",
            "t",
            lambda o: False,
            timeout_s=1.5,
            on_timeout=lambda o: UsageError(f"still {o['data']['step']}"),
        )
    assert 1.4 < time.monotonic() - started < 5


def test_discovery_finds_custom_resources(client, kube_server):
    kube_server.register_kind("example.com", "v1", "PostgresCluster", "postgresclusters")
    types = {(t.api_version, t.kind) for t in client.namespaced_types()}
    assert ("example.com/v1", "PostgresCluster") in types and ("apps/v1", "StatefulSet") in types
    assert client.resource("example.com/v1", "PostgresCluster").plural == "postgresclusters"
