"""Renders a target's hook template (templates/hooks/<kind>.yaml.j2) into a hook spec.

Templates use Jinja2 with StrictUndefined, so a missing variable fails loudly; filters quote for the
shell (``shquote``), SQL (``sqlstr``), libpq connection strings (``pgconn``) and check identifiers
(``envname``, ``ident``). Parameters named like credentials are refused: credentials come from files
or the environment where the hook runs (``password_file``, ``password_env``), never rendered text.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import yaml

from steps.errors import UsageError
from steps.plan import Plan, Target
from steps.resources import templates_dir
from steps.runtime import CREDENTIAL_ENV

# The stated bound: a target is released at most deadline + THAW_BOUND_S seconds after its hold began,
# whatever happens to the holder (killed, stopped, stuck in uninterruptible sleep). The in-process
# deadline releases at the deadline; the watcher and the database's own session limit stand in for a
# holder that cannot, DEADLINE_MARGIN_S later (the rest of the bound is the unfreeze itself and the
# whole-second resolution of MariaDB's wait_timeout).
DEADLINE_MARGIN_S = 1.0
THAW_BOUND_S = 2.0

HOOK_TEMPLATES = ("postgresql", "mysql", "mariadb", "mongodb", "redis", "fsfreeze", "custom")
# A parameter named like a credential (anywhere in its name: db_password, PGPASSWORD, api_token,
# access_key, db_pass, ...) is refused; a *_file or *_env parameter is a reference (a path, a variable name).
_SECRET_PARAMS = re.compile(
    r"pass(word|wd|phrase)|secret|token|credential|private_?key|api_?key|access_?key"
    r"|(^|[_-])(key|pwd|auth|pass)$|^(pwd|auth|pass)[_-]?$",
    re.IGNORECASE,
)
_REFERENCE_PARAMS = re.compile(r"[_-](file|env)$", re.IGNORECASE)
_ENVNAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class RenderContext:
    """What every hook template sees besides ``params``."""

    backup_id: str
    hold_id: str
    atomic_cut: bool
    keepalive_s: float
    deadline_s: float
    freeze_timeout_s: float

    def variables(self) -> dict[str, Any]:
        limit_s = session_limit_s(self.keepalive_s)
        return {
            "backup_id": self.backup_id,
            "hold_id": self.hold_id,
            "atomic_cut": self.atomic_cut,
            "keepalive_s": self.keepalive_s,
            "deadline_s": self.deadline_s,
            "freeze_timeout_s": self.freeze_timeout_s,
            "session_limit_s": limit_s,
            "session_limit_ms": limit_s * 1000,
        }


def session_limit_s(keepalive_s: float) -> int:
    """A held session's idle limit while its holder is alive: about 3x the keepalive, at least 2 s."""
    return max(round(3 * keepalive_s), 2)


def _sqlstr(value: Any) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def _pgconn(value: Any) -> str:
    s = str(value)
    if s and re.fullmatch(r"[A-Za-z0-9_.:/@+-]+", s):
        return s
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _envname(value: Any) -> str:
    if not _ENVNAME.match(str(value)):
        # The value is not echoed: a password pasted here by mistake must not reach an error message.
        raise UsageError(
            "params.password_env: expected an environment variable name ([A-Za-z_][A-Za-z0-9_]*)"
        )
    return str(value)


def _ident(value: Any) -> str:
    return re.sub(r"[^a-z0-9_]", "_", str(value).lower())[:48]


@lru_cache(maxsize=1)
def environment():
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir() / "hooks")),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters.update(
        shquote=lambda v: shlex.quote(str(v)), sqlstr=_sqlstr, pgconn=_pgconn, envname=_envname, ident=_ident
    )
    return env


def hold_id(plan: Plan, target: Target) -> str:
    """Names the hold in the database (application_name, named lock) so a thaw can find it."""
    return f"{plan.app.namespace}/{plan.app.name}/{target.name}"


def target_problems(target: Target) -> list[tuple[str, str]]:
    """(field inside the target, what was expected) for every rule ``target`` breaks; empty when it is
    fine. The one source of these rules: ``snapflow lint`` (the policy) and the freeze holder (the
    plan) both apply them, so a policy that lints clean is not refused at run time, and the reverse."""
    problems: list[tuple[str, str]] = []
    if not target.local and target.hook != "none" and not target.pod:
        problems.append(("pod", f"required for a {target.hook} hook (the pod it runs in)"))
    return problems + param_problems(target)


