"""Argo's documented run-time semantics that a schema cannot express, as offline rules.

A manifest can match Argo's schema and still fail on a real cluster: an output parameter that comes
out nil fails its node, a metric evaluated at the wrong moment reports a success that did not happen,
a retry budget smaller than one attempt means no retry at all. Each rule below is one function,
cites the part of Argo's documentation it encodes, and returns ``(field path, message)`` pairs;
:func:`check` runs them all on one Argo object. :mod:`workflows.validate` turns them into issues, so
``snapflow lint``, ``snapflow render`` and the tests apply them to everything rendered.

The rules hold for every Argo Workflows version Snapflow supports (:data:`SUPPORTED_ARGO_VERSIONS`):
each one either describes behaviour of all of them, or of the newer ones while the older ones accept
the same manifest (a default on an output parameter, the plural ``mutexes`` and ``schedules``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

SUPPORTED_ARGO_VERSIONS = ("3.7", "4.0", "4.1")
SUPPORTED_ARGO_TEXT = "Argo Workflows 3.7.x and 4.0.x-4.1.x"

Finding = tuple[str, str]  # (field path, message)
Template = dict[str, Any]

_GO_DURATION = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s)")
_GO_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def duration_s(value: Any) -> float | None:
    """Seconds of an Argo duration (``"90"``, ``90``, ``"10m"``, ``"1h30m"``); None when unreadable."""
    if isinstance(value, int | float):
        return float(value)
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    if re.fullmatch(r"\d+", text):
        return float(text)
    parts = _GO_DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    return sum(float(n) * _GO_UNITS[u] for n, u in parts)


def _int(value: Any) -> int | None:
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def _workflow_spec(obj: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    if obj.get("kind") == "CronWorkflow":
        return "spec.workflowSpec", (obj.get("spec") or {}).get("workflowSpec") or {}
    return "spec", obj.get("spec") or {}


def _templates(obj: dict[str, Any]) -> Iterator[tuple[str, Template]]:
    base, spec = _workflow_spec(obj)
    for i, template in enumerate(spec.get("templates") or []):
        if isinstance(template, dict):
            yield f"{base}.templates[{i}]", template


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


# --------------------------------------------------------------------------------------------------
# The rules.

_COMPUTED_OUTPUT = ("expression", "parameter", "jsonPath", "jqFilter")


def outputs_have_defaults(obj: dict[str, Any]) -> list[Finding]:
    """An output parameter of a DAG or steps template computed from its children (``expression``,
    ``parameter``, ...) needs ``valueFrom.default``.

    Argo Workflows docs/upgrading.md, v3.7.16 / v4.0.7: an output parameter whose valueFrom evaluates
    to nil, or that references a skipped or omitted node, fails the node unless it has
    ``valueFrom.default``. ``jsonpath()`` on a malformed query panics and ``??`` cannot catch it; only
    the default does. A failed ``main`` makes ``{{workflow.status}}`` Error, and the exit handler then
    refuses to commit a backup whose every step passed."""
    found: list[Finding] = []
    for path, template in _templates(obj):
        if "dag" not in template and "steps" not in template:
            continue
        for j, param in enumerate((template.get("outputs") or {}).get("parameters") or []):
            value_from = param.get("valueFrom") or {}
            computed = [k for k in _COMPUTED_OUTPUT if value_from.get(k) is not None]
            if computed and "default" not in value_from:
                found.append(
                    (
                        f"{path}.outputs.parameters[{j}].valueFrom",
                        f"output {param.get('name')!r} is computed ({computed[0]}) without a default: a nil "
                        "value or a skipped node fails the template on Argo >= 3.7.16 / 4.0.7; add "
                        "valueFrom.default",
                    )
                )
    return found


def _metrics(obj: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    base, spec = _workflow_spec(obj)
    for k, metric in enumerate((spec.get("metrics") or {}).get("prometheus") or []):
        yield f"{base}.metrics.prometheus[{k}]", metric
    for path, template in _templates(obj):
        for k, metric in enumerate((template.get("metrics") or {}).get("prometheus") or []):
            yield f"{path}.metrics.prometheus[{k}]", metric


_READS_OUTPUTS = re.compile(r"outputs\.|jsonpath\(|tasks\[|steps\[")
_GUARDED_EXPRESSION = re.compile(r"^\{\{=.+\?.+:.+\}\}$", re.DOTALL)


def gauges_cannot_be_empty(obj: dict[str, Any]) -> list[Finding]:
    """A gauge whose value reads outputs must have a ``when``, and its value must be a conditional
    expression (``cond ? value : fallback``).

    Argo Workflows docs/metrics.md: a gauge whose value renders empty or null raises a MetricsError.
    The value is substituted even when ``when`` is false, so the value itself must never fail (an
    output that is missing, null or not JSON), and the ``when`` decides whether it is emitted."""
    found: list[Finding] = []
    for path, metric in _metrics(obj):
        gauge = metric.get("gauge")
        if not isinstance(gauge, dict):
            continue
        value = gauge.get("value")
        if not isinstance(value, str) or not value.strip():
            found.append((f"{path}.gauge.value", f"gauge {metric.get('name')!r} has an empty value"))
            continue
        if not _READS_OUTPUTS.search(value):
            continue
        if not metric.get("when"):
            found.append(
                (
                    f"{path}.when",
                    f"gauge {metric.get('name')!r} reads outputs that may be missing or null: it needs a "
                    "`when` so that nothing is emitted then (an empty gauge is a MetricsError)",
                )
            )
        if not _GUARDED_EXPRESSION.match(value.strip()):
            found.append(
                (
                    f"{path}.gauge.value",
                    f"gauge {metric.get('name')!r} reads outputs without a fallback: the value is evaluated "
                    "even when `when` is false, so write it as {{=COND ? VALUE : FALLBACK}}",
                )
            )
    return found


_OUTCOME = re.compile(r"workflow\.status|Succeeded|workflow\.failures")


def no_outcome_metric_at_workflow_level(obj: dict[str, Any]) -> list[Finding]:
    """With an exit handler, workflow-level metrics must not report the outcome.

    Argo Workflows docs/metrics.md: workflow-level metrics (spec.metrics) are evaluated on the
    entrypoint node's status, not on the final phase after the exit handler, and
    ``{{workflow.status}}`` in them has the same flaw. A backup whose exit handler refused to commit
    would count as a success: report the outcome from the exit handler's template-level metrics."""
    base, spec = _workflow_spec(obj)
    if not spec.get("onExit"):
        return []
    found: list[Finding] = []
    for k, metric in enumerate((spec.get("metrics") or {}).get("prometheus") or []):
        if any(_OUTCOME.search(text) for text in _strings(metric)):
            found.append(
                (
                    f"{base}.metrics.prometheus[{k}]",
                    f"metric {metric.get('name')!r} reports the outcome at workflow level, which Argo "
                    "evaluates before the exit handler ran; emit it from the exit handler's template",
                )
            )
    return found


