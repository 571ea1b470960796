"""Hooks run on this machine get the holder's environment without Snapflow's own credentials (the
repository password, the object store's keys); a hook's password_env naming a variable of the
application's own still works."""

from __future__ import annotations

import json

import pytest

from steps.drivers.runner_local import CREDENTIAL_ENV
from tests.fixtures.databases import PG_PASSWORD
from tests.fixtures.quiesce import local_plan, run_step

pytestmark = pytest.mark.slow


def test_local_hooks_never_see_snapflows_credentials_but_password_env_works(
    postgres_server, tmp_path, plan_file
):
    # GIVEN a PostgreSQL hook whose password comes from a variable of the application's own, next to a
    # hook that dumps the environment it runs in
    params = {k: v for k, v in postgres_server.conn_params.items() if k != "password_file"}
    dump = tmp_path / "hook-env"
    volume = tmp_path / "vol"
    volume.mkdir()
    targets = [
        {"name": "pg-0", "hook": "postgresql", "params": {**params, "password_env": "APP_PG_PASSWORD"}},
        {"name": "probe", "hook": "custom", "params": {"prepare": [f"env > {dump}"]}},
    ]
    plan = plan_file(
        local_plan(targets, [{"name": "v", "path": str(volume)}], local_dir=str(tmp_path / "snaps"))
    )
    env = {name: f"leaked-{name}" for name in CREDENTIAL_ENV}
    env["APP_PG_PASSWORD"] = PG_PASSWORD

    # WHEN the holder runs with Snapflow's credentials in its environment
    res = run_step("consistent-point", "--plan", str(plan), "--backup-id", "bk-env", env=env)

    # THEN the PostgreSQL hook connected with the application's password and held its session ...
    assert res.returncode == 0, res.stderr
    record = json.loads(res.stdout)
    pg = next(t for t in record["timeline"]["targets"] if t["name"] == "pg-0")
    assert pg["quiesced"] and pg["released_by"] == "release"
    # ... and no hook saw the repository's or the object store's credentials
    seen = dump.read_text()
    assert "APP_PG_PASSWORD=" in seen
    for name in CREDENTIAL_ENV:
        assert f"{name}=" not in seen
    assert "leaked-" not in seen and "leaked-" not in res.stdout + res.stderr
