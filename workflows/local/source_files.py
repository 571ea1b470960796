"""What a source step (etcd, registry, bucket) reads in a local run, in place of what its pod gets.

In a cluster the pod of a source step mounts the Secrets the policy names as files and the node's
directories it names (:class:`workflows.pipeline.SourcePod`), reaches the etcd member of its node
(:class:`~workflows.pipeline.NodeAddress`), gets non-secret values of a Secret as environment variables
(:class:`~workflows.pipeline.EnvValue`) and streams into an emptyDir at the scratch mount path. Locally:

- a Secret is a directory holding one file per key, as Kubernetes mounts it, named with
  ``--secret NAME=DIR``; a mount that picks some keys under other file names (``items``) becomes a
  private directory of symbolic links to them in the run's directory, so the step finds the names it
  expects and no secret is copied;
- a hostPath is that path on this machine (the node);
- the node's address is ``127.0.0.1`` (the etcd member of this machine);
- an environment value from a Secret is read from the key's file;
- the emptyDir is a temporary directory, removed when the run ends (like any step's scratch space);
- ``{{workflow.parameters.NAME}}`` in an argument or a mount is the run's parameter ``NAME``.

Used by :mod:`workflows.local.runner` for the steps of a policy with ``spec.source``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from steps.api import UsageError, runtime
from workflows.local.run_context import LocalContext
from workflows.pipeline import EnvValue, FileMount, NodeAddress, Param, Pipeline, Ref, Step

LOCAL_NODE = "127.0.0.1"
SCRATCH_VOLUME_DIR = runtime.SCRATCH_VOLUME_DIR  # the emptyDir's mount path in the pod
_PARAMETER = re.compile(r"\{\{\s*workflow\.parameters\.([A-Za-z0-9_.-]+)\s*\}\}")


def parse_secret_dirs(values: list[str] | None) -> dict[str, str]:
    """``--secret NAME=DIR`` options as {Secret name: absolute directory}; each DIR must exist."""
    out: dict[str, str] = {}
    for raw in values or []:
        name, sep, path = raw.partition("=")
        if not sep or not name or not path:
            raise UsageError(f"--secret: expected NAME=DIR, got {raw!r}")
        if not os.path.isdir(path):
            raise UsageError(
                f"--secret {name}={path}: not a directory (expected one file per key of the Secret)"
            )
        out[name] = os.path.abspath(path)
    return out


def with_parameters(text: str, params: dict[str, str], step: Step) -> str:
    """``text`` with every ``{{workflow.parameters.NAME}}`` replaced by the run's parameter."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in params:
            raise UsageError(f"-p {name}=VALUE: required by step {step.name}")
        return params[name]

    return _PARAMETER.sub(value, text)


class SourceFiles:
    """The local stand-ins of a source step's mounts, environment values and scratch space."""

    def __init__(self, secret_dirs: dict[str, str]):
        self.secret_dirs = dict(secret_dirs)

    # -- checks before anything runs ---------------------------------------------------------------
    def check(self, pipeline: Pipeline, params: dict[str, str]) -> None:
        """Raise UsageError unless every parameter the steps that may run take is set and every Secret they
        read is given with its keys."""
        for step in [*pipeline.order(), *([pipeline.exit_step] if pipeline.exit_step else [])]:
            pod = step.source_pod
            if pod is None or (step.when is not None and params.get(step.when.param) != step.when.value):
                continue
            for arg in step.args:
                if isinstance(arg, Param) and arg.name not in params:
                    raise UsageError(f"-p {arg.name}=VALUE: required by step {step.name}")
                if isinstance(arg, str):
                    with_parameters(arg, params, step)
            for mount in pod.mounts:
                if mount.secret is not None:
                    directory = self._secret_dir(mount.secret, step, params, f"at {mount.path}")
                    for key, _ in mount.items:
                        self._key_file(directory, key, mount.secret, step, params)
            for _, secret, key in pod.secret_env:
                self._key_file(
                    self._secret_dir(secret, step, params, "for its environment"), key, secret, step, params
                )

    def _secret_dir(self, secret: str, step: Step, params: dict[str, str], why: str) -> str:
        name = with_parameters(secret, params, step)
        directory = self.secret_dirs.get(name)
        if directory is None:
            raise UsageError(
                f"--secret {name}=DIR: required by step {step.name}, which reads Secret {name} {why} "
                "(DIR holds one file per key of the Secret)"
            )
        return directory

    def _key_file(self, directory: str, key: str, secret: str, step: Step, params: dict[str, str]) -> Path:
        path = Path(directory) / key
        if not path.is_file():
            name = with_parameters(secret, params, step)
            raise UsageError(f"--secret {name}={directory}: {path} is missing (key {key} of Secret {name})")
        return path

    # -- a step's arguments --------------------------------------------------------------------------
    def step_args(self, ctx: LocalContext, step: Step) -> list[str]:
        """The step's arguments with the pod's paths, addresses and values replaced by local ones."""
        pod = step.source_pod
        assert pod is not None
        dirs = [(m.path, self._local_mount(ctx, step, m)) for m in pod.mounts]
        scratch: list[str] = []

        def local_path(arg: str) -> str:
            if arg == SCRATCH_VOLUME_DIR or arg.startswith(SCRATCH_VOLUME_DIR + "/"):
                if not scratch:
                    scratch.append(ctx.scratch_of(step))
                return scratch[0] + arg[len(SCRATCH_VOLUME_DIR) :]
            for mount_path, local in dirs:
                if arg == mount_path or arg.startswith(mount_path + "/"):
                    return local + arg[len(mount_path) :]
            return arg

        out: list[str] = []
        for arg in step.args:
            if isinstance(arg, NodeAddress):
                out.append(f"https://{LOCAL_NODE}:{arg.port}")
            elif isinstance(arg, EnvValue):
                out.append(self._env_value(ctx, step, arg.name))
            elif isinstance(arg, Ref):
                out.append(ctx.resolve(arg, step))
            else:
                out.append(local_path(with_parameters(arg, ctx.params, step)))
        return out

    def _env_value(self, ctx: LocalContext, step: Step, variable: str) -> str:
        assert step.source_pod is not None
        for name, secret, key in step.source_pod.secret_env:
            if name == variable:
                directory = self._secret_dir(secret, step, ctx.params, "for its environment")
                return self._key_file(directory, key, secret, step, ctx.params).read_text().strip()
        raise UsageError(f"step {step.name}: ${variable} comes from no Secret")

    def _local_mount(self, ctx: LocalContext, step: Step, mount: FileMount) -> str:
        if mount.host_path is not None:
            return os.path.abspath(with_parameters(mount.host_path, ctx.params, step))
        assert mount.secret is not None
        directory = self._secret_dir(mount.secret, step, ctx.params, f"at {mount.path}")
        if not mount.items:
            return directory
        # Only the keys the pod would see, under the file names it would see them (links, no copies).
        links = ctx.run_dir / "secrets" / step.name / mount.name
        for private in (links.parent.parent, links.parent, links):
            private.mkdir(mode=0o700, exist_ok=True)
            os.chmod(private, 0o700)
        for key, filename in mount.items:
            target = self._key_file(directory, key, mount.secret, step, ctx.params)
            link = links / filename
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(target)
        return str(links)
