"""Golden output of every hook template from a fixed context (regenerate with REGENERATE=1)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from steps.plan import Target
from steps.quiesce.hook_specs import RenderContext, render_hook

GOLDEN = Path(__file__).parent / "hooks"


class _Dumper(yaml.SafeDumper):
    """Multi-line strings as literal blocks, independent of representers registered elsewhere."""


def _str(dumper, value):
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump(spec) -> str:
    return yaml.dump(spec, Dumper=_Dumper, sort_keys=True, width=200)


CTX = dict(
    backup_id="backup-orders-x7k2p",
    hold_id="shop/orders/orders-db-0",
    keepalive_s=5,
    deadline_s=30,
    freeze_timeout_s=10,
)

CASES = {
    "postgresql-atomic": (
        Target(
            "orders-db-0",
            "postgresql",
            params={
                "host": "127.0.0.1",
                "port": 5432,
                "user": "postgres",
                "dbname": "postgres",
                "password_file": "/var/run/secrets/db/password",
            },
        ),
        True,
    ),
    "postgresql-copy": (
        Target(
            "orders-db-0",
            "postgresql",
            params={"host": "127.0.0.1", "user": "backup", "password_env": "PGPASSWORD_BACKUP"},
        ),
        False,
    ),
    "mariadb-ftwrl": (
        Target(
            "orders-db-0",
            "mariadb",
            params={"host": "127.0.0.1", "port": 3306, "user": "backup", "password_file": "/secrets/pw"},
        ),
        True,
    ),
    "mysql-backup-stage": (
        Target(
            "orders-db-0",
            "mysql",
            params={"user": "root", "password_env": "MYSQL_ROOT_PASSWORD", "method": "backup_stage"},
        ),
        True,
    ),
    "mongodb": (
        Target("orders-db-0", "mongodb", params={"user": "admin", "password_file": "/secrets/mongo"}),
        True,
    ),
    "redis": (Target("orders-db-0", "redis", params={"password_env": "REDIS_PASSWORD"}), True),
    "fsfreeze": (Target("orders-db-0", "fsfreeze", params={"mounts": ["/data", "/wal"]}), True),
    "custom": (
        Target(
            "orders-db-0",
            "custom",
            params={
                "freeze": ["app-ctl pause", {"run": "app-ctl flush", "timeout_s": 5}],
                "thaw": ["app-ctl resume"],
            },
        ),
        True,
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_hook_template_renders_as_committed(case):
    target, atomic = CASES[case]
    spec = render_hook(target, RenderContext(atomic_cut=atomic, **CTX))
    text = dump(spec)
    path = GOLDEN / f"{case}.yaml"
    if os.environ.get("REGENERATE") == "1" and not os.environ.get("CI"):
        path.write_text(text)
    assert path.exists(), f"{path} missing: run `make regenerate-golden`"
    assert text == path.read_text()


@pytest.mark.parametrize("case", sorted(CASES))
def test_rendered_hooks_carry_no_credentials(case):
    target, atomic = CASES[case]
    text = yaml.safe_dump(render_hook(target, RenderContext(atomic_cut=atomic, **CTX)))
    assert "secret-value" not in text
    for key in ("password_file", "password_env"):
        if key in target.params:
            assert str(target.params[key]) in text  # the reference is rendered, never a value
