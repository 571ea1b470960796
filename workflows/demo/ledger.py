"""A tiny application for the quick demo: a ledger writer that pauses between transactions on request.

The writer keeps two accounts in two files under ``<data>/ledger/`` and a journal, and moves money
between them many times a second. Every transaction rewrites both account files and appends one
journal line, so a file-by-file copy taken while it runs can catch one account updated and the other
not (the invariant below breaks). Its quiesce hook (:func:`pause_hook`, a ``custom`` paired hook) asks it
to pause through a control directory outside the data: the writer finishes the transaction in flight,
acknowledges, and writes nothing until the hook's thaw removes the request. Under that hold a
file-by-file copy is consistent, which the hook claims with ``non_atomic_ok``.

Invariant (:func:`check_ledger`): both accounts carry the same transaction number, that number is the
journal's line count, and the balances add up to :data:`TOTAL`.

Run as ``python -m workflows.demo.ledger --data DIR --control DIR``; :func:`start_writer` starts it in
its own session (stop it with :func:`workflows.demo.sandbox.stop_process`). It also exits when its
parent process is gone, so a killed demo leaves no writer behind.
"""

from __future__ import annotations

import argparse
import os
import random
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

TOTAL = 1_000_000
ACCOUNTS = ("alice", "bob")
PAUSE = "pause"  # the hook's request (control directory)
PAUSED = "paused"  # the writer's acknowledgement: no transaction runs while it exists


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _read_account(path: Path) -> tuple[int, int]:
    seq, balance = path.read_text().split()
    return int(seq), int(balance)


def init_ledger(data: Path) -> None:
    ledger = data / "ledger"
    ledger.mkdir(parents=True, exist_ok=True)
    _write(ledger / "alice", f"0 {TOTAL}\n")
    _write(ledger / "bob", "0 0\n")
    (ledger / "journal").write_text("")


def run_writer(data: Path, control: Path, interval_s: float = 0.005) -> None:
    """Transactions until the parent process is gone; pauses between two while ``control/pause`` exists."""
    ledger = data / "ledger"
    parent = os.getppid()
    rnd = random.Random()
    seq, _ = _read_account(ledger / "alice")
    with open(ledger / "journal", "a") as journal:
        while os.getppid() == parent:
            if (control / PAUSE).exists():
                (control / PAUSED).touch()
                while (control / PAUSE).exists() and os.getppid() == parent:
                    time.sleep(0.01)
                (control / PAUSED).unlink(missing_ok=True)
                continue
            seq += 1
            _, a = _read_account(ledger / "alice")
            _, b = _read_account(ledger / "bob")
            amount = rnd.randint(1, 1000)
            if a < amount or (b >= amount and rnd.random() < 0.5):
                a, b, direction = a + amount, b - amount, "bob->alice"
            else:
                a, b, direction = a - amount, b + amount, "alice->bob"
            _write(ledger / "alice", f"{seq} {a}\n")
            time.sleep(interval_s)  # a window in which the two accounts disagree
            _write(ledger / "bob", f"{seq} {b}\n")
            journal.write(f"{seq} {direction} {amount}\n")
            journal.flush()
            time.sleep(interval_s)


def start_writer(data: Path, control: Path) -> subprocess.Popen:
    control.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [sys.executable, "-m", "workflows.demo.ledger", "--data", str(data), "--control", str(control)],
        cwd=Path(__file__).resolve().parents[2],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def pause_hook(control: Path, name: str = "ledger-writer") -> dict[str, Any]:
    """The policy's quiesce entry: a local ``custom`` paired hook that holds the writer paused."""
    pause, paused = shlex.quote(str(control / PAUSE)), shlex.quote(str(control / PAUSED))
    return {
        "hook": "custom",
        "name": name,
        "local": True,
        "params": {
            # the writer acknowledges once the transaction in flight is complete
            "freeze": [f"touch {pause} && while [ ! -e {paused} ]; do sleep 0.02; done"],
            # the thaw never waits on the writer
            "thaw": [f"rm -f {pause}"],
            "check": f"test -e {paused}",
            # nothing is written while the writer is paused, so a file-by-file copy is consistent
            "non_atomic_ok": True,
        },
    }


def check_ledger(data: Path) -> tuple[bool, str]:
    """Whether the ledger under ``data`` keeps the invariant, and a one-line account of it."""
    ledger = data / "ledger"
    try:
        seq_a, a = _read_account(ledger / "alice")
        seq_b, b = _read_account(ledger / "bob")
        lines = len((ledger / "journal").read_text().splitlines())
    except (OSError, ValueError) as err:
        return False, f"ledger unreadable: {err}"
    ok = seq_a == seq_b == lines and a + b == TOTAL
    return ok, (
        f"ledger {'consistent' if ok else 'TORN'}: {lines} transactions in the journal, accounts at"
        f" transaction {seq_a} and {seq_b}, balances sum to {a + b} (expected {TOTAL})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m workflows.demo.ledger", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--data", required=True, help="the directory holding ledger/")
    parser.add_argument("--control", required=True, help="the directory of the pause request")
    args = parser.parse_args(argv)
    run_writer(Path(args.data), Path(args.control))
    return 0


if __name__ == "__main__":
    sys.exit(main())
