"""The local runner: executes a policy's pipelines on this machine, each step as ``python -m steps``.

It runs the very :class:`workflows.pipeline.Pipeline` the Hera builder turns into an Argo
WorkflowTemplate — the same steps, arguments, dependencies, freeze scope, retry classes and the
always-run finalizer — for a policy whose volumes are local directories and whose hooks run as local
processes (``snapshot.driver: local``). Called by ``snapflow run --local``, ``snapflow restore
--local`` and the demo.

How the Argo semantics map onto processes:

- a step is a process in its own session (Ctrl-C reaches the runner, which stops the steps in order);
  its stdout and stderr go to ``<run dir>/steps/<step>/``, its Argo progress to ``ARGO_PROGRESS_FILE``
  in the same folder;
- ``retry: temporary`` reruns a step that exited 75, at most :data:`RETRY_LIMIT` times, with
  exponential backoff; any other exit code fails the step, and ``retry: never`` is never rerun;
- like an Argo DAG (failFast), once a step failed no new step starts; the running ones finish;
- the exit step (finalize) runs whatever happened — failure, a step killed, Ctrl-C — with
  ``--workflow-status Succeeded`` only when every step succeeded;
- the pipeline's mutex is a lock file: two runs of one app never overlap.

Values known only at run time (:class:`workflows.pipeline.Ref`) resolve locally: the backup ID is
``backup-<policy>-<5 chars>`` like an Argo workflow name; a copy reads its volume's snapshot through a
stable path under the state directory (``mounts/<app>/<volume>``, a symlink, like the fixed mount path
of a copy pod) so that the next backup finds its parent and skips unchanged files. A step's scratch
space (the restore test of check; a generic ephemeral volume in a cluster) is a temporary directory,
removed when the run ends.

After the finalizer, a local snapshot (btrfs subvolume or copy) of this backup is deleted when the
policy says ``snapshot.deleteAfterCopy``, and the step timeline is stored in the repository as the run
record ``pipeline`` of the backup (read by ``snapflow report``).

A policy with ``spec.source`` (etcd, registry, bucket) runs its pipelines the same way; what its
source steps' pods would mount — the Secrets the policy names, a node's directory, a scratch emptyDir —
and the address of the node's etcd member are their local stand-ins
(:mod:`~workflows.local.source_files`: ``--secret NAME=DIR``).

The pieces live beside this module: :mod:`~workflows.local.local_policy` (loading and checking the
policy, the steps' environment), :mod:`~workflows.local.step_runs` (statuses, a step's run, the result),
:mod:`~workflows.local.run_context` (resolving run-time references), :mod:`~workflows.local.processes`,
:mod:`~workflows.local.snapshot_cleanup`, :mod:`~workflows.local.repository_access` (the run record)
and :mod:`~workflows.local.local_restore` (``snapflow restore --local``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from steps.api import Plan, SnapflowError, UsageError, runtime
from workflows.local.local_policy import check_local, check_local_repository, step_environment
from workflows.local.processes import app_lock, kill_group, last_line, read_progress, tail_stderr
from workflows.local.repository_access import store_run_record
from workflows.local.run_context import LocalContext, new_backup_id, pipeline_parameters
from workflows.local.snapshot_cleanup import cleanup_local_snapshots
from workflows.local.source_files import SourceFiles
from workflows.local.step_runs import (
    DONE,
    FAILED,
    OMITTED,
    PENDING,
    RETRYING,
    RUNNING,
    SKIPPED,
    SUCCEEDED,
    RunResult,
    StepRun,
    View,
)
from workflows.pipeline import (
    RETRY_EXIT_CODES,
    RETRY_LIMIT,
    Pipeline,
    Ref,
    Retry,
    Step,
    pipelines_for,
    plan_for,
)
from workflows.policy import Policy

DEFAULT_BACKOFF_S = 2.0
MAX_BACKOFF_S = 60.0
STOP_GRACE_S = 10.0
POLL_S = 0.1


def default_state_dir() -> Path:
    env = os.environ.get(runtime.STATE_DIR)
    if env:
        return Path(env)
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "snapflow"


@dataclass
class RunSettings:
    state_dir: Path = field(default_factory=default_state_dir)
    python: str = sys.executable
    params: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)  # extra environment of the steps
    backoff_s: float = DEFAULT_BACKOFF_S
    retry_limit: int = RETRY_LIMIT
    backup_id: str | None = None
    snapshot_dir: str | None = None  # where the local driver puts snapshots (default: next to the volume)
    scratch_dir: str | None = None  # where steps' scratch space goes (default: the system's temp dir)
    store_record: bool = True  # the step timeline as the run record "pipeline"
    secret_dirs: dict[str, str] = field(default_factory=dict)  # a source's Secrets: name -> dir of key files
    progress_interval_s: float = 0.5


class LocalPipelineRunner:
    """Runs one pipeline of a policy with processes; see the module docstring for the semantics."""

    def __init__(self, policy: Policy, pipeline: Pipeline, settings: RunSettings, view: View | None = None):
        self.policy = policy
        self.pipeline = pipeline
        self.settings = settings
        self.view = view or View()
        self.env = step_environment(policy, settings.env)
        self.interrupted = threading.Event()
        self.source_files = SourceFiles(settings.secret_dirs) if policy.spec.source is not None else None

    # -- set-up ------------------------------------------------------------------------------
    def plan(self) -> Plan:
        plan = plan_for(self.policy)
        if self.settings.snapshot_dir:
            plan = dataclasses.replace(
                plan, snapshot=dataclasses.replace(plan.snapshot, local_dir=str(self.settings.snapshot_dir))
            )
        return plan

    def _context(
        self, backup_id: str, run_dir: Path, restore_target: str | None, params: dict[str, str]
    ) -> LocalContext:
        plan_file = run_dir / "plan.json"
        plan_file.write_text(self.plan().to_json() + "\n")
        return LocalContext(
            backup_id=backup_id,
            run_dir=run_dir,
            plan_file=plan_file,
            params=params,
            mounts_dir=self.settings.state_dir / "mounts" / f"{self.policy.namespace}.{self.policy.app}",
            restore_target=restore_target,
            scratch_root=self.settings.scratch_dir,
        )

    # -- one process -------------------------------------------------------------------------
    def _argv(self, ctx: LocalContext, step: Step) -> list[str]:
        if step.source_pod is not None and self.source_files is not None:
            args = self.source_files.step_args(ctx, step)
        else:
            args = [ctx.resolve(a, step) if isinstance(a, Ref) else a for a in step.args]
        return [self.settings.python, "-m", "steps", step.command, *args]

    def _launch(self, ctx: LocalContext, run: StepRun) -> None:
        run.dir.mkdir(parents=True, exist_ok=True)
        try:
            argv = self._argv(ctx, run.step)
        except SnapflowError as err:
            run.attempts += 1
            now = time.time()
            run.started = run.started or now
            run.finished = now
            run.status = FAILED
            run.exit_code = err.exit_code
            run.error = f"error: {err}"
            run.message = run.error
            self.view.event(run, "failed")
            return
        (run.dir / "argv.json").write_text(json.dumps(argv) + "\n")
        with contextlib.suppress(FileNotFoundError):
            run.progress_file.unlink()
        env = {
            **self.env,
            runtime.ARGO_PROGRESS_FILE: str(run.progress_file),
            runtime.PROGRESS_INTERVAL: str(self.settings.progress_interval_s),
            "PYTHONUNBUFFERED": "1",
        }
        attempt = run.attempts + 1
        mode = "w" if attempt == 1 else "a"
        stdout = open(run.stdout_path, mode + "b")  # noqa: SIM115 - closed when the step ends
        stderr_log = open(run.stderr_path, mode + "b")  # noqa: SIM115
        if attempt > 1:
            stderr_log.write(f"--- attempt {attempt} ---\n".encode())
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=subprocess.PIPE,
            env=env,
            cwd=str(run.dir),
            start_new_session=True,
        )
        stdout.close()
        run.proc = proc
        run.attempts = attempt
        run.started = run.started or time.time()
        run.finished = None
        run.status = RUNNING
        run.next_attempt_at = None
        run.error = ""
        t = threading.Thread(target=tail_stderr, args=(run, proc.stderr, stderr_log), daemon=True)
        t.start()
        run._threads = [t]
        self.view.event(run, "started" if attempt == 1 else f"attempt {attempt}")

    def _reap(self, run: StepRun) -> bool:
        """Update a running step; True when its process ended."""
        proc = run.proc
        assert proc is not None
        progress = read_progress(run.progress_file)
        if progress is not None:
            run.progress = progress
        code = proc.poll()
        if code is None:
            return False
        for t in run._threads:
            t.join(timeout=5)
        run.proc = None
        run.exit_code = code
        progress = read_progress(run.progress_file)
        if progress is not None:
            run.progress = progress
        line = last_line(run.stdout_path)
        if line:
            try:
                run.result = json.loads(line)
            except ValueError:
                run.result = line
        if code == 0:
            run.status = SUCCEEDED
            run.finished = time.time()
            self.view.event(run, "succeeded")
            return True
        retryable = (
            run.step.retry is Retry.TEMPORARY
            and code in RETRY_EXIT_CODES
            and run.attempts <= self.settings.retry_limit
            and not self.interrupted.is_set()
        )
        if retryable:
            delay = min(self.settings.backoff_s * (2 ** (run.attempts - 1)), MAX_BACKOFF_S)
            run.status = RETRYING
            run.next_attempt_at = time.time() + delay
            self.view.event(run, f"exit {code}, retrying in {delay:g} s")
            return True
        run.status = FAILED
        run.finished = time.time()
        if not run.error:
            if code < 0:
                run.error = f"killed by signal {signal.Signals(-code).name}"
            else:
                run.error = run.message or f"exit code {code}"
        self.view.event(run, "failed")
        return True

    def _stop(self, runs: list[StepRun]) -> None:
        """SIGTERM every running step's process group, then SIGKILL what is left after a grace."""
        live = [r for r in runs if r.proc is not None and r.proc.poll() is None]
        for r in live:
            assert r.proc is not None
            kill_group(r.proc, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for r in live:
            assert r.proc is not None
            try:
                r.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                kill_group(r.proc, signal.SIGKILL)
                r.proc.wait()
        for r in runs:
            if r.proc is not None:
                self._reap(r)
                if r.status in (RUNNING, RETRYING):
                    r.status = FAILED
            if r.status == RETRYING:
                r.status = FAILED
                r.finished = time.time()
            if r.status == FAILED and not r.error:
                r.error = "stopped (interrupted)"

    # -- the graph -----------------------------------------------------------------------------
    def _run_graph(self, ctx: LocalContext, runs: list[StepRun]) -> None:
        by_name = {r.name: r for r in runs}
        limit = self.pipeline.parallelism or len(runs) or 1
        failed = False
        last_refresh = 0.0
        while True:
            now = time.time()
            for r in runs:
                if r.status == RUNNING and self._reap(r) and r.status == FAILED:
                    failed = True
            if self.interrupted.is_set():
                break
            active = sum(1 for r in runs if r.status == RUNNING)
            for r in runs:
                if failed or active >= limit:
                    break
                if r.status == RETRYING and r.next_attempt_at is not None and now >= r.next_attempt_at:
                    self._launch(ctx, r)
                    active += 1
                    continue
                if r.status != PENDING:
                    continue
                deps = [by_name[d] for d in r.step.depends]
                if any(d.status in (FAILED, OMITTED) for d in deps):
                    continue
                if not all(d.status in (SUCCEEDED, SKIPPED) for d in deps):
                    continue
                when = r.step.when
                if when is not None and ctx.params.get(when.param) != when.value:
                    r.status = SKIPPED
                    self.view.event(r, f"skipped ({when.param} is not {when.value})")
                    continue
                self._launch(ctx, r)
                if r.status == FAILED:
                    failed = True
                    break
                active += 1
            if failed and not any(r.status in (RUNNING,) for r in runs):
                break
            if all(r.status in DONE for r in runs):
                break
            if now - last_refresh >= 0.2:
                self.view.refresh(runs)
                last_refresh = now
            time.sleep(POLL_S)
        if self.interrupted.is_set():
            self._stop(runs)
        for r in runs:
            if r.status in (PENDING, RETRYING):
                if r.status == RETRYING:
                    r.status = FAILED
                    r.finished = time.time()
                    self.view.event(r, "failed")
                else:
                    r.status = OMITTED
                    self.view.event(r, "omitted")
        self.view.refresh(runs, force=True)

    @contextlib.contextmanager
    def _interrupts_noted(self) -> Iterator[None]:
        """While the finalizer must run: Ctrl-C and SIGTERM are noted, never raised."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def note(_signum, _frame) -> None:
            self.interrupted.set()
            self.view.note("interrupted: letting the finalizer finish first (it thaws the app)")

        previous = {sig: signal.signal(sig, note) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _run_exit_step(self, ctx: LocalContext, run: StepRun) -> None:
        """Run the finalizer to its end (retrying exit code 75 like any step)."""
        self._launch(ctx, run)
        last_refresh = 0.0
        while True:
            if run.status == RUNNING:
                self._reap(run)
            if run.status == RETRYING and run.next_attempt_at and time.time() >= run.next_attempt_at:
                self._launch(ctx, run)
            if run.status in DONE:
                break
            if time.time() - last_refresh >= 0.2:
                self.view.refresh([run])
                last_refresh = time.time()
            time.sleep(POLL_S)
        self.view.refresh([run], force=True)

    # -- entry point -----------------------------------------------------------------------------
    def run(self, *, restore_target: str | None = None) -> RunResult:
        settings = self.settings
        backup_id = settings.backup_id or new_backup_id(self.policy, self.pipeline.name)
        params = pipeline_parameters(self.pipeline, settings.params)
        if self.source_files is not None:
            self.source_files.check(self.pipeline, params)
        run_dir = settings.state_dir / "runs" / backup_id
        if run_dir.exists():
            raise UsageError(f"--backup-id: {backup_id} was already used (state in {run_dir})")
        run_dir.mkdir(parents=True)
        ctx = self._context(backup_id, run_dir, restore_target, params)
        runs = [StepRun(step=s, dir=run_dir / "steps" / s.name) for s in self.pipeline.order()]
        exit_run = (
            StepRun(step=self.pipeline.exit_step, dir=run_dir / "steps" / self.pipeline.exit_step.name)
            if self.pipeline.exit_step
            else None
        )
        ctx.runs = {r.name: r for r in [*runs, *([exit_run] if exit_run else [])]}
        started = time.time()
        lock = (
            app_lock(settings.state_dir / "locks", self.pipeline.mutex, self.view.note)
            if self.pipeline.mutex
            else contextlib.nullcontext()
        )
        with lock:
            self.view.start(self.pipeline.title, [*runs, *([exit_run] if exit_run else [])], run_dir)
            try:
                self._run_graph(ctx, runs)
            except KeyboardInterrupt:
                self.interrupted.set()
            with self._interrupts_noted():
                # From here on nothing may cut the run short: the finalizer thaws the app.
                if self.interrupted.is_set():
                    self.view.note("interrupted: stopping the running steps, then running the finalizer")
                    self._stop(runs)
                    for r in runs:
                        if r.status == PENDING:
                            r.status = OMITTED
                graph_ok = (
                    all(r.status in (SUCCEEDED, SKIPPED) for r in runs) and not self.interrupted.is_set()
                )
                ctx.workflow_status = SUCCEEDED if graph_ok else FAILED
                if exit_run is not None:
                    self._run_exit_step(ctx, exit_run)
                warnings: list[str] = ctx.remove_scratch()
                if self.pipeline.name == "backup":
                    warnings += cleanup_local_snapshots(self.plan(), ctx)
                    with contextlib.suppress(FileNotFoundError):
                        for link in ctx.mounts_dir.iterdir():
                            if link.is_symlink():
                                link.unlink()
        ok = graph_ok and (exit_run is None or exit_run.status == SUCCEEDED)
        outputs = {o.name: ctx.output(o.source) for o in self.pipeline.outputs}
        committed = None
        if exit_run is not None and isinstance(exit_run.result, dict):
            committed = exit_run.result.get("committed")
        elif self.pipeline.name == "backup":
            committed = ok
        result = RunResult(
            pipeline=self.pipeline.name,
            policy=self.policy.name,
            app=self.policy.app,
            backup_id=backup_id,
            run_dir=run_dir,
            status=SUCCEEDED if ok else FAILED,
            graph_status=ctx.workflow_status,
            started=started,
            finished=time.time(),
            steps=runs,
            exit_step=exit_run,
            outputs=outputs,
            verdict=ctx.freeze_record(),
            interrupted=self.interrupted.is_set(),
            committed=committed,
            warnings=warnings,
        )
        (run_dir / "run.json").write_text(json.dumps(result.to_dict(), indent=2, sort_keys=True) + "\n")
        if settings.store_record and self.pipeline.name == "backup":
            warning = store_run_record(self.policy, self.env, result)
            if warning:
                result.warnings.append(warning)
        self.view.finish(result)
        if result.interrupted:
            raise KeyboardInterrupt
        return result


# --------------------------------------------------------------------------------------------------
# Entry points used by the CLI and the demo.


def find_pipeline(policy: Policy, name: str) -> Pipeline:
    for p in pipelines_for(policy):
        if p.name == name:
            return p
    names = ", ".join(p.name for p in pipelines_for(policy))
    raise UsageError(f"--pipeline: expected one of {names}, got {name!r}")


def run_local(
    policy: Policy,
    pipeline: str = "backup",
    settings: RunSettings | None = None,
    view: View | None = None,
    restore_target: str | None = None,
) -> RunResult:
    """Run one pipeline of a local policy, or of a policy with ``spec.source`` (its source reached from
    this machine); raises KeyboardInterrupt after cleaning up on Ctrl-C."""
    if policy.spec.source is not None:
        check_local_repository(policy, policy.name)
    else:
        check_local(policy, policy.name)
    runner = LocalPipelineRunner(policy, find_pipeline(policy, pipeline), settings or RunSettings(), view)
    return runner.run(restore_target=restore_target)
