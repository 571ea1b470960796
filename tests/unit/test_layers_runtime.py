"""Single sources: the step environment variable names are spelled only in ``steps.runtime``, a
repository is opened only by ``steps.repository.opener``, and a restore mover pod gets the environment,
paths and capabilities the step-runtime contract names.

Files still to be converted are listed in ``KNOWN_*`` (file, what); an entry that is converted fails
the test, so that the lists only shrink.
"""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

import pytest

from steps import runtime
from steps.drivers import kube_objects as render

ROOT = Path(__file__).resolve().parents[2]
ENV_NAME = re.compile(r"^(SNAPFLOW|AWS)_[A-Z0-9_]+$")

KNOWN_ENV_LITERALS: set[tuple[str, str]] = set()
KNOWN_REPOSITORY_OPENS: set[str] = set()


@functools.cache
def _sources() -> tuple[tuple[str, ast.AST], ...]:
    return tuple(
        (path.relative_to(ROOT).as_posix(), ast.parse(path.read_text(encoding="utf-8")))
        for top in ("steps", "workflows")
        for path in sorted((ROOT / top).rglob("*.py"))
    )


def _docstrings(tree: ast.AST) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                out.add(id(first.value))
    return out


def env_literals(tree: ast.AST) -> set[str]:
    """The environment variable names spelled as a whole string constant (docstrings aside)."""
    docs = _docstrings(tree)
    return {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docs
        and ENV_NAME.match(node.value)
    }


def repository_opens(tree: ast.AST) -> int:
    return sum(
        1
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "open"
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "Repository"
    )


def test_environment_variable_names_are_spelled_only_in_the_runtime_module():
    found = {
        (rel, name) for rel, tree in _sources() if rel != "steps/runtime.py" for name in env_literals(tree)
    }
    assert found - KNOWN_ENV_LITERALS == set(), "use the steps.runtime constant instead"
    assert KNOWN_ENV_LITERALS - found == set(), "converted: remove from KNOWN_ENV_LITERALS"


def test_every_runtime_name_used_exists():
    """``runtime.X`` (and names imported from steps.runtime) anywhere in steps and workflows are
    names the contract defines."""
    defined = set(vars(runtime))
    used = set()
    for _rel, tree in _sources():
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "runtime"
            ):
                used.add(node.attr)
            elif isinstance(node, ast.ImportFrom) and node.module == "steps.runtime":
                used |= {a.name for a in node.names}
    assert used, "nothing reads the step-runtime contract"
    assert used - defined == set()


def test_the_checker_sees_an_environment_name_but_not_a_docstring():
    tree = ast.parse(
        '"""Reads SNAPFLOW_X."""\nimport os\nos.environ.get("SNAPFLOW_PASSWORD")\nx = "SNAPFLOW_X"\n'
    )
    assert env_literals(tree) == {"SNAPFLOW_PASSWORD", "SNAPFLOW_X"}
    assert env_literals(ast.parse('"""SNAPFLOW_PASSWORD"""\n')) == set()


def test_a_repository_is_opened_only_by_the_opener():
    found = {rel for rel, tree in _sources() if repository_opens(tree)}
    assert found - KNOWN_REPOSITORY_OPENS == {"steps/repository/opener.py"}
    assert KNOWN_REPOSITORY_OPENS - found == set()
    assert repository_opens(ast.parse("Repository.open(store, pw)\nrepo.open()\n")) == 1


def _mover(**kw) -> dict:
    base = dict(
        name="m",
        namespace="ns",
        pvc="data",
        image="img",
        repository="s3://b/p",
        snapshot_id="ab" * 32,
        labels={},
        password_secret="repo-key",
    )
    return render.mover_pod(**{**base, **kw})


def _env(pod: dict) -> dict:
    return {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}


def test_a_mover_pod_gets_the_step_environment_of_the_contract():
    pod = _mover(
        password_secret_key="pw",
        credentials_secret="s3",
        access_key_key="id",
        secret_key_key="secret",
        ca_config_map="ca",
        ca_key="bundle.pem",
        extra_env={runtime.S3_REGION: "eu-1"},
    )
    expected = runtime.pod_env(
        runtime.step_env(
            password_file=f"{runtime.MOVER_PASSWORD_DIR}/pw",
            credentials=runtime.Credentials("s3", "id", "secret"),
            ca_bundle=f"{runtime.MOVER_CA_DIR}/bundle.pem",
            extra={runtime.S3_REGION: "eu-1"},
        )
    )
    assert _env(pod) == {e["name"]: e for e in expected}
    container = pod["spec"]["containers"][0]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts == {
        "target": runtime.MOVER_TARGET_DIR,
        "password": runtime.MOVER_PASSWORD_DIR,
        "ca-bundle": runtime.MOVER_CA_DIR,
    }
    assert tuple(container["securityContext"]["capabilities"]["add"]) == runtime.MOVER_CAPABILITIES


def test_a_mover_pod_without_keys_gets_no_key_variables():
    env = _env(_mover())
    assert set(env) == {runtime.PASSWORD_FILE}
    assert env[runtime.PASSWORD_FILE]["value"] == f"{runtime.MOVER_PASSWORD_DIR}/{runtime.PASSWORD_KEY}"


def test_step_env_keeps_secrets_out_of_text():
    env = runtime.step_env(credentials=runtime.Credentials("s3"), region="r", path_style=True)
    listed = runtime.pod_env(env)
    assert listed[0] == {
        "name": runtime.AWS_ACCESS_KEY_ID,
        "valueFrom": {"secretKeyRef": {"name": "s3", "key": runtime.AWS_ACCESS_KEY_ID}},
    }
    assert [e["name"] for e in listed] == [
        runtime.AWS_ACCESS_KEY_ID,
        runtime.AWS_SECRET_ACCESS_KEY,
        runtime.PASSWORD_FILE,
        runtime.S3_REGION,
        runtime.S3_PATH_STYLE,
    ]
    with pytest.raises(ValueError, match=runtime.AWS_ACCESS_KEY_ID):
        runtime.process_env(env)
    assert runtime.process_env(runtime.step_env(password_file="/p")) == {runtime.PASSWORD_FILE: "/p"}
