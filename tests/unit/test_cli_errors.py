"""Every error reaching either command line (``python -m steps``, ``snapflow``) is one line on stderr with
a non-zero exit code; a traceback only with ``--debug`` or ``SNAPFLOW_DEBUG=1``. The catch is in one
place, the dispatcher both command lines share."""

from __future__ import annotations

import errno
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from steps.cli import build_command_parser, run_command
from steps.errors import EXIT_FAILURE, EXIT_TEMPORARY, EXIT_USAGE, IntegrityError

ROOT = Path(__file__).resolve().parents[2]


def _parser(exc: BaseException):
    def run(args):
        raise exc

    boom = SimpleNamespace(NAME="boom", HELP="raise", configure=lambda p: None, run=run)
    return build_command_parser("prog", "test", "1", "COMMAND", [boom])


@pytest.mark.parametrize(
    ("exc", "code", "line"),
    [
        (
            FileNotFoundError(errno.ENOENT, "No such file or directory", "/srv/plan.json"),
            EXIT_FAILURE,
            "error: /srv/plan.json: No such file or directory (FileNotFoundError)",
        ),
        (
            PermissionError(errno.EACCES, "Permission denied", "/a", None, "/b"),
            EXIT_FAILURE,
            "error: /a -> /b: Permission denied (PermissionError)",
        ),
        (
            ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"),
            EXIT_TEMPORARY,
            "error: Connection reset by peer (ConnectionResetError)",
        ),
        (TimeoutError("timed out"), EXIT_TEMPORARY, "error: timed out (TimeoutError)"),
        (
            KeyError("tree"),
            EXIT_FAILURE,
            "error: unexpected KeyError: missing key 'tree' (--debug or SNAPFLOW_DEBUG=1 shows where)",
        ),
        (
            ValueError("invalid literal\nfor int()"),
            EXIT_FAILURE,
            "error: unexpected ValueError: invalid literal for int() (--debug or SNAPFLOW_DEBUG=1 shows where)",
        ),
        (
            IntegrityError("pack 1234: stored bytes\ndo not match their name"),
            3,
            "error: pack 1234: stored bytes do not match their name",
        ),
    ],
)
def test_any_exception_is_one_line_and_an_exit_code(exc, code, line, capsys, monkeypatch):
    monkeypatch.delenv("SNAPFLOW_DEBUG", raising=False)
    assert run_command(_parser(exc), ["boom"]) == code
    err = capsys.readouterr().err
    assert err == line + "\n"


def test_a_very_long_unexpected_message_is_cut(capsys, monkeypatch):
    monkeypatch.delenv("SNAPFLOW_DEBUG", raising=False)
    assert run_command(_parser(ValueError("x" * 5000)), ["boom"]) == EXIT_FAILURE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and len(err) < 320 and err.rstrip().endswith("...")


@pytest.mark.parametrize("argv", [["--debug", "boom"], ["boom", "--debug"]])
def test_debug_switch_lets_the_traceback_through(argv, monkeypatch):
    monkeypatch.delenv("SNAPFLOW_DEBUG", raising=False)
    with pytest.raises(KeyError):
        run_command(_parser(KeyError("tree")), argv)


def test_debug_environment_variable_lets_the_traceback_through(monkeypatch):
    monkeypatch.setenv("SNAPFLOW_DEBUG", "1")
    with pytest.raises(OSError):
        run_command(_parser(OSError(errno.EIO, "Input/output error")), ["boom"])


def _cli(module: str, *args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    import os

    env = {k: v for k, v in os.environ.items() if k != "SNAPFLOW_DEBUG"}
    env.update({"SNAPFLOW_PASSWORD": "pw", **(env_extra or {})})
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def test_hostile_inputs_to_both_command_lines_give_one_line_each(tmp_path):
    regular = tmp_path / "regular"
    regular.write_text("not a directory\n")
    cases = [
        # (module, argv, exit code, text of the line)
        (
            "steps",
            ["snapshots", "--repo", f"file://{regular}"],
            EXIT_USAGE,
            "expected a directory for the repository",
        ),
        (
            "steps",
            ["snapshots", "--repo", "s3://bkt/p/../q", "--endpoint", "http://127.0.0.1:1"],
            EXIT_USAGE,
            "'..'",
        ),
        (
            "steps",
            ["snapshots", "--repo", "s3://bkt/p", "--endpoint", "http://[::1"],
            EXIT_USAGE,
            "--endpoint:",
        ),
        ("steps", ["thaw", "--plan", str(tmp_path)], None, str(tmp_path)),
        (
            "workflows",
            ["report", "--repo", "file://other-host/x", "-o", str(tmp_path / "r.html")],
            EXIT_USAGE,
            "--repo:",
        ),
    ]
    for module, argv, code, text in cases:
        proc = _cli(module, *argv)
        assert proc.returncode != 0 and (code is None or proc.returncode == code), (argv, proc.stderr)
        assert "Traceback" not in proc.stderr, (argv, proc.stderr)
        lines = proc.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and text in lines[0], (argv, proc.stderr)


def test_debug_shows_the_traceback(tmp_path):
    # a directory given as the plan file
    proc = _cli("steps", "--debug", "thaw", "--plan", str(tmp_path))
    assert proc.returncode != 0
    assert "Traceback (most recent call last)" in proc.stderr, proc.stderr