def _backoff_total_s(backoff: dict[str, Any], limit: int) -> float | None:
    first = duration_s(backoff.get("duration") or 0)
    factor = _int(backoff.get("factor") or 1)
    cap = duration_s(backoff["cap"]) if backoff.get("cap") else None
    if first is None or factor is None:
        return None
    waits = [first * factor**i for i in range(limit)]
    return sum(min(w, cap) if cap else w for w in waits)


def retry_budget_holds_every_attempt(obj: dict[str, Any]) -> list[Finding]:
    """A retried template with ``backoff.maxDuration`` needs ``activeDeadlineSeconds``, and
    ``maxDuration >= (limit + 1) * activeDeadlineSeconds + the sum of the backoffs``.

    Argo Workflows docs/retries.md: maxDuration counts from the FIRST attempt's start; once it is
    exceeded no further retry is made. A step failing with a temporary error after the budget is
    spent is never retried, whatever ``limit`` says."""
    found: list[Finding] = []
    for path, template in _templates(obj):
        strategy = template.get("retryStrategy") or {}
        limit = _int(strategy.get("limit"))
        backoff = strategy.get("backoff") or {}
        if not limit or not backoff.get("maxDuration"):
            continue
        budget = duration_s(backoff["maxDuration"])
        deadline = _int(template.get("activeDeadlineSeconds"))
        if budget is None:
            found.append((f"{path}.retryStrategy.backoff.maxDuration", "expected a duration like 90s or 1h"))
            continue
        if deadline is None:
            found.append(
                (
                    f"{path}.activeDeadlineSeconds",
                    f"template {template.get('name')!r} is retried within maxDuration "
                    f"{backoff['maxDuration']} (counted from the first attempt) but has no "
                    "activeDeadlineSeconds: one slow attempt can use up every retry",
                )
            )
            continue
        waits = _backoff_total_s(backoff, limit)
        if waits is None:
            continue
        needed = (limit + 1) * deadline + waits
        if budget < needed:
            found.append(
                (
                    f"{path}.retryStrategy.backoff.maxDuration",
                    f"template {template.get('name')!r}: maxDuration {backoff['maxDuration']} is less than "
                    f"(limit {limit} + 1) x activeDeadlineSeconds {deadline} + backoffs {waits:g}s = "
                    f"{needed:g}s: a late failure is never retried",
                )
            )
    return found


