"""Resolving the values a pipeline knows only at run time (:class:`workflows.pipeline.Ref`) in a
local run: the backup ID, the plan file, parameters, step outputs, a copy's source (a stable symlink
under the state directory), the restore target and scratch space."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from steps.api import SnapflowError, UsageError
from workflows.local.step_runs import StepRun
from workflows.pipeline import (
    BackupId,
    CloneOf,
    CopyResultField,
    OutputFile,
    Param,
    Pipeline,
    PlanFile,
    Ref,
    RestoreTarget,
    ScratchPath,
    Step,
    VerdictField,
    VolumeSourcePath,
    WorkflowStatus,
)
from workflows.policy import Policy


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
