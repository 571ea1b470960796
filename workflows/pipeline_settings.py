"""What the pipelines of a policy take from it besides their graph: the arguments every step repeats
(repository, identity), the mutexes, and what each step's pod gets — its repository access, resources,
deadline and metrics — and the template's settings (:func:`finish` fills them in), so that the Hera
builder reads them from the :class:`~workflows.pipeline.Pipeline` alone.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from workflows.names import Names
from workflows.pipeline import (
    Metrics,
    Needs,
    Parameter,
    Pipeline,
    RepositoryAccess,
    Resources,
    Retry,
    SecretKeys,
    Step,
    TemplateSettings,
)
from workflows.policy import Policy

BOOLEAN = ("false", "true")
# Steps that move no data; their memory limit is spec.workflow.stepMemoryLimit.
SMALL_REQUESTS = (("cpu", "50m"), ("memory", "64Mi"))
# The freeze holder's pod deadline beyond the freeze deadline (it thaws by itself at the deadline).
FREEZE_POD_MARGIN_S = 300

PERCENT_CHOICES = ("0", "1", "5", "10", "25", "50", "100")


def _percent(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def percent_param(name: str, description: str, default: float) -> Parameter:
    default_text = _percent(default)
    choices = sorted(set(PERCENT_CHOICES) | {default_text}, key=float)
    return Parameter(name, description, default_text, tuple(choices))


def repository_args(policy: Policy) -> tuple[str, ...]:
    repo = policy.spec.repository
    args: tuple[str, ...] = ("--repo", repo.url)
    if repo.endpoint:
        args += ("--endpoint", repo.endpoint)
    return args


def app_mutex(policy: Policy) -> str:
    """One backup or restore of an app at a time (Argo mutexes are per namespace; a mover namespace may
    hold the workflows of apps from several namespaces, so there the name carries the app's)."""
    if policy.spec.movers.namespace:
        return f"snapflow-app-{policy.namespace}-{policy.app}"
    return f"snapflow-app-{policy.app}"


def identity_args(policy: Policy) -> tuple[str, ...]:
    return (
        "--cluster", policy.spec.cluster,
        "--namespace", policy.namespace,
        "--app", policy.app,
        "--policy", policy.name,
    )  # fmt: skip


def repository_mutex(policy: Policy) -> str:
    """One prune per repository at a time (policies sharing a repository share it). Backups need no
    mutex with prune: prune is lock-free and two-phase."""
    import hashlib

    digest = hashlib.sha256(policy.spec.repository.url.encode()).hexdigest()[:16]
    return f"snapflow-repository-{digest}"


def prune_grace_seconds(policy: Policy) -> int:
    """Prune's grace period: longer than the longest backup, which Argo stops at activeDeadlineSeconds."""
    return max(24 * 3600, policy.spec.workflow.active_deadline_seconds + 3600)


def object_lock_args(policy: Policy, mode_flag: str, days_flag: str) -> tuple[str, ...]:
    lock = policy.spec.repository.object_lock
    return (mode_flag, lock.mode, days_flag, str(lock.days)) if lock else ()


# --------------------------------------------------------------------------------------------------
# What each step's pod gets.


def repository_access(policy: Policy, command: str) -> RepositoryAccess:
    repo = policy.spec.repository
    secret = repo.credentials_secret
    if command == "prune" and repo.prune_credentials_secret:
        secret = repo.prune_credentials_secret  # backups may then use append-only keys
    return RepositoryAccess(
        password_secret=repo.password_secret.name,
        password_key=repo.password_secret.key,
        credentials=SecretKeys(secret.name, secret.access_key_id_key, secret.secret_access_key_key)
        if secret
        else None,
        region=repo.region,
        path_style=repo.path_style,
        ca_config_map=repo.ca_bundle.config_map if repo.ca_bundle else None,
        ca_key=repo.ca_bundle.key if repo.ca_bundle else "ca.crt",
    )


def step_resources(policy: Policy, step: Step) -> Resources:
    """The data mover's resources (spec.resources) for steps that move data, small ones otherwise."""
    if Needs.DATA_MOVER in step.needs:
        res = policy.spec.resources
        return Resources(tuple(sorted(res.requests.items())), tuple(sorted(res.limits.items())))
    return Resources(SMALL_REQUESTS, (("memory", policy.spec.workflow.step_memory_limit),))


def step_timeout(policy: Policy, step: Step) -> int | None:
    """One attempt's deadline: the freeze holder's bounds a stuck pod (it thaws by itself at the freeze
    deadline); a retried step's comes from spec.workflow.stepTimeouts; other steps have none."""
    if step.holds_freeze:
        return int(policy.spec.freeze.deadline_seconds) + FREEZE_POD_MARGIN_S
    if step.retry is Retry.NEVER:
        return None
    timeouts = policy.spec.workflow.step_timeouts
    deadline = timeouts.for_command(step.command, policy.spec.snapshot.timeout_seconds)
    if deadline is None:
        raise ValueError(f"step {step.name}: no timeout for retried command {step.command}")
    return deadline


def holds_app(policy: Policy) -> bool:
    """Whether a hook quiesces the app (else consistent-point records no freeze window)."""
    return any(t.hook != "none" for t in policy.spec.quiesce)


def step_metrics(policy: Policy, step: Step, exit_step: bool) -> Metrics:
    if step.holds_freeze:
        return Metrics.FREEZE_WINDOW if holds_app(policy) else Metrics.NONE
    if step.command == "copy":
        return Metrics.COPY
    return Metrics.OUTCOME if exit_step else Metrics.NONE


def settle(policy: Policy, step: Step, exit_step: bool = False) -> Step:
    """``step`` with what its pod gets from the policy."""
    volume = next((v for v in policy.spec.volumes if v.volume_name == step.volume), None)
    return replace(
        step,
        block=bool(volume and volume.block),
        repository=repository_access(policy, step.command) if Needs.REPOSITORY in step.needs else None,
        resources=step_resources(policy, step),
        timeout_s=step_timeout(policy, step),
        metrics=step_metrics(policy, step, exit_step),
    )


def template_settings(policy: Policy) -> TemplateSettings:
    spec = policy.spec
    workflow = spec.workflow
    return TemplateSettings(
        names=Names.of(policy),
        image=spec.image,
        image_pull_policy=spec.image_pull_policy,
        active_deadline_seconds=workflow.active_deadline_seconds,
        ttl_after_success_seconds=workflow.ttl_after_success_seconds,
        ttl_after_failure_seconds=workflow.ttl_after_failure_seconds,
        pod_gc=workflow.pod_gc,
        node_selector=tuple(workflow.node_selector.items()),
        priority_class_name=workflow.priority_class_name,
    )


def finish(
    policy: Policy, *, steps: tuple[Step, ...], exit_step: Step | None = None, **fields: Any
) -> Pipeline:
    """The checked pipeline of ``policy`` with these fields, every step settled and the template's
    settings attached."""
    pipeline = Pipeline(
        steps=tuple(settle(policy, s) for s in steps),
        exit_step=settle(policy, exit_step, exit_step=True) if exit_step else None,
        settings=template_settings(policy),
        **fields,
    )
    pipeline.check()
    return pipeline