def param_problems(target: Target) -> list[tuple[str, str]]:
    """(field inside the target, what was expected) for every rule the hook parameters of ``target``
    break (what rendering its hook needs). A value is never echoed: a credential pasted by mistake must
    not reach a message."""
    problems: list[tuple[str, str]] = []
    for key, value in target.params.items():
        reference = _REFERENCE_PARAMS.search(key)
        if _SECRET_PARAMS.search(key) and not reference:
            problems.append(
                (
                    f"params.{key}",
                    "credentials are not accepted inline; "
                    "expected password_file (a mounted file) or password_env (a variable name)",
                )
            )
        elif reference and reference.group(1).lower() == "env" and _SECRET_PARAMS.search(key):
            if not _ENVNAME.match(str(value)):
                problems.append(
                    (f"params.{key}", "expected an environment variable name ([A-Za-z_][A-Za-z0-9_]*)")
                )
            elif target.local and str(value) in CREDENTIAL_ENV:  # stripped from local hooks
                problems.append(
                    (
                        f"params.{key}",
                        f"{value} is Snapflow's own credential, not passed to hooks; "
                        "expected a variable of the application's own",
                    )
                )
    params = target.params
    if target.hook == "fsfreeze" and not (params.get("mount") or params.get("mounts")):
        problems.append(("params.mount", "required for the fsfreeze hook (a mount point)"))
    if target.hook == "custom" and not (params.get("freeze") or params.get("prepare")):
        problems.append(("params", "the custom hook needs 'freeze' (and 'thaw') or 'prepare' commands"))
    if target.hook == "custom" and params.get("freeze") and not params.get("thaw"):
        problems.append(("params.thaw", "required when 'freeze' commands are given"))
    if target.hook == "postgresql" and params.get("mode", "auto") not in ("auto", "checkpoint", "backup"):
        problems.append(("params.mode", f"expected auto, checkpoint or backup, got {params.get('mode')!r}"))
    if target.hook in ("mysql", "mariadb") and params.get("method", "ftwrl") not in ("ftwrl", "backup_stage"):
        problems.append(("params.method", f"expected ftwrl or backup_stage, got {params.get('method')!r}"))
    return problems


def check_params(target: Target, where: str) -> None:
    """Raise :class:`UsageError` naming ``where`` and the first of :func:`param_problems`."""
    problems = param_problems(target)
    if problems:
        field, message = problems[0]
        raise UsageError(f"{where}.{field}: {message}")


def render_hook(target: Target, ctx: RenderContext, where: str = "target") -> dict[str, Any]:
    """The hook spec (a dict) for ``target``; ``{}`` for hook kind ``none``."""
    import jinja2

    if target.hook == "none":
        return {"kind": "none", "method": "none", "recovery": "crash", "non_atomic_ok": False, "defer": []}
    check_params(target, where)
    try:
        text = (
            environment()
            .get_template(f"{target.hook}.yaml.j2")
            .render(params=target.params, **ctx.variables())
        )
    except jinja2.UndefinedError as err:
        raise UsageError(f"{where}.params: {err.message} (hook {target.hook})") from None
    except jinja2.TemplateNotFound:
        raise UsageError(f"{where}.hook: no template for hook kind {target.hook!r}") from None
    spec = yaml.safe_load(text)
    if spec.get("kind") == "paired":
        spec["watcher"] = render_watcher(spec["freeze"], spec["thaw"], ctx)
    return spec


def render_watcher(freeze: str, thaw: str, ctx: RenderContext) -> str:
    # The watcher outlives the in-process deadline by a small margin: normally the holder releases
    # first; a holder that cannot (stopped, killed in uninterruptible sleep) keeps the hold at most
    # that margin longer.
    deadline = ctx.deadline_s + DEADLINE_MARGIN_S
    return (
        environment()
        .get_template("_watcher.sh.j2")
        .render(freeze=_indent(freeze), thaw=_indent(thaw), deadline_s=f"{deadline:g}")
    )


def _indent(script: str) -> str:
    lines = [ln for ln in script.strip("\n").splitlines()] or [":"]
    return "\n".join("  " + ln for ln in lines)