def oom_kills_are_not_retried(obj: dict[str, Any]) -> list[Finding]:
    """A retried template retries chosen exit codes only (``expression`` on ``lastRetry.exitCode``).

    Argo Workflows docs/retries.md: ``retryPolicy`` alone retries every failure, an OOM kill (exit
    code 137, node message OOMKilled) and an integrity error included; a step killed for memory fails
    the same way again, and a checksum mismatch must never be retried."""
    found: list[Finding] = []
    for path, template in _templates(obj):
        strategy = template.get("retryStrategy") or {}
        if not _int(strategy.get("limit")):
            continue
        expression = strategy.get("expression") or ""
        if "lastRetry.exitCode" not in expression or "137" in expression:
            found.append(
                (
                    f"{path}.retryStrategy.expression",
                    f"template {template.get('name')!r} is retried without choosing exit codes: OOM kills "
                    "(137) and permanent errors would be retried; retry exit code 75 only",
                )
            )
    return found


_EXIT_VARIABLES = re.compile(r"\{\{\s*=?[^}]*\bworkflow\.(status|failures)\b")


def _exit_templates(spec: dict[str, Any]) -> set[str]:
    """The exit handler and every template it calls."""
    templates = {t.get("name"): t for t in spec.get("templates") or [] if isinstance(t, dict)}
    seen: set[str] = set()
    stack = [spec["onExit"]] if spec.get("onExit") else []
    while stack:
        name = stack.pop()
        if name in seen or name not in templates:
            continue
        seen.add(name)
        template = templates[name]
        for task in (template.get("dag") or {}).get("tasks") or []:
            stack.append(task.get("template"))
        for group in template.get("steps") or []:
            for step in group if isinstance(group, list) else []:
                stack.append(step.get("template"))
    return seen


def exit_handler_variables(obj: dict[str, Any]) -> list[Finding]:
    """``{{workflow.status}}`` and ``{{workflow.failures}}`` only in the exit handler.

    Argo Workflows docs/variables.md: they are exit-handler variables; elsewhere the workflow is still
    Running (a step deciding on them would always see Running)."""
    _, spec = _workflow_spec(obj)
    allowed = _exit_templates(spec)
    found: list[Finding] = []
    for path, template in _templates(obj):
        if template.get("name") in allowed:
            continue
        for text in _strings(template):
            match = _EXIT_VARIABLES.search(text)
            if match:
                found.append(
                    (
                        path,
                        f"template {template.get('name')!r} reads workflow.{match.group(1)}, which is only "
                        "known in the exit handler (onExit)",
                    )
                )
                break
    return found


