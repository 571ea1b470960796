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

from steps.drivers.runner_local import CREDENTIAL_ENV
from steps.errors import UsageError
from steps.plan import Plan, Target
from steps.resources import templates_dir

# The stated bound: a target is released at most deadline + THAW_BOUND_S seconds after its hold began,
# whatever happens to the holder (killed, stopped, stuck in uninterruptible sleep). The in-process
# deadline releases at the deadline; the watcher and the database's own session limit stand in for a
# holder that cannot, DEADLINE_MARGIN_S later (the rest of the bound is the unfreeze itself and the
# whole-second resolution of MariaDB's wait_timeout).
DEADLINE_MARGIN_S = 1.0
THAW_BOUND_S = 2.0

HOOK_TEMPLATES = ("postgresql", "mysql", "mariadb", "mongodb", "redis", "fsfreeze", "custom")
# A parameter named like a credential (anywhere in its name: db_password, PGPASSWORD, api_token,
# access_key, ...) is refused; a *_file or *_env parameter is a reference (a path, a variable name).
_SECRET_PARAMS = re.compile(
    r"pass(word|wd|phrase)|secret|token|credential|private_?key|api_?key|access_?key"
    r"|(^|[_-])(key|pwd|auth)$|^(pwd|auth)[_-]?$",
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


def check_params(target: Target, where: str) -> None:
    for key, value in target.params.items():
        reference = _REFERENCE_PARAMS.search(key)
        if _SECRET_PARAMS.search(key) and not reference:
            raise UsageError(
                f"{where}.params.{key}: credentials are not accepted inline; "
                "expected password_file (a mounted file) or password_env (a variable name)"
            )
        if reference and reference.group(1).lower() == "env" and _SECRET_PARAMS.search(key):
            if not _ENVNAME.match(str(value)):
                raise UsageError(
                    f"{where}.params.{key}: expected an environment variable name ([A-Za-z_][A-Za-z0-9_]*)"
                )
            if target.local and str(value) in CREDENTIAL_ENV:  # stripped from local hooks
                raise UsageError(
                    f"{where}.params.{key}: {value} is Snapflow's own credential, not passed to hooks; "
                    "expected a variable of the application's own"
                )
    if target.hook == "fsfreeze" and not (target.params.get("mount") or target.params.get("mounts")):
        raise UsageError(f"{where}.params.mount: required for the fsfreeze hook (a mount point)")
    if target.hook == "custom" and not (target.params.get("freeze") or target.params.get("prepare")):
        raise UsageError(f"{where}.params: the custom hook needs 'freeze' (and 'thaw') or 'prepare' commands")
    if target.hook == "custom" and target.params.get("freeze") and not target.params.get("thaw"):
        raise UsageError(f"{where}.params.thaw: required when 'freeze' commands are given")
    if target.hook == "postgresql" and target.params.get("mode", "auto") not in (
        "auto",
        "checkpoint",
        "backup",
    ):
        raise UsageError(
            f"{where}.params.mode: expected auto, checkpoint or backup, got {target.params.get('mode')!r}"
        )
    if target.hook in ("mysql", "mariadb") and target.params.get("method", "ftwrl") not in (
        "ftwrl",
        "backup_stage",
    ):
        raise UsageError(
            f"{where}.params.method: expected ftwrl or backup_stage, got {target.params.get('method')!r}"
        )


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
