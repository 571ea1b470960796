"""``make demo``: the whole product on one machine in a couple of minutes, then everything cleaned up.

1. starts an embedded S3 server (SeaweedFS) on loopback;
2. starts a throw-away PostgreSQL when the Debian binaries are installed — on a loop-mounted btrfs
   when run as root with btrfs-progs, so the snapshot is atomic (CHECKPOINT, crash recovery), else in
   a plain directory, copied in backup mode (backup_label) — and puts pgbench load on it; without
   PostgreSQL (or with ``--quick``) it backs up a generated sample directory instead, in which a small
   ledger writer (:mod:`workflows.demo.ledger`) keeps writing, held paused by a custom hook while the
   directory is copied;
3. runs the policy's init and backup pipelines through the local runner (freeze → snapshot → thaw →
   copy → verify → finalize), twice, the second one incremental, while the load goes on;
4. restores the newest backup into a new directory, starts PostgreSQL on it and checks the TPC-B
   invariant (or compares the sample files byte for byte and checks the ledger's invariant);
5. writes the HTML report and prints a summary.

Whatever happens — a failure, Ctrl-C, SIGTERM — the app is thawed (the runner's finalizer), and the
load, the databases, the file system and the S3 server are stopped, unmounted and removed.
Run with ``python -m workflows.demo [--quick] [--keep] [--report FILE]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from steps.api import SnapflowError, runtime
from workflows.demo.ledger import check_ledger, init_ledger, pause_hook, start_writer
from workflows.demo.sample import make_sample_data, tree_digest
from workflows.demo.sandbox import (
    LocalPostgres,
    LoopBtrfs,
    btrfs_unavailable_reason,
    postgres_bin_dir,
    stop_process,
    tpcb_invariant_holds,
    unreachable_parent,
)
from workflows.demo.seaweedfs import SeaweedFS
from workflows.local.local_policy import load_local_policy
from workflows.local.local_restore import restore_local
from workflows.local.runner import RunSettings, run_local
from workflows.local.step_runs import RunResult
from workflows.local.view import TerminalView, format_duration

BUCKET = "snapflow-demo"
DEFAULT_REPORT = "build/demo-report.html"


class Interrupted(Exception):
    pass


def _say(text: str = "") -> None:
    print(text, flush=True)


def _step(text: str) -> None:
    _say(f"\n==> {text}")


@dataclass
class Cleanup:
    """Things to undo, last first; every undo runs even when one fails."""

    actions: list[tuple[str, Callable[[], None]]] = field(default_factory=list)

    def push(self, what: str, action: Callable[[], None]) -> None:
        self.actions.append((what, action))

    def run(self) -> list[str]:
        errors = []
        while self.actions:
            what, action = self.actions.pop()
            try:
                action()
            except Exception as err:  # keep undoing the rest
                errors.append(f"{what}: {err}")
        return errors


@dataclass
class Outcome:
    mode: str = ""
    method: str = ""
    notes: list[str] = field(default_factory=list)
    backups: list[RunResult] = field(default_factory=list)
    restore_ok: bool = False
    restore_detail: str = ""
    report: str = ""
    timings: dict[str, float] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------------
# The application under protection.


def write_policy(
    path: Path,
    volume: Path,
    endpoint: str,
    quiesce: list[dict[str, Any]],
    name: str = "demo-db",
    exclude: tuple[str, ...] = ("postmaster.pid", "postmaster.opts"),
) -> Path:
    doc = {
        "apiVersion": "snapflow.io/v1alpha1",
        "kind": "ProtectionPolicy",
        "metadata": {"name": name, "namespace": "demo"},
        "spec": {
            "cluster": "laptop",
            "volumes": [{"path": str(volume), "name": "data"}],
            "quiesce": quiesce,
            "repository": {
                "url": f"s3://{BUCKET}/demo",
                "endpoint": endpoint,
                "pathStyle": True,
                "passwordSecret": {"name": "demo-repository"},
            },
            "exclude": list(exclude),
            "freeze": {"deadlineSeconds": 30, "keepaliveSeconds": 2},
            "verify": {"readDataPercent": 100},
            "schedule": {"cron": "0 * * * *", "timezone": "UTC"},
            "retention": {"keepLast": 7},
        },
    }
    path.write_text(
        "# Written by the Snapflow demo: a local policy (a directory as the volume, a local hook).\n"
        + yaml.safe_dump(doc, sort_keys=False)
    )
    return path


# --------------------------------------------------------------------------------------------------
# The demo.


class Demo:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.cleanup = Cleanup()
        self.outcome = Outcome()
        self.workdir = Path(tempfile.mkdtemp(prefix="snapflow-demo-", dir=args.workdir))
        os.chmod(self.workdir, 0o755)  # the database user must reach its directories
        self.cleanup.push("remove the work directory", self._remove_workdir)
        self.state_dir = self.workdir / "state"
        self.report_path = Path(args.report).absolute()
        self.pg: LocalPostgres | None = None
        self.s3: SeaweedFS | None = None
        self.load = None
        self.ledger_control: Path | None = None  # sample mode: the ledger writer's pause requests

    def _remove_workdir(self) -> None:
        if self.args.keep:
            _say(f"kept {self.workdir} (--keep)")
            return
        shutil.rmtree(self.workdir, ignore_errors=True)

    def view(self) -> TerminalView:
        return TerminalView(sys.stdout, tty=None if not self.args.plain else False)

    def settings(self) -> RunSettings:
        return RunSettings(state_dir=self.state_dir, env=self.env)

    # -- stages ---------------------------------------------------------------------------------
    def start_object_store(self) -> None:
        _step("Starting an embedded S3 server (SeaweedFS) on loopback")
        t = time.monotonic()
        # Its own short temporary directory: the server's unix sockets live there, and a socket path
        # must stay under 108 bytes however deep the demo's work directory is.
        s3 = SeaweedFS()
        self.s3 = s3
        self.cleanup.push("stop SeaweedFS", s3.cleanup)
        s3.start()
        password_file = self.workdir / "repository-password"
        password_file.write_text(secrets.token_urlsafe(24) + "\n")
        os.chmod(password_file, 0o600)
        self.env = {**s3.client_env(), runtime.PASSWORD_FILE: str(password_file)}
        os.environ.update(self.env)  # the report reads the repository from this process
        self.endpoint = s3.endpoint
        self.outcome.timings["object store"] = time.monotonic() - t
        _say(f"    S3 endpoint {s3.endpoint}, bucket {BUCKET} (credentials generated for this run)")

    def prepare_postgres(self, bindir: Path) -> Path:
        blocked = unreachable_parent(self.workdir) if os.geteuid() == 0 else None
        if blocked is not None:
            raise SnapflowError(
                f"--workdir: the postgres user cannot enter {blocked} (PostgreSQL refuses to run as root); "
                "choose a directory whose parents are world-executable, like /tmp"
            )
        why_not_btrfs = "--no-btrfs" if self.args.no_btrfs else btrfs_unavailable_reason()
        if why_not_btrfs is None:
            fs = LoopBtrfs(self.workdir / "btrfs")
            self.cleanup.push("unmount the btrfs volume", fs.destroy)
            try:
                fs.create()
                datadir = fs.subvolume("pgdata")
                self.outcome.method = (
                    "atomic btrfs snapshot of a loop-mounted volume: CHECKPOINT just before the cut, "
                    "crash recovery on restore (no backup_label)"
                )
            except SnapflowError as err:
                why_not_btrfs = f"loop-mounted btrfs failed ({err})"
        if why_not_btrfs is not None:
            datadir = self.workdir / "pgdata"
            self.outcome.method = (
                f"non-atomic copy in PostgreSQL backup mode, with backup_label and WAL copied after the "
                f"stop (no atomic snapshot: {why_not_btrfs})"
            )
        _say(f"    snapshot method: {self.outcome.method}")
        pg = LocalPostgres(bindir, datadir, self.workdir / "pg-run")
        self.pg = pg
        self.cleanup.push("stop PostgreSQL", lambda: pg.stop("immediate"))
        t = time.monotonic()
        pg.initdb().start()
        _say(f"    PostgreSQL ({bindir.parent.name}) on 127.0.0.1:{pg.port}, data in {datadir}")
        pg.pgbench_init(self.args.scale)
        self.outcome.timings["database set-up"] = time.monotonic() - t
        _say(f"    pgbench tables created (scale {self.args.scale})")
        return datadir

    def start_load(self) -> None:
        if self.pg is None:
            assert self.ledger_control is not None
            self.load = start_writer(self.workdir / "sample", self.ledger_control)
            self.cleanup.push("stop the ledger writer", lambda: stop_process(self.load))
            time.sleep(0.5)
            _say("    ledger writer running (transfers between two account files, a journal line each)")
            return
        self.load = self.pg.pgbench_load(clients=4)
        self.cleanup.push("stop the pgbench load", lambda: stop_process(self.load))
        time.sleep(1.0)
        _say("    pgbench load running (4 clients, TPC-B-like transactions)")

    def stop_load(self) -> None:
        stop_process(self.load)

    def backup(self, policy, label: str) -> RunResult:
        _step(label)
        t = time.monotonic()
        result = run_local(policy, "backup", self.settings(), self.view())
        self.outcome.timings[label] = time.monotonic() - t
        self.outcome.backups.append(result)
        if not result.ok:
            raise SnapflowError(f"{label} failed; logs in {result.run_dir}")
        return result

    def run(self) -> int:
        args = self.args
        t_start = time.monotonic()
        self.start_object_store()
        bindir = None if args.quick else postgres_bin_dir()
        if bindir is not None:
            self.outcome.mode = "postgresql"
            _step("Starting a throw-away PostgreSQL")
            volume = self.prepare_postgres(bindir)
            assert self.pg is not None
            quiesce = [
                {"hook": "postgresql", "name": "demo-db", "local": True, "params": self.pg.hook_params}
            ]
        else:
            self.outcome.mode = "sample"
            reason = (
                "--quick"
                if args.quick
                else "PostgreSQL server binaries not found (Debian package postgresql)"
            )
            _step(f"Using a sample data directory ({reason})")
            volume = self.workdir / "sample"
            make_sample_data(volume)
            init_ledger(volume)
            self.ledger_control = self.workdir / "ledger-control"
            quiesce = [pause_hook(self.ledger_control)]
            self.outcome.method = (
                "file-by-file copy while a custom hook holds the ledger writer paused between transactions"
            )
            _say(f"    {volume}: {sum(1 for _ in volume.rglob('*'))} entries, ledger/ written to all along")
        policy_file = write_policy(
            self.workdir / "policy.yaml",
            volume,
            self.endpoint,
            quiesce,
            name="demo-db" if self.pg is not None else "demo-files",
            exclude=("postmaster.pid", "postmaster.opts") if self.pg is not None else (),
        )
        policy = load_local_policy(policy_file)
        _say(f"    policy {policy_file}")

        _step("Creating the encrypted repository (init pipeline)")
        init = run_local(policy, "init", self.settings(), self.view())
        if not init.ok:
            raise SnapflowError(f"init failed; logs in {init.run_dir}")

        self.start_load()
        self.backup(policy, "Backup 1 (under load)" if self.pg else "Backup 1 (ledger writer running)")
        if self.pg is not None:
            time.sleep(2.0)
        else:
            (volume / "docs" / "note-07.txt").write_text("changed after the first backup\n")
        second = self.backup(policy, "Backup 2 (incremental)")
        self.stop_load()

        self.restore_and_check(policy, second)

        _step("Writing the HTML report")
        from workflows.report import collect, write_report

        report = collect(f"s3://{BUCKET}/demo", self.endpoint, policies=[str(policy_file)])
        write_report(report, str(self.report_path))
        self.outcome.report = str(self.report_path)
        self.outcome.timings["total"] = time.monotonic() - t_start
        return 0 if self.outcome.restore_ok else 1

    def restore_and_check(self, policy, backup: RunResult) -> None:
        _step("Restoring the newest backup into a new directory")
        target = self.workdir / "restored"
        t = time.monotonic()
        result, choice, notes = restore_local(
            policy, "latest", str(target), settings=self.settings(), view=self.view()
        )
        self.outcome.timings["restore"] = time.monotonic() - t
        if not result.ok:
            raise SnapflowError(f"restore failed; logs in {result.run_dir}")
        for n in notes:
            _say(f"    {n}")
        self.outcome.notes += notes
        if choice.backup_id != backup.backup_id:
            raise SnapflowError(f"latest resolved to {choice.backup_id}, expected {backup.backup_id}")
        if self.pg is None:
            # the ledger went on after the backup; everything else must be identical
            def still(d: dict) -> dict:
                return {k: v for k, v in d.items() if not k.startswith("ledger/")}

            source = still(tree_digest(Path(policy.spec.volumes[0].path)))
            restored = still(tree_digest(target))
            differing = sorted(k for k in set(source) | set(restored) if source.get(k) != restored.get(k))
            ledger_ok, ledger = check_ledger(target)
            self.outcome.restore_ok = source == restored and ledger_ok
            self.outcome.restore_detail = (
                f"{len(restored)} entries byte- and mode-identical to the source"
                if source == restored
                else f"{len(differing)} entries differ: {', '.join(differing[:5])}"
            ) + f"; {ledger} in the restored copy"
            _say(f"    {self.outcome.restore_detail}")
            return
        _step("Starting PostgreSQL on the restored copy and checking the data")
        assert self.pg is not None
        restored = LocalPostgres(self.pg.bin, target, self.workdir / "pg-restored-run")
        restored.rundir.mkdir(parents=True, exist_ok=True)
        shutil.copy2(self.pg.password_file, restored.password_file)
        os.chmod(target, 0o700)
        restored._chown(target)
        self.cleanup.push("stop the restored PostgreSQL", lambda: restored.stop("immediate"))
        restored.start()
        sums = restored.tpcb_sums()
        original = self.pg.tpcb_sums()
        holds = tpcb_invariant_holds(sums)
        self.outcome.restore_ok = holds and sums["transactions"] > 0
        self.outcome.restore_detail = (
            f"TPC-B invariant {'holds' if holds else 'BROKEN'} on the restored copy: sum(accounts) = "
            f"{sums['accounts']}, sum(tellers) = {sums['tellers']}, sum(branches) = {sums['branches']}, "
            f"sum(history) = {sums['history']}; {sums['transactions']} transactions restored "
            f"(the live database has {original['transactions']} by now)"
        )
        _say(f"    {self.outcome.restore_detail}")
        restored.stop()

    # -- the end --------------------------------------------------------------------------------
    def summary(self, ok: bool) -> None:
        o = self.outcome
        _say("\n" + "=" * 78)
        _say("Snapflow demo summary")
        _say("=" * 78)
        _say(
            "  application     : "
            + (
                "PostgreSQL under pgbench load"
                if o.mode == "postgresql"
                else "sample data with a ledger writer"
            )
        )
        _say(f"  snapshot method : {o.method}")
        for r in o.backups:
            verdict = (r.verdict or {}).get("verdict", "?")
            window = (r.verdict or {}).get("freeze_window_ms")
            copies = [s for s in r.steps if s.step.command == "copy"]
            summary = copies[0].result if copies and isinstance(copies[0].result, dict) else {}
            added = summary.get("bytes_added")
            total = summary.get("bytes_read")
            freeze = f"freeze window {window:.1f} ms" if isinstance(window, int | float) else "nothing frozen"
            _say(
                f"  {r.backup_id:<26}: {'committed' if r.committed else 'NOT committed'}, {verdict}, "
                f"{freeze}, read {_mib(total)}, added {_mib(added)}, {format_duration(r.finished - r.started)}"
            )
        if o.mode == "sample" and o.backups:
            _say(
                "                    (the freeze window spans the copy: the writer is paused while the directory"
                " is copied file by file)"
            )
        _say(
            f"  restore check   : {'OK' if o.restore_ok else 'FAILED'} - {o.restore_detail or 'not reached'}"
        )
        timings = ", ".join(f"{k} {format_duration(v)}" for k, v in o.timings.items())
        _say(f"  timings         : {timings}")
        if o.report:
            _say(f"  HTML report     : {o.report}")
        _say(f"  result          : {'SUCCESS' if ok else 'FAILED'}")


def _mib(n: Any) -> str:
    return "?" if not isinstance(n, int) else f"{n / 1048576:.1f} MiB"


def _raise_interrupted(signum, _frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workflows.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="sample data instead of PostgreSQL (no pgbench)")
    parser.add_argument("--no-btrfs", action="store_true", help="no loop-mounted btrfs (non-atomic copy)")
    parser.add_argument("--scale", type=int, default=4, help="pgbench scale (default 4, about 60 MB)")
    parser.add_argument(
        "--report", default=DEFAULT_REPORT, help=f"HTML report path (default {DEFAULT_REPORT})"
    )
    parser.add_argument("--workdir", help="create the demo's temporary directory here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, data)")
    parser.add_argument("--plain", action="store_true", help="no live redrawing, one line per event")
    parser.add_argument("--json", metavar="FILE", help="also write the outcome as JSON to FILE")
    args = parser.parse_args(argv)
    if args.scale < 1:
        parser.error("--scale: expected at least 1")

    signal.signal(signal.SIGTERM, _raise_interrupted)
    demo = Demo(args)
    _say(f"Snapflow demo (work directory {demo.workdir})")
    ok = False
    code = 1
    try:
        code = demo.run()
        ok = code == 0
    except KeyboardInterrupt:
        _say("\ninterrupted: cleaning up")
        code = 130
    except SnapflowError as err:
        _say(f"\nerror: {err}")
        code = 1
    finally:
        # Cleaning up must not be cut short: a second Ctrl-C would leave a mount or a server behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if not ok and demo.state_dir.exists():
            logs = demo.report_path.parent / "demo-logs"
            shutil.rmtree(logs, ignore_errors=True)
            with contextlib.suppress(OSError):
                shutil.copytree(demo.state_dir / "runs", logs, symlinks=True)
                if demo.s3 is not None and demo.s3.log_path.exists():
                    shutil.copy(demo.s3.log_path, logs / "seaweedfs.log")
                _say(f"step logs copied to {logs}")
        errors = demo.cleanup.run()
        for e in errors:
            _say(f"cleanup: {e}")
    demo.summary(ok)
    if args.json:
        out = {
            "ok": ok,
            "mode": demo.outcome.mode,
            "method": demo.outcome.method,
            "restore_ok": demo.outcome.restore_ok,
            "restore_detail": demo.outcome.restore_detail,
            "report": demo.outcome.report,
            "backups": [r.to_dict() for r in demo.outcome.backups],
            "notes": demo.outcome.notes,
            "timings": demo.outcome.timings,
            "workdir": str(demo.workdir),
            "object_store_dir": None if demo.s3 is None else str(demo.s3.workdir),
            "cleanup_errors": errors,
        }
        Path(args.json).write_text(json.dumps(out, indent=2, sort_keys=True) + "\n")
    return code