def plural_synchronization_and_schedules(obj: dict[str, Any]) -> list[Finding]:
    """``synchronization.mutexes``/``semaphores`` and CronWorkflow ``schedules``, never the singular.

    Argo Workflows docs/upgrading.md, v4.0: the singular ``synchronization.mutex``/``semaphore`` and
    CronWorkflow ``schedule`` were removed; the plural forms work since v3.6."""
    found: list[Finding] = []
    base, spec = _workflow_spec(obj)
    places = [(f"{base}.synchronization", spec.get("synchronization"))]
    places += [(f"{p}.synchronization", t.get("synchronization")) for p, t in _templates(obj)]
    for path, sync in places:
        for singular, plural in (("mutex", "mutexes"), ("semaphore", "semaphores")):
            if isinstance(sync, dict) and singular in sync:
                found.append((f"{path}.{singular}", f"removed in Argo 4.0: use {plural} (a list)"))
    if obj.get("kind") == "CronWorkflow" and "schedule" in (obj.get("spec") or {}):
        found.append(("spec.schedule", "removed in Argo 4.0: use schedules (a list)"))
    return found


_JSONPATH_CALL = re.compile(
    r"jsonpath\(([^,()]+(?:\([^()]*\))?[^,()]*),\s*(?:'([^']*)'|\"([^\"]*)\"|([^)]*))\)"
)
_JSONPATH_QUERY = re.compile(r"^\$(\.[A-Za-z_][-\w]*|\[\d+\]|\['[^']+'\])*$")


def _all_strings(obj: dict[str, Any]) -> Iterator[tuple[str, str]]:
    def walk(value: Any, path: str) -> Iterator[tuple[str, str]]:
        if isinstance(value, str):
            yield path, value
        elif isinstance(value, dict):
            for key, item in value.items():
                yield from walk(item, f"{path}.{key}" if path else str(key))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                yield from walk(item, f"{path}[{i}]")

    yield from walk(obj.get("spec") or {}, "spec")


def jsonpath_queries_are_well_formed(obj: dict[str, Any]) -> list[Finding]:
    """Every ``jsonpath(VALUE, 'QUERY')`` has a literal, well-formed query (``$.key``, ``$.a[0].b``).

    Argo Workflows docs/upgrading.md, v3.7.16 / v4.0.7: ``jsonpath()`` on a malformed query panics,
    and neither ``??`` nor ``valueFrom.default`` helps a query that can never work."""
    found: list[Finding] = []
    for path, text in _all_strings(obj):
        for match in _JSONPATH_CALL.finditer(text):
            query = match.group(2) if match.group(2) is not None else match.group(3)
            if query is None or not _JSONPATH_QUERY.match(query):
                found.append(
                    (
                        path,
                        f"jsonpath query {(query if query is not None else match.group(4)).strip()!r}: expected "
                        "a quoted literal like '$.key' or '$.items[0].name' (a malformed query panics)",
                    )
                )
    return found


# --------------------------------------------------------------------------------------------------
# The Workflow's labels in a WorkflowTemplate.


