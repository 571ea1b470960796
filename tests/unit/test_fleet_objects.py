"""snapflow exporter --render: valid Kubernetes objects, credentials only by Secret reference; bad flags
are one line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request

import yaml

from steps.api import Repository, open_repository, open_store
from tests.unit.test_fleet_exporter import NOW, write_run
from workflows.cli import main
from workflows.fleet import objects

SECRET_VALUE = "s3cr3t-value-never-rendered"


def snapflow(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "import sys; from workflows.cli import main; sys.exit(main())", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_render_prints_valid_objects_that_reference_secrets_only(monkeypatch):
    # GIVEN credentials in the environment of the command that renders
    env = {**os.environ, "SNAPFLOW_PASSWORD": SECRET_VALUE, "AWS_SECRET_ACCESS_KEY": SECRET_VALUE}
    # WHEN it renders
    result = snapflow(
        "exporter", "--render", "--namespace", "monitoring", "--repo", "s3://backups/shop",
        "--repo", "s3://backups/erp", "--password-secret", "repo-pass:pw", "--credentials-secret", "snapflow-s3",
        "--label", "release=prometheus", "--rpo", "2h", env=env,
    )  # fmt: skip
    # THEN the objects are there, valid, and hold no credential value
    assert result.returncode == 0, result.stderr
    assert SECRET_VALUE not in result.stdout
    docs = list(yaml.safe_load_all(result.stdout))
    assert [d["kind"] for d in docs] == [
        "ServiceAccount",
        "Deployment",
        "Service",
        "ServiceMonitor",
        "PrometheusRule",
        "ConfigMap",
    ]
    assert docs[5]["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert objects.validate_objects(docs) == []
    pod = docs[1]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert "--repo=s3://backups/erp" in container["args"] and "--rpo=2h" in container["args"]
    env_vars = {e["name"]: e for e in container["env"]}
    assert env_vars["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "snapflow-s3",
        "key": "AWS_SECRET_ACCESS_KEY",
    }
    assert env_vars["SNAPFLOW_PASSWORD_FILE"]["value"].endswith("/pw")
    assert pod["volumes"][0]["secret"]["secretName"] == "repo-pass"
    assert all("value" not in e or e["name"] == "SNAPFLOW_PASSWORD_FILE" for e in container["env"])
    assert docs[3]["metadata"]["labels"]["release"] == "prometheus"


def test_validation_names_a_wrong_field_of_an_operator_object():
    docs = objects.render_objects(
        objects.DeploySettings(namespace="monitoring", repos=("s3://backups/shop",))
    )
    monitor = next(d for d in docs if d["kind"] == "ServiceMonitor")
    monitor["spec"]["endpoints"][0]["intervall"] = "30s"
    problems = objects.validate_objects(docs)
    assert len(problems) == 1 and "ServiceMonitor/snapflow-exporter: spec.endpoints.0" in problems[0]
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    deployment["spec"]["replicas"] = "one"
    assert any(p.startswith("Deployment/snapflow-exporter") for p in objects.validate_objects(docs))


def test_bad_flags_are_one_line_and_exit_2(capsys):
    cases = [
        (["exporter"], "--repo: expected at least one repository URL"),
        (
            ["exporter", "--repo", "s3://backups/shop", "--interval", "soon"],
            "--interval: expected a positive duration",
        ),
        (["exporter", "--repo", "s3://backups/shop", "--listen", "nowhere"], "--listen: expected HOST:PORT"),
        (["exporter", "--repo", "s3://backups/shop", "--render"], "--namespace: expected a namespace name"),
        (
            [
                "exporter",
                "--repo",
                "s3://backups/shop",
                "--render",
                "--namespace",
                "m",
                "--password-secret",
                "A_B",
            ],
            "--password-secret: expected NAME or NAME:KEY",
        ),
        (
            ["exporter", "--repo", "s3://backups/shop", "--policy", "/nonexistent.yaml"],
            "/nonexistent.yaml: cannot read",
        ),
    ]
    for argv, message in cases:
        code = main(argv)
        err = capsys.readouterr().err
        assert code == 2, (argv, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (argv, err)
        assert "Traceback" not in err


def test_the_command_serves_until_terminated_and_once_prints_the_metrics(s3_repo, capsys):
    Repository.init(
        open_store(s3_repo), os.environ["SNAPFLOW_PASSWORD"], kdf_params={"n": 1024, "r": 8, "p": 1}
    )
    write_run(open_repository(s3_repo), "b-1", NOW - 60, commit=True)
    # WHEN it runs once, THEN it prints the metrics of the repository and exits 0
    assert main(["exporter", "--repo", s3_repo, "--once"]) == 0
    assert 'snapflow_backup_committed{app="orders-db",cluster="east"' in capsys.readouterr().out
    # WHEN it serves on a free port, THEN /metrics answers, and SIGTERM ends it with 0
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; from workflows.cli import main; sys.exit(main())", "exporter",
         "--repo", s3_repo, "--listen", "127.0.0.1:0", "--interval", "1"],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        line = proc.stderr.readline()
        assert "serving /metrics on 127.0.0.1:" in line, line
        port = int(line.split("127.0.0.1:")[1].split()[0])
        body = ""
        for _ in range(100):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
                body = answer.read().decode()
            if "snapflow_backup_committed{" in body:
                break
            time.sleep(0.1)
        assert 'snapflow_repository_up{repository="' + s3_repo + '"} 1.0' in body
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()


def test_the_exporter_pod_passes_pod_security_restricted():
    from steps.api import pod_security_check

    docs = objects.render_objects(
        objects.DeploySettings(namespace="monitoring", repos=("s3://backups/shop",))
    )
    pod = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]
    assert pod_security_check(pod, "restricted") == []
    assert pod["automountServiceAccountToken"] is False
