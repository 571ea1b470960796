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
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import secrets
import signal
import string
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from steps.errors import EXIT_FAILURE, SnapflowError, UsageError
from steps.plan import Plan
from workflows.pipeline import (
    RETRY_EXIT_CODES,
    RETRY_LIMIT,
    BackupId,
    CloneOf,
    CopyResultField,
    OutputFile,
    Param,
    Pipeline,
    PlanFile,
    Ref,
    RestoreTarget,
    Retry,
    ScratchPath,
    Step,
    VerdictField,
    VolumeSourcePath,
    WorkflowStatus,
    pipelines_for,
    plan_for,
)
from workflows.policy import Policy, load_policies, parse_policy

# Statuses, named like Argo's node phases.
PENDING = "Pending"
RUNNING = "Running"
RETRYING = "Retrying"
SUCCEEDED = "Succeeded"
FAILED = "Failed"
SKIPPED = "Skipped"  # its `when` condition was false
OMITTED = "Omitted"  # not started because an earlier step failed or the run was interrupted
DONE = (SUCCEEDED, FAILED, SKIPPED, OMITTED)

DEFAULT_BACKOFF_S = 2.0
MAX_BACKOFF_S = 60.0
STOP_GRACE_S = 10.0
POLL_S = 0.1


def default_state_dir() -> Path:
    env = os.environ.get("SNAPFLOW_STATE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "snapflow"


def utc_iso(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_iso(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


# --------------------------------------------------------------------------------------------------
# The policy of a local run.


def _pairs(values: list[str] | None, option: str) -> list[tuple[str, str]]:
    out = []
    for raw in values or []:
        key, sep, value = raw.partition("=")
        if not sep or not key or not value:
            raise UsageError(f"{option}: expected NAME=VALUE, got {raw!r}")
        out.append((key, value))
    return out


def _param_value(text: str) -> Any:
    """A hook parameter given on the command line: integers stay integers (ports)."""
    if text.isdigit():
        return int(text)
    if text in ("true", "false"):
        return text == "true"
    return text


def load_local_policy(
    path: str | os.PathLike,
    *,
    name: str | None = None,
    volumes: list[str] | None = None,
    hook_params: list[str] | None = None,
) -> Policy:
    """Load the policy to run locally from ``path``.

    ``volumes`` (``NAME=PATH``, from ``--volume``) maps volumes of a cluster policy onto local
    directories; once every volume is a path, its hooks run as local processes too. ``hook_params``
    (``TARGET.KEY=VALUE``, from ``--hook-param``) sets a hook parameter (a port, a password file).
    The result is validated again like any policy.
    """
    loaded = load_policies([path])
    if name:
        loaded = [lp for lp in loaded if lp.policy.name == name]
        if not loaded:
            raise UsageError(f"{path}: no policy named {name!r}")
    if len(loaded) > 1:
        names = ", ".join(lp.policy.name for lp in loaded)
        raise UsageError(f"{path}: holds {len(loaded)} policies ({names}); choose one with --name")
    policy, source = loaded[0].policy, loaded[0].source
    mapping = dict(_pairs(volumes, "--volume"))
    params = _pairs(hook_params, "--hook-param")
    relative = [v for v in policy.spec.volumes if v.path and not os.path.isabs(v.path)]
    relative_mounts = [
        t
        for t in policy.spec.quiesce
        if t.hook == "fsfreeze"
        and t.local
        and any(isinstance(m, str) and not os.path.isabs(m) for m in _fsfreeze_mounts(t.params or {}))
    ]
    if not mapping and not params and not relative and not relative_mounts:
        return policy
    doc = policy.model_dump(by_alias=True, exclude_none=True, mode="json")
    spec = doc["spec"]
    base = Path(path).absolute().parent
    for vol in spec["volumes"]:  # relative paths are relative to the policy file, not to a step's cwd
        if vol.get("path") and not os.path.isabs(vol["path"]):
            vol["path"] = str((base / vol["path"]).resolve())
    known = {v.volume_name for v in policy.spec.volumes}
    for key in mapping:
        if key not in known:
            raise UsageError(
                f"--volume: {key!r} is not a volume of {source} (volumes: {', '.join(sorted(known))})"
            )
    for vol, model in zip(spec["volumes"], policy.spec.volumes, strict=True):
        local_path = mapping.get(model.volume_name)
        if local_path is not None:
            vol.pop("pvc", None)
            vol["name"] = model.volume_name
            vol["path"] = os.path.abspath(local_path)
    if all("path" in v for v in spec["volumes"]):
        for target in spec.get("quiesce", []):
            if target.get("hook") != "none":
                target["local"] = True
            target.pop("pod", None)
            target.pop("container", None)
    for target in spec.get("quiesce", []):  # so are the mounts a local fsfreeze hook freezes
        hook_params = target.get("params") or {}
        if target.get("hook") == "fsfreeze" and target.get("local"):
            for key in ("mount", "mounts"):
                value = hook_params.get(key)
                if isinstance(value, str) and not os.path.isabs(value):
                    hook_params[key] = str(base / value)
                elif isinstance(value, list):
                    hook_params[key] = [
                        str(base / m) if isinstance(m, str) and not os.path.isabs(m) else m for m in value
                    ]
    targets = {t.target_name: i for i, t in enumerate(policy.spec.quiesce)}
    for key, value in params:
        target_name, dot, param = key.partition(".")
        if not dot or not param:
            raise UsageError(f"--hook-param: expected TARGET.KEY=VALUE, got {key}={value!r}")
        if target_name not in targets:
            known_targets = ", ".join(sorted(targets)) or "none"
            raise UsageError(
                f"--hook-param: {target_name!r} is not a quiesce target (targets: {known_targets})"
            )
        t = spec["quiesce"][targets[target_name]]
        t.setdefault("name", target_name)
        t.setdefault("params", {})[param] = _param_value(value)
    return parse_policy(doc, f"{source} (with --volume/--hook-param)")


def _fsfreeze_mounts(params: dict[str, Any]) -> list[Any]:
    mounts = params.get("mounts")
    return list(mounts) if isinstance(mounts, list) else [params.get("mount")]


def check_local(policy: Policy, source: str) -> None:
    """Raise UsageError unless ``policy`` can run on this machine."""
    if not policy.is_local:
        raise UsageError(
            f"{source}: spec.volumes: expected local paths for a local run "
            "(add path: DIR to each volume, or give --volume NAME=DIR for each PVC)"
        )
    url = policy.spec.repository.url
    if url.startswith("mem://"):
        raise UsageError(
            f"{source}: spec.repository.url: expected s3:// or file:/// for a local run "
            "(mem:// lives inside one process, and each step is its own process)"
        )
    for vol in policy.spec.volumes:
        if vol.path and not Path(vol.path).is_dir():
            raise UsageError(f"{source}: spec.volumes[{vol.volume_name}].path: {vol.path} is not a directory")


def step_environment(policy: Policy, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of every step: this process's, plus what the Argo templates set from the policy
    (region, path style); credentials come from the caller's environment, never from arguments."""
    env = dict(os.environ)
    repo = policy.spec.repository
    if repo.region:
        env["SNAPFLOW_S3_REGION"] = repo.region
    if repo.path_style:
        env["SNAPFLOW_S3_PATH_STYLE"] = "true"
    env.update(extra or {})
    if not env.get("SNAPFLOW_PASSWORD") and not env.get("SNAPFLOW_PASSWORD_FILE"):
        raise UsageError(
            "SNAPFLOW_PASSWORD or SNAPFLOW_PASSWORD_FILE: expected the repository password "
            "(or give --password-file FILE)"
        )
    return env


# --------------------------------------------------------------------------------------------------
# Run state.


@dataclass
class StepRun:
    """One step of a local run: its status, timing and what it reported."""

    step: Step
    dir: Path
    status: str = PENDING
    attempts: int = 0
    started: float | None = None  # first attempt
    finished: float | None = None
    exit_code: int | None = None
    message: str = ""  # the last line the step wrote to stderr
    error: str = ""  # the line explaining a failure ("error: ...")
    progress: tuple[int, int] | None = None  # Argo "N/M" from ARGO_PROGRESS_FILE
    result: Any = None  # last stdout line (JSON parsed when it is JSON)
    next_attempt_at: float | None = None
    proc: subprocess.Popen | None = field(default=None, repr=False)
    _threads: list[threading.Thread] = field(default_factory=list, repr=False)

    @property
    def name(self) -> str:
        return self.step.name

    @property
    def progress_file(self) -> Path:
        return self.dir / "progress"

    @property
    def stdout_path(self) -> Path:
        return self.dir / "stdout.log"

    @property
    def stderr_path(self) -> Path:
        return self.dir / "stderr.log"

    def duration(self, now: float | None = None) -> float | None:
        if self.started is None:
            return None
        end = self.finished if self.finished is not None else (now or time.time())
        return max(0.0, end - self.started)

    def to_dict(self) -> dict[str, Any]:
        out = {
            "name": self.name,
            "command": self.step.command,
            "title": self.step.title,
            "volume": self.step.volume,
            "status": self.status,
            "attempts": self.attempts,
            "started": utc_iso(self.started),
            "finished": utc_iso(self.finished),
            "duration_s": None if self.duration() is None else round(self.duration() or 0.0, 3),
            "exit_code": self.exit_code,
            "error": self.error or None,
            "holds_freeze": self.step.holds_freeze,
        }
        if self.step.command == "check" and isinstance(self.result, dict):
            out["report"] = self.result  # the check's --json report, its restore test included
        return out


@dataclass
class RunResult:
    """What a local run did; ``status`` is Succeeded only when every step and the finalizer passed."""

    pipeline: str
    policy: str
    app: str
    backup_id: str
    run_dir: Path
    status: str
    graph_status: str
    started: float
    finished: float
    steps: list[StepRun]
    exit_step: StepRun | None
    outputs: dict[str, Any]
    verdict: dict[str, Any] | None = None  # consistent-point's record
    interrupted: bool = False
    committed: bool | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == SUCCEEDED

    def all_steps(self) -> list[StepRun]:
        return [*self.steps, *([self.exit_step] if self.exit_step else [])]

    def step(self, name: str) -> StepRun:
        for s in self.all_steps():
            if s.name == name:
                return s
        raise KeyError(name)

    def freeze_window(self) -> dict[str, Any] | None:
        """The freeze window from consistent-point's record: first quiesce, last release, length."""
        if not self.verdict:
            return None
        targets = (self.verdict.get("timeline") or {}).get("targets") or []
        quiesced = [parse_iso(t.get("quiesced")) for t in targets if t.get("quiesced")]
        released = [parse_iso(t.get("released")) for t in targets if t.get("released")]
        if not quiesced or not released:
            return None
        return {
            "quiesced": min(q for q in quiesced if q is not None),
            "released": max(r for r in released if r is not None),
            "window_ms": self.verdict.get("freeze_window_ms"),
        }

    def exit_code(self) -> int:
        if self.ok:
            return 0
        if self.interrupted:
            return 130
        for s in self.all_steps():
            if s.status == FAILED and s.exit_code:
                return s.exit_code if s.exit_code > 0 else EXIT_FAILURE
        return EXIT_FAILURE

    def to_dict(self) -> dict[str, Any]:
        window = self.freeze_window()
        return {
            "name": "pipeline",
            "pipeline": self.pipeline,
            "runner": "local",
            "policy": self.policy,
            "app": self.app,
            "backup_id": self.backup_id,
            "status": self.status,
            "graph_status": self.graph_status,
            "interrupted": self.interrupted,
            "committed": self.committed,
            "started": utc_iso(self.started),
            "finished": utc_iso(self.finished),
            "duration_s": round(self.finished - self.started, 3),
            "steps": [s.to_dict() for s in self.all_steps()],
            "freeze": None
            if window is None
            else {
                "quiesced": utc_iso(window["quiesced"]),
                "released": utc_iso(window["released"]),
                "window_ms": window["window_ms"],
            },
            "verdict": None if not self.verdict else self.verdict.get("verdict"),
            "outputs": self.outputs,
            "warnings": self.warnings,
        }


class View:
    """What the runner tells about progress (see :mod:`workflows.local.view`); this one is silent."""

    def start(self, title: str, runs: list[StepRun], run_dir: Path) -> None: ...

    def event(self, run: StepRun, what: str) -> None: ...

    def note(self, text: str) -> None: ...

    def refresh(self, runs: list[StepRun], force: bool = False) -> None: ...

    def finish(self, result: RunResult) -> None: ...


# --------------------------------------------------------------------------------------------------
# Resolving run-time references.


def new_backup_id(policy: Policy, pipeline: str = "backup") -> str:
    """``<pipeline>-<policy>-<5 chars>``, the shape of an Argo workflow name from generateName."""
    alphabet = string.ascii_lowercase + string.digits
    return f"{pipeline}-{policy.name}-" + "".join(secrets.choice(alphabet) for _ in range(5))


def json_path(data: Any, path: str) -> Any:
    """The value at a simple JSONPath (``$.a.b``); None when absent."""
    cur = data
    for part in [p for p in path.removeprefix("$").split(".") if p]:
        if not isinstance(cur, dict):
            return None
        cur = cur.get(part)
    return cur


@dataclass
class LocalContext:
    """Everything a reference may resolve to in one local run."""

    backup_id: str
    run_dir: Path
    plan_file: Path
    params: dict[str, str]
    mounts_dir: Path
    restore_target: str | None = None
    workflow_status: str = "Running"
    runs: dict[str, StepRun] = field(default_factory=dict)
    scratch_root: str | None = None  # where steps' scratch space goes (default: the system's temp dir)
    scratch_dirs: list[str] = field(default_factory=list)  # created for this run, removed after it

    def scratch_of(self, step: Step) -> str:
        """A fresh temporary directory: the step's scratch space (a generic ephemeral volume in a
        cluster). Removed by :meth:`remove_scratch` when the run ends."""
        import tempfile

        if self.scratch_root:
            os.makedirs(self.scratch_root, exist_ok=True)
        path = tempfile.mkdtemp(prefix=f"snapflow-{step.name}-", dir=self.scratch_root)
        self.scratch_dirs.append(path)
        return path

    def remove_scratch(self) -> list[str]:
        """Remove the scratch directories of this run; a warning for each that could not be."""
        import shutil

        warnings = []
        for path in self.scratch_dirs:
            shutil.rmtree(path, ignore_errors=True)
            if os.path.exists(path):
                warnings.append(f"scratch directory {path} could not be removed")
        self.scratch_dirs.clear()
        return warnings

    def output_path(self, step: Step, name: str) -> Path:
        files = dict(step.output_files)
        if name not in files:
            raise ValueError(f"step {step.name} has no output {name!r}")
        return self.run_dir / "steps" / step.name / files[name]

    def freeze_record(self) -> dict[str, Any] | None:
        for run in self.runs.values():
            if run.step.holds_freeze and run.step.output_files:
                path = self.output_path(run.step, run.step.output_files[0][0])
                try:
                    return json.loads(path.read_text())
                except (OSError, ValueError):
                    return None
        return None

    def source_of(self, volume: str) -> str:
        record = self.freeze_record()
        if record is None:
            raise SnapflowError(f"volume {volume}: the consistent point left no record to copy from")
        for snap in record.get("snapshots") or []:
            if snap.get("volume") == volume:
                target = Path(snap["snapshot"])
                break
        else:
            raise SnapflowError(f"volume {volume}: the consistent point recorded no snapshot of it")
        # A stable path, like the fixed mount path of a copy pod: the next copy finds this one as parent.
        self.mounts_dir.mkdir(parents=True, exist_ok=True)
        link = self.mounts_dir / volume
        tmp = self.mounts_dir / f".{volume}.{os.getpid()}"
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(target, target_is_directory=True)
        os.replace(tmp, link)
        return str(link)

    def resolve(self, ref: Ref, step: Step) -> str:
        if isinstance(ref, BackupId):
            return self.backup_id
        if isinstance(ref, PlanFile):
            return str(self.plan_file)
        if isinstance(ref, WorkflowStatus):
            return self.workflow_status
        if isinstance(ref, Param):
            if ref.name not in self.params:
                raise UsageError(f"-p {ref.name}=VALUE: required by step {step.name}")
            return self.params[ref.name]
        if isinstance(ref, OutputFile):
            path = self.output_path(step, ref.name)
            path.parent.mkdir(parents=True, exist_ok=True)
            return str(path)
        if isinstance(ref, VolumeSourcePath):
            return self.source_of(ref.volume)
        if isinstance(ref, RestoreTarget):
            if not self.restore_target:
                raise UsageError(f"--target: required by step {step.name}")
            return self.restore_target
        if isinstance(ref, ScratchPath):
            return self.scratch_of(step)
        if isinstance(ref, CloneOf):
            raise UsageError(f"step {step.name}: clones of PVCs exist only in a cluster")
        raise UsageError(f"step {step.name}: {type(ref).__name__} cannot be resolved in a local run")

    def output(self, ref: Ref) -> Any:
        if isinstance(ref, VerdictField):
            record = self.freeze_record()
            return None if record is None else json_path(record, ref.path)
        if isinstance(ref, CopyResultField):
            for run in self.runs.values():
                if run.step.command == "copy" and run.step.volume == ref.volume:
                    return json_path(run.result, ref.path) if isinstance(run.result, dict) else None
            return None
        if isinstance(ref, Param):
            return self.params.get(ref.name)
        return None


def pipeline_parameters(pipeline: Pipeline, given: dict[str, str]) -> dict[str, str]:
    """Defaults, overridden by ``given``; every value checked against the parameter's choices."""
    declared = {p.name: p for p in pipeline.parameters}
    for key in given:
        if key not in declared:
            known = ", ".join(sorted(declared)) or "none"
            raise UsageError(
                f"-p {key}: not a parameter of the {pipeline.name} pipeline (parameters: {known})"
            )
    values: dict[str, str] = {}
    for p in pipeline.parameters:
        value = given.get(p.name, p.default)
        if value is None:
            continue  # required; reported when a step actually needs it
        if p.enum and value not in p.enum:
            raise UsageError(f"-p {p.name}: expected one of {', '.join(p.enum)}, got {value!r}")
        values[p.name] = value
    return values


# --------------------------------------------------------------------------------------------------
# Processes.


def _tail_stderr(run: StepRun, stream, log) -> None:
    for raw in iter(stream.readline, b""):
        log.write(raw)
        log.flush()
        text = raw.decode(errors="replace").rstrip("\r\n").split("\r")[-1].strip()
        if text:
            run.message = text
            if text.startswith("error:"):
                run.error = text
    stream.close()


def _read_progress(path: Path) -> tuple[int, int] | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    done, sep, total = text.partition("/")
    try:
        return (int(done), int(total)) if sep else None
    except ValueError:
        return None


def _last_line(path: Path) -> str:
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1] if lines else ""


def _kill_group(proc: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


@contextlib.contextmanager
def app_lock(lock_dir: Path, name: str, note: Callable[[str], None]) -> Iterator[None]:
    """The pipeline's mutex: one run holding ``name`` at a time on this machine."""
    lock_dir.mkdir(parents=True, exist_ok=True)
    path = lock_dir / f"{name}.lock"
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            note(f"waiting for another run holding {name} to finish ({path})")
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


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
            "ARGO_PROGRESS_FILE": str(run.progress_file),
            "SNAPFLOW_PROGRESS_INTERVAL": str(self.settings.progress_interval_s),
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
        t = threading.Thread(target=_tail_stderr, args=(run, proc.stderr, stderr_log), daemon=True)
        t.start()
        run._threads = [t]
        self.view.event(run, "started" if attempt == 1 else f"attempt {attempt}")

    def _reap(self, run: StepRun) -> bool:
        """Update a running step; True when its process ended."""
        proc = run.proc
        assert proc is not None
        progress = _read_progress(run.progress_file)
        if progress is not None:
            run.progress = progress
        code = proc.poll()
        if code is None:
            return False
        for t in run._threads:
            t.join(timeout=5)
        run.proc = None
        run.exit_code = code
        progress = _read_progress(run.progress_file)
        if progress is not None:
            run.progress = progress
        line = _last_line(run.stdout_path)
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
            _kill_group(r.proc, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for r in live:
            assert r.proc is not None
            try:
                r.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _kill_group(r.proc, signal.SIGKILL)
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
                    warnings += self._cleanup_local_snapshots(ctx)
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
            warning = self._store_run_record(result)
            if warning:
                result.warnings.append(warning)
        self.view.finish(result)
        if result.interrupted:
            raise KeyboardInterrupt
        return result

    # -- after the finalizer -------------------------------------------------------------------
    def _cleanup_local_snapshots(self, ctx: LocalContext) -> list[str]:
        """Delete this backup's local snapshots when the policy says deleteAfterCopy (whatever the
        outcome: a snapshot of a backup that was not committed is no restore point)."""
        plan = self.plan()
        if plan.snapshot.driver != "local" or not plan.snapshot.delete_after_copy:
            return []
        from steps.drivers.snapshot import CutResult
        from steps.drivers.snapshot_local import LocalSnapshotDriver, is_btrfs_subvolume
        from steps.quiesce.consistent_point import fsfreeze_mounts

        driver = LocalSnapshotDriver(local_dir=plan.snapshot.local_dir)
        driver.avoid_snapshots_under(fsfreeze_mounts(plan))
        paths: dict[str, str] = {}
        record = ctx.freeze_record() or {}
        for snap in record.get("snapshots") or []:
            paths[snap["volume"]] = snap["snapshot"]
        for v in plan.volumes:
            if v.name not in paths and v.path:
                try:
                    root = driver.snapshot_root(v)[0]  # where consistent-point put it, or would have
                except SnapflowError:
                    continue  # refused before anything was written
                paths[v.name] = str(root / f"{v.name}.{ctx.backup_id}")
        warnings = []
        for volume, path in paths.items():
            p = Path(path)
            if p.exists() or p.is_symlink():
                kind = "btrfs" if is_btrfs_subvolume(p) else "copy"
                driver.delete(CutResult(volume, path, kind == "btrfs", None, 0.0, 0.0, handle={"kind": kind}))
                if p.exists():
                    warnings.append(f"local snapshot {p} of volume {volume} could not be deleted")
            if not plan.snapshot.local_dir:
                with contextlib.suppress(OSError):
                    p.parent.rmdir()  # the default folder next to the volume, once empty
        return warnings

    def _store_run_record(self, result: RunResult) -> str | None:
        """The step timeline as the run record ``pipeline`` of the backup; a warning when it fails."""
        record = result.to_dict()
        schedule = self.policy.spec.schedule
        record["schedule"] = (
            None if schedule is None else {"cron": schedule.cron, "timezone": schedule.timezone}
        )
        record["cluster"] = self.policy.spec.cluster
        record["namespace"] = self.policy.namespace
        record["time"] = utc_iso(result.finished)
        try:
            with _environ(self.env):
                from steps.drivers.objectstore import open_store
                from steps.repository.repo import Repository
                from steps.secrets import repository_password

                repo_spec = self.policy.spec.repository
                repo = Repository.open(open_store(repo_spec.url, repo_spec.endpoint), repository_password())
                repo.save_record("runs", record, key=result.backup_id)
        except SnapflowError as err:
            return f"the step timeline was not stored in the repository: {err}"
        return None


@contextlib.contextmanager
def _environ(env: dict[str, str]) -> Iterator[None]:
    """Use the steps' environment in this process for a moment (the object store client reads it)."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


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
    """Run one pipeline of a local policy; raises KeyboardInterrupt after cleaning up on Ctrl-C."""
    check_local(policy, policy.name)
    runner = LocalPipelineRunner(policy, find_pipeline(policy, pipeline), settings or RunSettings(), view)
    return runner.run(restore_target=restore_target)


def _open_repository(policy: Policy, env: dict[str, str]):
    with _environ(env):
        from steps.drivers.objectstore import open_store
        from steps.repository.repo import Repository
        from steps.secrets import repository_password

        repo_spec = policy.spec.repository
        return Repository.open(open_store(repo_spec.url, repo_spec.endpoint), repository_password())


@dataclass
class RestoreChoice:
    snapshot_id: str
    volume: str
    backup_id: str | None
    backup: dict[str, Any] | None  # the committed backup record the snapshot belongs to


def refuse_damaged_backup_records(repo, policy: Policy) -> None:
    """``latest`` is the newest committed backup of the app: a backup record that does not open may be
    it (one that cannot be read may be any app's), so refuse rather than choose around it."""

    def mine(data: dict) -> bool:
        app = data.get("app") if isinstance(data.get("app"), dict) else {}
        return app.get("name") == policy.app and app.get("namespace") == policy.namespace

    repo.refuse_damaged_backups(
        "--snapshot latest", mine, way_out="pass --snapshot ID to restore a chosen one"
    )


def choose_snapshot(policy: Policy, env: dict[str, str], ref: str, volume: str | None) -> RestoreChoice:
    """The snapshot to restore: ``latest`` is the newest committed backup of this app (the chosen
    volume's snapshot in it); an ID or prefix must name a committed snapshot of this app."""
    names = [v.volume_name for v in policy.spec.volumes]
    if volume is not None and volume not in names:
        raise UsageError(f"--volume: expected one of {', '.join(names)}, got {volume!r}")
    with _environ(env):
        repo = _open_repository(policy, env)
        backups = [r.data for r in repo.list_records("backups")]
        snaps = repo.list_snapshots()
        committed = repo.committed_filter()
    mine = [
        b
        for b in backups
        if (b.get("app") or {}).get("name") == policy.app
        and (b.get("app") or {}).get("namespace") == policy.namespace
    ]
    if ref == "latest":
        if volume is None and len(names) > 1:
            raise UsageError(
                f"--volume: required with --snapshot latest, the policy has volumes {', '.join(names)}"
            )
        refuse_damaged_backup_records(repo, policy)
        want = volume or names[0]
        for backup in sorted(mine, key=lambda b: str(b.get("time", "")), reverse=True):
            for v in backup.get("volumes") or []:
                if v.get("name") == want and v.get("snapshot"):
                    return RestoreChoice(v["snapshot"], want, backup.get("backup_id"), backup)
        raise UsageError(f"--snapshot latest: no committed backup of {policy.app} holds volume {want}")
    with _environ(env):
        snap = repo.find_snapshot(ref, snaps)
    if not committed(snap):
        raise UsageError(
            f"--snapshot: {snap.short_id} belongs to backup {snap.backup_id}, which was never committed "
            "(not a restore point)"
        )
    backup = next((b for b in mine if b.get("backup_id") == snap.backup_id), None) if snap.backup_id else None
    vol = snap.data.get("volume") or snap.tags.get("volume") or volume or names[0]
    if snap.data.get("app") not in (None, policy.app):
        raise UsageError(
            f"--snapshot: {snap.short_id} is a snapshot of app {snap.data.get('app')}, not {policy.app}"
        )
    return RestoreChoice(snap.id, vol, snap.backup_id, backup)


def prepare_restored_volume(choice: RestoreChoice, target: str) -> list[str]:
    """What the consistent point recorded that a restore must apply (PostgreSQL's backup_label for a
    copy made in backup mode); returns notes for the user."""
    notes: list[str] = []
    consistency = (choice.backup or {}).get("consistency") or {}
    timeline = consistency.get("timeline") or {}
    owners: list[str] = []
    atomic = None
    for v in timeline.get("volumes") or []:
        if v.get("volume") == choice.volume:
            owners = list(v.get("targets") or [])
            atomic = v.get("atomic")
    for t in timeline.get("targets") or []:
        if owners and t.get("name") not in owners:
            continue
        if t.get("recovery") == "backup_label" and t.get("backup_label"):
            from steps.quiesce.postgresql import write_backup_label

            written = write_backup_label(target, t)
            notes.append(
                f"target {t['name']}: wrote {', '.join(written)} (copy in backup mode: recovery replays WAL "
                "from the backup start)"
            )
        elif t.get("recovery") == "crash" and atomic is False:
            notes.append(f"target {t['name']}: copied file by file while its hook held it; nothing to apply")
        elif t.get("recovery") == "crash":
            notes.append(
                f"target {t['name']}: atomic snapshot, crash recovery on first start (no backup_label)"
            )
    return notes


def restore_local(
    policy: Policy,
    snapshot: str,
    target: str,
    *,
    volume: str | None = None,
    settings: RunSettings | None = None,
    view: View | None = None,
) -> tuple[RunResult, RestoreChoice, list[str]]:
    """Restore one volume of a local policy into ``target`` with the restore pipeline's step."""
    settings = settings or RunSettings()
    check_local(policy, policy.name)
    target_path = Path(target).absolute()
    if target_path.exists() and (not target_path.is_dir() or any(target_path.iterdir())):
        raise UsageError(
            f"--target: {target_path} is not an empty directory (restore into a new or empty one)"
        )
    env = step_environment(policy, settings.env)
    choice = choose_snapshot(policy, env, snapshot, volume)
    settings = dataclasses.replace(
        settings,
        params={**settings.params, "snapshot": choice.snapshot_id, "target-pvc": str(target_path)},
        store_record=False,
    )
    pipeline = find_pipeline(policy, "restore")
    runner = LocalPipelineRunner(policy, pipeline, settings, view)
    result = runner.run(restore_target=str(target_path))
    notes: list[str] = []
    if result.ok:
        notes = prepare_restored_volume(choice, str(target_path))
    return result, choice, notes