def workflow_label(label: str) -> str:
    """The value of the Workflow's label ``label`` at run time, the empty string when it is not set.

    Argo Workflows docs/variables.md (Global) documents ``workflow.labels.<NAME>`` and lists Sprig's
    functions among those of expression tags (``{{=...}}``). Three facts of Argo's code decide the form:

    - A *simple* tag ``{{workflow.labels.NAME}}`` is checked when a WorkflowTemplate is created, linted
      or submitted (workflow/validate/validate.go, ``resolveAllVariables``): only the labels written on
      the template itself (``metadata.labels``, ``workflowMetadata.labels``/``labelsFrom``) are known
      then, so a label the submitter adds later (``workflows.argoproj.io/creator``) fails validation
      with "failed to resolve {{workflow.labels...}}" (argoproj/argo-workflows#3989). Expression tags
      are not validated (util/template/validate.go).
    - In an expression, the global variables are expanded on their dots into nested maps
      (util/expr/env/env.go, util/expand/expand.go): the label ``workflows.argoproj.io/creator`` is
      ``workflow.labels.workflows.argoproj.io/creator``, i.e. ``workflow.labels`` -> ``workflows`` ->
      ``argoproj`` -> ``io/creator``, and ``workflow.labels`` is always a map (``workflow.labels.json``
      is always set). ``sprig.dig(KEYS..., DEFAULT, MAP)`` walks that path and yields DEFAULT when a
      key is missing, so an absent label becomes ``""`` and never fails the pod's template.
    - Older releases' expansion (util/expand.go's ``removeConflicts`` on ``bellows``) drops a key that
      is a string prefix of the next one, comparing without the dot: there ``.../creator`` is lost when
      ``.../creator-email`` is set (the email and username still arrive); the current one compares
      with the dot.

    The steps treat an empty value, and an expression left unresolved, as unset."""
    keys = label.split(".")
    if any(not k or "'" in k for k in keys):
        raise ValueError(f"label {label!r}: expected a label name like workflows.argoproj.io/creator")
    path = ", ".join(f"'{k}'" for k in keys)
    return "{{=sprig.dig(" + path + ", '', workflow.labels)}}"


_SIMPLE_LABEL_TAG = re.compile(r"\{\{\s*workflow\.(labels|annotations)\.([^}\s]+?)\s*\}\}")


def _declared(obj: dict[str, Any], kind: str) -> set[str]:
    _, spec = _workflow_spec(obj)
    names = set((obj.get("metadata") or {}).get(kind) or {})
    meta = spec.get("workflowMetadata") or {}
    names |= set(meta.get(kind) or {})
    if kind == "labels":
        names |= set(meta.get("labelsFrom") or {})
    return names


def workflow_labels_through_expressions(obj: dict[str, Any]) -> list[Finding]:
    """A label or annotation of the Workflow is read through an expression (:func:`workflow_label`),
    unless the object itself declares it.

    Argo Workflows workflow/validate/validate.go (``resolveAllVariables``): a simple tag
    ``{{workflow.labels.NAME}}`` (or ``workflow.annotations.NAME``) resolves only when NAME is among the
    labels (annotations) the object itself carries, so a label set when the Workflow is submitted fails
    ``argo lint`` and the creation of the template (argoproj/argo-workflows#3989)."""
    declared = {kind: _declared(obj, kind) for kind in ("labels", "annotations")}
    found: list[Finding] = []
    for path, text in _all_strings(obj):
        for match in _SIMPLE_LABEL_TAG.finditer(text):
            kind, name = match.group(1), match.group(2)
            if name == "json" or name in declared[kind]:
                continue
            found.append(
                (
                    path,
                    f"{{{{workflow.{kind}.{name}}}}} is not declared on this object: Argo's validation "
                    f"refuses it; read it through an expression with a default, e.g. "
                    f"{workflow_label(name) if kind == 'labels' else 'sprig.dig(...)'}",
                )
            )
    return found


RULES: tuple[Callable[[dict[str, Any]], list[Finding]], ...] = (
    jsonpath_queries_are_well_formed,
    outputs_have_defaults,
    gauges_cannot_be_empty,
    no_outcome_metric_at_workflow_level,
    retry_budget_holds_every_attempt,
    oom_kills_are_not_retried,
    exit_handler_variables,
    plural_synchronization_and_schedules,
    workflow_labels_through_expressions,
)


def check(obj: dict[str, Any]) -> list[Finding]:
    """Every finding of every rule on one Argo object (Workflow, WorkflowTemplate,
    ClusterWorkflowTemplate or CronWorkflow)."""
    found: list[Finding] = []
    for rule in RULES:
        found += rule(obj)
    return found
