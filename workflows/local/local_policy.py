"""The policy of a local run: loading it (``--volume``, ``--hook-param``, relative paths), checking
that it can run on this machine, and the environment every step of it gets."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from steps.api import UsageError, runtime
from workflows.policy import Policy, load_policies, parse_policy


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
    # What the file says, not the defaults filled in: rules that depend on which fields were written
    # (spec.argoServer only with spec.access) judge the changed policy as they judged the file.
    doc = policy.model_dump(by_alias=True, exclude_unset=True, exclude_none=True, mode="json")
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
    check_local_repository(policy, source)
    for vol in policy.spec.volumes:
        if vol.path and not Path(vol.path).is_dir():
            raise UsageError(f"{source}: spec.volumes[{vol.volume_name}].path: {vol.path} is not a directory")


def check_local_repository(policy: Policy, source: str) -> None:
    """Raise UsageError unless the repository of ``policy`` (an app's or a source's) is one that the
    steps, each its own process, can share."""
    if policy.spec.repository.url.startswith("mem://"):
        raise UsageError(
            f"{source}: spec.repository.url: expected s3:// or file:/// for a local run "
            "(mem:// lives inside one process, and each step is its own process)"
        )


def step_environment(policy: Policy, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of every step: this process's, plus what the Argo templates set from the policy
    (:func:`steps.runtime.step_env`: region, path style) and ``extra``; credentials come from the
    caller's environment, never from arguments (a local step reads no mounted password file)."""
    repo = policy.spec.repository
    env = dict(os.environ)
    env.update(
        runtime.process_env(
            runtime.step_env(password_file=None, region=repo.region, path_style=repo.path_style, extra=extra)
        )
    )
    if not env.get(runtime.PASSWORD) and not env.get(runtime.PASSWORD_FILE):
        raise UsageError(
            f"{runtime.PASSWORD} or {runtime.PASSWORD_FILE}: expected the repository password "
            "(or give --password-file FILE)"
        )
    return env
