"""A bad etcd connection or a damaged snapshot stream fails ``etcd-snapshot`` with one line naming the
cause, a non-zero exit, and nothing stored: against a real etcd requiring client certificates."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.etcd import EtcdServer, make_pki, require_etcd, tampering_gateway

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def shared_etcd(tmp_path_factory):
    """One etcd for the tests that do not stop it, with a few keys and a 200 KiB value."""
    require_etcd()
    base = tmp_path_factory.mktemp("etcd-errors")
    server = EtcdServer(base / "etcd", make_pki(base / "pki"))
    server.base.mkdir()
    try:
        server.start()
        server.put_many({f"k/{i}": f"value {i}" for i in range(300)})
        server.put("big", os.urandom(200 * 1024))
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def repo(tmp_path):
    env = {**os.environ, "SNAPFLOW_PASSWORD": "etcd-test-pw", "SNAPFLOW_KDF_TEST_N": "1024"}
    url = f"file://{tmp_path / 'repo'}"
    subprocess.run([sys.executable, "-m", "steps", "init", "--repo", url], cwd=ROOT, env=env, check=True,
                   capture_output=True)  # fmt: skip
    return url, env


def snapshot_fails(repo, tmp_path, url: str, *args: str, held_lock: str = "") -> tuple[int, str]:
    """Runs ``etcd-snapshot``; checks that it stored nothing and left no scratch file (but the lock
    file ``held_lock`` the test holds); returns the exit code and the one line of stderr."""
    repo_url, env = repo
    scratch = tmp_path / "scratch"
    scratch.mkdir(exist_ok=True)
    proc = subprocess.run(
        [sys.executable, "-m", "steps", "etcd-snapshot", "--repo", repo_url, "--etcd", url,
         "--scratch", str(scratch), "--connect-timeout", "3", "--read-timeout", "10", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    listed = subprocess.run(
        [sys.executable, "-m", "steps", "snapshots", "--repo", repo_url, "--json"],
        cwd=ROOT, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert json.loads(listed.stdout) == []
    root = Path(repo_url.removeprefix("file://"))
    stored = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    # no pack, index or record: only what init wrote (its config, key and the audit record of the init)
    assert [f for f in stored if not f.startswith(("keys/", "audit/"))] == ["config"]
    assert len([f for f in stored if f.startswith("audit/")]) == 1
    assert [p for p in scratch.iterdir() if p.name != held_lock] == []
    return proc.returncode, lines[0]


def tls(pki, ca=None, cert=None, key=None) -> list[str]:
    return [
        "--cacert",
        str(ca or pki.ca),
        "--cert",
        str(cert or pki.client_cert),
        "--key",
        str(key or pki.client_key),
    ]


def test_no_client_certificate_is_named_as_the_cause(shared_etcd, repo, tmp_path):
    code, line = snapshot_fails(repo, tmp_path, shared_etcd.url, "--cacert", str(shared_etcd.pki.ca))
    assert code == 3
    assert line == (
        f"error: etcd at {shared_etcd.url}: etcd requires a client certificate (it has --client-cert-auth);"
        " give --cert and --key"
    )


def test_a_client_certificate_of_another_ca_is_named_with_its_issuer(shared_etcd, repo, tmp_path):
    pki = shared_etcd.pki
    code, line = snapshot_fails(
        repo, tmp_path, shared_etcd.url, *tls(pki, cert=pki.other_client_cert, key=pki.other_client_key)
    )
    assert code == 3
    assert line.startswith(f"error: etcd at {shared_etcd.url}: etcd refused the client certificate --cert")
    assert "issued by 'CN=other-ca test CA', not by the etcd CA of --cacert ('CN=ca test CA')" in line


def test_a_server_certificate_of_an_unknown_ca_is_named(shared_etcd, repo, tmp_path):
    pki = shared_etcd.pki
    code, line = snapshot_fails(repo, tmp_path, shared_etcd.url, *tls(pki, ca=pki.other_ca))
    assert code == 3
    assert line == (
        f"error: etcd at {shared_etcd.url}: the server certificate is not signed by the CA in --cacert"
        f" '{pki.other_ca}' (unknown CA)"
    )


def test_a_wrong_host_name_is_named_with_the_names_the_certificate_holds(shared_etcd, repo, tmp_path):
    pki = shared_etcd.pki
    code, line = snapshot_fails(
        repo, tmp_path, shared_etcd.url, *tls(pki), "--server-name", "etcd.elsewhere.invalid"
    )
    assert code == 3
    assert line == (
        f"error: etcd at {shared_etcd.url}: the server certificate is not valid for 'etcd.elsewhere.invalid'"
        " (it names DNS:localhost, IP:127.0.0.1); connect by a name it holds, or give --server-name"
    )


def test_a_key_that_is_not_the_certificates_is_refused_before_connecting(shared_etcd, repo, tmp_path):
    pki = shared_etcd.pki
    code, line = snapshot_fails(repo, tmp_path, shared_etcd.url, *tls(pki, key=pki.other_client_key))
    assert code == 2
    assert (
        line
        == f"error: --key: '{pki.other_client_key}' is not the key of the certificate --cert '{pki.client_cert}'"
    )
    missing = tmp_path / "no-such.crt"
    code, line = snapshot_fails(repo, tmp_path, shared_etcd.url, *tls(pki, cert=missing))
    assert (code, line) == (2, f"error: --cert: cannot read '{missing}' (No such file or directory)")


def test_a_host_name_that_does_not_resolve_is_named(shared_etcd, repo, tmp_path):
    url = "https://etcd.no-such-host.invalid:2379"
    code, line = snapshot_fails(repo, tmp_path, url, *tls(shared_etcd.pki))
    assert code == 75
    assert line.startswith(f"error: etcd at {url}: host name 'etcd.no-such-host.invalid' does not resolve (")


def test_a_stopped_etcd_is_a_refused_connection_worth_retrying(etcd_server, repo, tmp_path):
    etcd_server.stop()
    code, line = snapshot_fails(repo, tmp_path, etcd_server.url, *tls(etcd_server.pki))
    assert code == 75
    assert line == (
        f"error: etcd at {etcd_server.url}: connection refused (nothing listens on port"
        f" {etcd_server.client_port}: is etcd running there?)"
    )


@pytest.mark.parametrize("where", ["data", "digest"])
def test_a_flipped_byte_in_the_stream_fails_the_digest_and_stores_nothing(shared_etcd, repo, tmp_path, where):
    # GIVEN a gateway that flips one bit of the snapshot, in the data or in the trailing digest
    size = len(b"".join(_blobs(shared_etcd)))
    flip_at = 70_000 if where == "data" else size - 5
    with tampering_gateway(shared_etcd, flip_at=flip_at) as url:
        code, line = snapshot_fails(repo, tmp_path, url, *tls(shared_etcd.pki))
    assert code == 3
    assert line == (
        f"error: etcd at {url}: the snapshot's SHA-256 does not match its trailing digest ({size} bytes"
        " received): the stream was altered or damaged; nothing was stored"
    )


def test_a_stream_cut_short_stores_nothing(shared_etcd, repo, tmp_path):
    with tampering_gateway(shared_etcd, cut_after=50_000) as url:
        code, line = snapshot_fails(repo, tmp_path, url, *tls(shared_etcd.pki))
    assert code == 75
    assert line.startswith(f"error: etcd at {url}: the snapshot stream was cut after ")


def _blobs(server) -> list[bytes]:
    import base64

    return [base64.b64decode(json.loads(line)["result"].get("blob", "")) for line in server.snapshot_lines()]


def test_a_second_snapshot_of_the_cluster_on_this_machine_waits_for_the_first(shared_etcd, repo, tmp_path):
    import fcntl

    # GIVEN a snapshot of this cluster in progress (it holds the lock of its staging directory)
    cluster_id = (
        f"{int(shared_etcd.request('POST', '/v3/cluster/member/list', {})['header']['cluster_id']):x}"
    )
    (tmp_path / "scratch").mkdir()
    lock = tmp_path / "scratch" / f"etcd-{cluster_id}.lock"
    with open(lock, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        # WHEN another one starts
        code, line = snapshot_fails(
            repo, tmp_path, shared_etcd.url, *tls(shared_etcd.pki), held_lock=lock.name
        )
    # THEN it fails as worth retrying, naming the lock
    assert code == 75
    assert line == f"error: --scratch: another etcd-snapshot of this cluster holds '{lock}'"


def test_with_several_members_the_first_that_answers_is_used(shared_etcd, repo, tmp_path):
    from workflows.demo.seaweedfs import free_port

    # GIVEN a member that is down (nothing listens on its port)
    down = f"https://127.0.0.1:{free_port()}"
    # WHEN it is the only one given, twice: one line names each failure
    code, line = snapshot_fails(repo, tmp_path, f"{down},{down}", *tls(shared_etcd.pki))
    assert code == 75
    assert line.startswith(f"error: no etcd member answered: etcd at {down}: connection refused")
    assert line.count("connection refused") == 2
    # WHEN a member that answers follows it: the snapshot comes from that one
    url, env = repo
    proc = subprocess.run(
        [sys.executable, "-m", "steps", "etcd-snapshot", "--repo", url, "--etcd", f"{down},{shared_etcd.url}",
         *tls(shared_etcd.pki), "--json"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["endpoint"] == shared_etcd.url


def test_an_http_url_for_a_tls_port_is_named(shared_etcd, repo, tmp_path):
    url = shared_etcd.url.replace("https://", "http://")
    code, line = snapshot_fails(repo, tmp_path, url)
    assert code == 3
    assert line == (
        f"error: etcd at {url}: the server closed the connection without an answer (if etcd serves TLS on"
        " this port, use https://)"
    )
