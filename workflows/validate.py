"""Strict offline validation of rendered manifests: no cluster, no Argo server.

- Argo objects (Workflow, WorkflowTemplate, ClusterWorkflowTemplate, CronWorkflow) are walked key by key
  against the pydantic models hera generates from Argo's OpenAPI spec: a key the model does not know
  is an error (pydantic alone would silently ignore it), then the models validate the types.
- Core objects (ServiceAccount, Role, ConfigMap, ...) are validated with kubernetes-validate in strict
  mode (unknown keys are errors there too).
- :mod:`workflows.argo_rules` checks Argo's documented run-time semantics for the supported versions
  (outputs that can be nil, metrics evaluated before the exit handler, retry budgets, exit-handler
  variables, the plural ``mutexes``/``schedules``); :func:`validate_argo` applies them.
- :func:`check_references` checks what a schema cannot: every template, task, dependency, parameter,
  output, ConfigMap, Secret, ServiceAccount and Role a manifest names exists, and a DAG task only
  reads outputs of tasks it waits for.

Each problem is an :class:`Issue` (one line: ``WHERE: field.path: message``). Called by
``snapflow lint``, :mod:`workflows.render` and the tests.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, RootModel, ValidationError

from workflows import argo_rules

ARGO_API_VERSION = "argoproj.io/v1alpha1"
ARGO_KINDS = ("Workflow", "WorkflowTemplate", "ClusterWorkflowTemplate", "CronWorkflow")
KUBERNETES_VERSION = "1.31"


@dataclass(frozen=True, order=True)
class Issue:
    where: str  # the file or object
    path: str  # field path inside it ("" for the whole object)
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.path}: {self.message}" if self.path else f"{self.where}: {self.message}"


def describe(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    ns = f"{meta['namespace']}/" if meta.get("namespace") else ""
    return f"{obj.get('kind', '?')} {ns}{meta.get('name', '?')}"


# --------------------------------------------------------------------------------------------------
# Argo objects against hera's models.


def _argo_model(kind: str) -> type[BaseModel]:
    from hera.workflows import models

    return getattr(models, kind)


def _candidates(annotation: Any) -> list[Any]:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _candidates(typing.get_args(annotation)[0])
    if origin is typing.Union or origin is types.UnionType:
        out: list[Any] = []
        for arg in typing.get_args(annotation):
            if arg is not type(None):
                out.extend(_candidates(arg))
        return out
    return [annotation]


def _is_model(t: Any) -> bool:
    return isinstance(t, type) and issubclass(t, BaseModel) and not issubclass(t, RootModel)


def _is_root(t: Any) -> bool:
    return isinstance(t, type) and issubclass(t, RootModel)


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _walk_model(value: dict, model: type[BaseModel], path: str, found: list[tuple[str, str]]) -> None:
    fields = {(f.alias or name): f.annotation for name, f in model.model_fields.items()}
    for key, item in value.items():
        if key not in fields:
            found.append((_join(path, str(key)), f"unknown field (not in Argo's {model.__name__})"))
            continue
        _walk(item, fields[key], _join(path, key), found)


def _walk(value: Any, annotation: Any, path: str, found: list[tuple[str, str]]) -> None:
    if value is None:
        return
    kinds = _candidates(annotation)
    if isinstance(value, dict):
        models = [t for t in kinds if _is_model(t)]
        if models:
            best: list[tuple[str, str]] | None = None
            for model in models:  # a union of models: the one that fits best
                attempt: list[tuple[str, str]] = []
                _walk_model(value, model, path, attempt)
                if best is None or len(attempt) < len(best):
                    best = attempt
            found.extend(best or [])
            return
        for t in kinds:
            if typing.get_origin(t) is dict:
                item_type = typing.get_args(t)[1]
                for key, item in value.items():
                    _walk(item, item_type, _join(path, str(key)), found)
                return
            if _is_root(t):
                _walk(value, t.model_fields["root"].annotation, path, found)
                return
        return
    if isinstance(value, list):
        for t in kinds:
            if typing.get_origin(t) is list:
                item_type = typing.get_args(t)[0]
                for i, item in enumerate(value):
                    _walk(item, item_type, _join(path, i), found)
                return
            if _is_root(t):
                _walk(value, t.model_fields["root"].annotation, path, found)
                return


def _pydantic_path(loc: Iterable[Any]) -> str:
    path = ""
    for part in loc:
        path = _join(path, part) if isinstance(part, int) else _join(path, str(part))
    return path


def validate_argo(obj: dict[str, Any], where: str | None = None) -> list[Issue]:
    """Issues of one Argo object: unknown keys anywhere, then wrong types (via hera's models)."""
    where = where or describe(obj)
    kind = obj.get("kind")
    if kind not in ARGO_KINDS:
        return [Issue(where, "kind", f"expected one of {', '.join(ARGO_KINDS)}, got {kind!r}")]
    if obj.get("apiVersion") != ARGO_API_VERSION:
        return [Issue(where, "apiVersion", f"expected {ARGO_API_VERSION}, got {obj.get('apiVersion')!r}")]
    model = _argo_model(kind)
    found: list[tuple[str, str]] = []
    _walk_model(obj, model, "", found)
    issues = [Issue(where, path, message) for path, message in found]
    try:
        model.model_validate(obj)
    except ValidationError as err:
        for e in err.errors():
            issues.append(Issue(where, _pydantic_path(e["loc"]), e["msg"]))
    for required in ("metadata", "spec"):
        if required not in obj:
            issues.append(Issue(where, required, "required"))
    issues += [Issue(where, path, message) for path, message in argo_rules.check(obj)]
    return issues


# --------------------------------------------------------------------------------------------------
# Core objects with kubernetes-validate.


def validate_core(
    obj: dict[str, Any], where: str | None = None, version: str = KUBERNETES_VERSION
) -> list[Issue]:
    """Issues of one core Kubernetes object, validated strictly against the Kubernetes schema."""
    from steps.errors import UsageError

    where = where or describe(obj)
    try:
        import kubernetes_validate
    except ImportError:
        raise UsageError(
            "validating Kubernetes objects needs the package kubernetes-validate (pip install kubernetes-validate)"
        ) from None
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as err:
        path = _pydantic_path(err.absolute_path)
        message = err.message
        if err.validator == "additionalProperties":
            message = f"unknown field ({err.message})"
        return [Issue(where, path, message)]
    except kubernetes_validate.SchemaNotFoundError as err:
        return [Issue(where, "kind", err.message)]
    return []


def validate_object(obj: dict[str, Any], where: str | None = None) -> list[Issue]:
    if obj.get("kind") in ARGO_KINDS:
        return validate_argo(obj, where)
    if obj.get("kind") == "Kustomization":
        return _validate_kustomization(obj, where or "kustomization.yaml")
    return validate_core(obj, where)


def _validate_kustomization(obj: dict[str, Any], where: str) -> list[Issue]:
    issues = []
    for key in obj:
        if key not in ("apiVersion", "kind", "resources"):
            issues.append(Issue(where, key, "unknown field for a rendered kustomization"))
    if not isinstance(obj.get("resources"), list) or not all(isinstance(r, str) for r in obj["resources"]):
        issues.append(Issue(where, "resources", "expected a list of file names"))
    return issues


# --------------------------------------------------------------------------------------------------
# References.

_SIMPLE_TAG = re.compile(r"\{\{\s*([^=}][^}]*?)\s*\}\}")
_EXPRESSION_TAG = re.compile(r"\{\{=(.*?)\}\}")
_TASK_OUTPUT_SIMPLE = re.compile(r"^tasks\.([-a-z0-9]+)\.outputs\.(result|parameters\.([-\w]+))$")
_TASK_OUTPUT_EXPR = re.compile(r"tasks\[['\"]([-a-z0-9]+)['\"]\]\.outputs\.(result|parameters\.([-\w]+))")
_PARAM_EXPR = re.compile(r"(?<![.\]\w])(inputs|workflow|outputs)\.parameters\.([-\w]+)")
_WORKFLOW_VARIABLES = re.compile(
    r"^workflow\.(name|namespace|uid|status|duration|failures|serviceAccountName|mainEntrypoint|"
    r"priority|creationTimestamp(\.[A-Za-z]+)?|labels\.[-\w./]+|annotations\.[-\w./]+)$"
)
_OTHER_VARIABLES = {"duration", "status", "retries", "pod.name", "node.name"}


def _strings(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, _join(path, str(key)))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _strings(item, _join(path, i))


@dataclass
class _Index:
    """What a set of rendered objects defines, to resolve names against."""

    objects: dict[tuple[str, str, str], dict[str, Any]]  # (kind, namespace, name) -> object
    external: set[tuple[str, str, str]] | None  # objects provided by the user (None: do not check)

    def has(self, kind: str, namespace: str, name: str) -> bool:
        key = (kind, namespace, name)
        if key in self.objects:
            return True
        return self.external is None or key in self.external

    def checks(self, kind: str) -> bool:
        return self.external is not None or kind in {k for k, _, _ in self.objects}


def _template_outputs(template: dict[str, Any]) -> set[str]:
    return {p["name"] for p in (template.get("outputs") or {}).get("parameters") or []}


def _template_inputs(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in (template.get("inputs") or {}).get("parameters") or []}


def _check_tag_references(
    where: str,
    path: str,
    text: str,
    template: dict[str, Any],
    workflow_params: set[str],
    tasks: dict[str, dict[str, Any]],
    templates: dict[str, dict[str, Any]],
    upstream: set[str] | None,
    in_metrics: bool,
) -> list[Issue]:
    issues: list[Issue] = []
    inputs = set(_template_inputs(template))
    outputs = _template_outputs(template)

    def task_output(task: str, kind: str, param: str | None) -> None:
        if task not in tasks:
            issues.append(Issue(where, path, f"refers to task {task!r}, which this DAG does not have"))
            return
        if upstream is not None and task not in upstream:
            issues.append(Issue(where, path, f"reads outputs of task {task!r} without depending on it"))
        callee = templates.get(tasks[task].get("template", ""), {})
        if kind == "result" and not ("container" in callee or "script" in callee):
            issues.append(Issue(where, path, f"task {task!r} has no result (not a container or script)"))
        if param is not None and param not in _template_outputs(callee):
            issues.append(Issue(where, path, f"task {task!r} has no output parameter {param!r}"))

    for match in _SIMPLE_TAG.finditer(text):
        name = match.group(1)
        if name.startswith("inputs.parameters."):
            if name.split(".", 2)[2] not in inputs:
                issues.append(Issue(where, path, f"{{{{{name}}}}}: the template has no such input"))
        elif name.startswith("workflow.parameters."):
            if name.split(".", 2)[2] not in workflow_params:
                issues.append(Issue(where, path, f"{{{{{name}}}}}: the workflow has no such parameter"))
        elif name.startswith("tasks."):
            m = _TASK_OUTPUT_SIMPLE.match(name)
            if not m:
                issues.append(Issue(where, path, f"{{{{{name}}}}}: not a task output reference"))
            else:
                task_output(m.group(1), m.group(2).split(".")[0], m.group(3))
        elif name.startswith("outputs."):
            if not in_metrics:
                issues.append(Issue(where, path, f"{{{{{name}}}}}: outputs are only known in metrics"))
            elif name.startswith("outputs.parameters.") and name.split(".", 2)[2] not in outputs:
                issues.append(Issue(where, path, f"{{{{{name}}}}}: the template has no such output"))
        elif not (_WORKFLOW_VARIABLES.match(name) or name in _OTHER_VARIABLES):
            issues.append(Issue(where, path, f"{{{{{name}}}}}: unknown variable"))
    for match in _EXPRESSION_TAG.finditer(text):
        issues += _check_expression(where, path, match.group(1), inputs, outputs, workflow_params, in_metrics)
        for m in _TASK_OUTPUT_EXPR.finditer(match.group(1)):
            task_output(m.group(1), m.group(2).split(".")[0], m.group(3))
    return issues


def _check_expression(
    where: str,
    path: str,
    expression: str,
    inputs: set[str],
    outputs: set[str],
    workflow_params: set[str],
    in_metrics: bool,
) -> list[Issue]:
    issues = []
    for m in _PARAM_EXPR.finditer(expression):
        scope, name = m.group(1), m.group(2)
        if scope == "inputs" and name not in inputs:
            issues.append(
                Issue(where, path, f"expression reads input {name!r}, which the template does not have")
            )
        if scope == "workflow" and name not in workflow_params:
            issues.append(
                Issue(where, path, f"expression reads workflow parameter {name!r}, which is not declared")
            )
        if scope == "outputs" and (not in_metrics or name not in outputs):
            issues.append(
                Issue(where, path, f"expression reads output {name!r}, which is not available here")
            )
    if "outputs.result" in expression and "tasks[" not in expression and not in_metrics:
        issues.append(Issue(where, path, "expression reads outputs.result outside metrics"))
    return issues


def _upstream(tasks: dict[str, dict[str, Any]], name: str) -> set[str]:
    seen: set[str] = set()
    stack = list(tasks.get(name, {}).get("dependencies") or [])
    while stack:
        n = stack.pop()
        if n not in seen and n in tasks:
            seen.add(n)
            stack.extend(tasks[n].get("dependencies") or [])
    return seen


def _check_workflow_spec(
    where: str, base: str, spec: dict[str, Any], namespace: str, index: _Index
) -> list[Issue]:
    issues: list[Issue] = []
    templates_list = spec.get("templates") or []
    templates = {t.get("name", ""): t for t in templates_list}
    if len(templates) != len(templates_list):
        issues.append(Issue(where, f"{base}.templates", "expected unique template names"))
    ref = spec.get("workflowTemplateRef")
    if ref:
        if not index.has("WorkflowTemplate", namespace, ref.get("name", "")):
            issues.append(
                Issue(where, f"{base}.workflowTemplateRef.name", f"no WorkflowTemplate {ref.get('name')!r}")
            )
    elif spec.get("entrypoint") not in templates:
        issues.append(Issue(where, f"{base}.entrypoint", f"no template named {spec.get('entrypoint')!r}"))
    if spec.get("onExit") and spec["onExit"] not in templates:
        issues.append(Issue(where, f"{base}.onExit", f"no template named {spec['onExit']!r}"))
    sa = spec.get("serviceAccountName")
    if sa and index.checks("ServiceAccount") and not index.has("ServiceAccount", namespace, sa):
        issues.append(
            Issue(where, f"{base}.serviceAccountName", f"no ServiceAccount {sa!r} rendered or provided")
        )
    workflow_params = {p["name"] for p in (spec.get("arguments") or {}).get("parameters") or []}
    volumes = {v.get("name"): v for v in spec.get("volumes") or []}
    for i, template in enumerate(templates_list):
        tpath = f"{base}.templates[{i}]"
        dag_tasks = {t["name"]: t for t in ((template.get("dag") or {}).get("tasks") or [])}
        step_sa = template.get("serviceAccountName")
        if step_sa and index.checks("ServiceAccount") and not index.has("ServiceAccount", namespace, step_sa):
            issues.append(
                Issue(
                    where,
                    f"{tpath}.serviceAccountName",
                    f"no ServiceAccount {step_sa!r} rendered or provided",
                )
            )
        # Strings outside DAG tasks and metrics (container args, env, volumes, DAG outputs).
        for path, text in _strings({k: v for k, v in template.items() if k not in ("dag", "metrics")}, tpath):
            issues += _check_tag_references(
                where, path, text, template, workflow_params, dag_tasks, templates, None, False
            )
        for path, text in _strings(template.get("metrics"), f"{tpath}.metrics"):
            issues += _check_tag_references(
                where, path, text, template, workflow_params, {}, templates, None, True
            )
        for j, task in enumerate((template.get("dag") or {}).get("tasks") or []):
            kpath = f"{tpath}.dag.tasks[{j}]"
            callee_name = task.get("template")
            callee = templates.get(callee_name or "")
            if task.get("templateRef"):
                tref = task["templateRef"]
                target = index.objects.get(("WorkflowTemplate", namespace, tref.get("name", "")))
                if target is None and index.external is not None:
                    issues.append(
                        Issue(where, f"{kpath}.templateRef", f"no WorkflowTemplate {tref.get('name')!r}")
                    )
                elif target is not None:
                    names = {t.get("name") for t in target["spec"].get("templates") or []}
                    if tref.get("template") not in names:
                        issues.append(Issue(where, f"{kpath}.templateRef.template", "no such template"))
            elif callee is None:
                issues.append(Issue(where, f"{kpath}.template", f"no template named {callee_name!r}"))
            for dep in task.get("dependencies") or []:
                if dep not in dag_tasks:
                    issues.append(Issue(where, f"{kpath}.dependencies", f"no task named {dep!r} in this DAG"))
            if task["name"] in _upstream(dag_tasks, task["name"]):
                issues.append(Issue(where, f"{kpath}.dependencies", "dependency cycle"))
            if callee is not None:
                given = {p["name"] for p in (task.get("arguments") or {}).get("parameters") or []}
                wanted = _template_inputs(callee)
                for name in sorted(given - set(wanted)):
                    issues.append(
                        Issue(where, f"{kpath}.arguments", f"template {callee_name!r} has no input {name!r}")
                    )
                for name, p in sorted(wanted.items()):
                    if name not in given and "default" not in p and "value" not in p:
                        issues.append(Issue(where, f"{kpath}.arguments", f"input {name!r} is not supplied"))
            upstream = _upstream(dag_tasks, task["name"])
            for path, text in _strings(task, kpath):
                issues += _check_tag_references(
                    where, path, text, template, workflow_params, dag_tasks, templates, upstream, False
                )
        pod_volumes = {**volumes, **{v.get("name"): v for v in template.get("volumes") or []}}
        container = template.get("container") or template.get("script") or {}
        for k, mount in enumerate(container.get("volumeMounts") or []):
            if mount.get("name") not in pod_volumes:
                issues.append(
                    Issue(where, f"{tpath}.container.volumeMounts[{k}]", f"no volume {mount.get('name')!r}")
                )
        for k, device in enumerate(container.get("volumeDevices") or []):
            if device.get("name") not in pod_volumes:
                issues.append(
                    Issue(where, f"{tpath}.container.volumeDevices[{k}]", f"no volume {device.get('name')!r}")
                )
        for name, volume in pod_volumes.items():
            if volume is None:
                continue
            cm = (volume.get("configMap") or {}).get("name")
            if cm and not index.has("ConfigMap", namespace, cm):
                issues.append(
                    Issue(
                        where,
                        f"{tpath}.volumes",
                        f"volume {name!r}: no ConfigMap {cm!r} rendered or provided",
                    )
                )
            secret = (volume.get("secret") or {}).get("secretName")
            # a name from a workflow parameter ({{workflow.parameters.X}}) is chosen when a run is submitted
            if secret and not secret.startswith("{{") and not index.has("Secret", namespace, secret):
                issues.append(
                    Issue(where, f"{tpath}.volumes", f"volume {name!r}: Secret {secret!r} is not provided")
                )
        for k, env in enumerate(container.get("env") or []):
            ref = ((env.get("valueFrom") or {}).get("secretKeyRef")) or {}
            if ref and not index.has("Secret", namespace, ref.get("name", "")):
                issues.append(
                    Issue(where, f"{tpath}.container.env[{k}]", f"Secret {ref.get('name')!r} is not provided")
                )
    return issues


def check_references(
    objects: list[dict[str, Any]],
    external: Iterable[tuple[str, str, str]] | None = None,
    where: dict[int, str] | None = None,
) -> list[Issue]:
    """Issues of names that do not resolve within ``objects`` (plus ``external`` (kind, ns, name))."""
    index = _Index(
        objects={(o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]): o for o in objects},
        external=None if external is None else set(external),
    )
    issues: list[Issue] = []
    for obj in objects:
        label = (where or {}).get(id(obj)) or describe(obj)
        kind = obj.get("kind")
        ns = obj["metadata"].get("namespace", "")
        spec = obj.get("spec") or {}
        if kind in ("Workflow", "WorkflowTemplate", "ClusterWorkflowTemplate"):
            issues += _check_workflow_spec(label, "spec", spec, ns, index)
        elif kind == "CronWorkflow":
            issues += _check_workflow_spec(
                label, "spec.workflowSpec", spec.get("workflowSpec") or {}, ns, index
            )
        elif kind in ("RoleBinding", "ClusterRoleBinding"):
            role = obj.get("roleRef") or {}
            role_ns = ns if role.get("kind") == "Role" else ""
            if not index.has(role.get("kind", ""), role_ns, role.get("name", "")):
                issues.append(Issue(label, "roleRef", f"no {role.get('kind')} {role.get('name')!r} rendered"))
            for k, subject in enumerate(obj.get("subjects") or []):
                if subject.get("kind") == "ServiceAccount" and not index.has(
                    "ServiceAccount", subject.get("namespace", ns), subject.get("name", "")
                ):
                    issues.append(
                        Issue(label, f"subjects[{k}]", f"no ServiceAccount {subject.get('name')!r}")
                    )
    return issues


def validate_all(
    objects: list[tuple[str, dict[str, Any]]],
    external: Iterable[tuple[str, str, str]] | None = None,
    core: bool = True,
) -> list[Issue]:
    """Every issue of a set of manifests: ``objects`` is (where, object); ``core=False`` skips
    kubernetes-validate (fast checks only)."""
    issues: list[Issue] = []
    for where, obj in objects:
        if obj.get("kind") in ARGO_KINDS:
            issues += validate_argo(obj, where)
        elif obj.get("kind") == "Kustomization":
            issues += _validate_kustomization(obj, where)
        elif core:
            issues += validate_core(obj, where)
    manifests = [obj for _, obj in objects if obj.get("kind") != "Kustomization"]
    labels = {id(obj): where for where, obj in objects}
    issues += check_references(manifests, external, labels)
    return issues


def lint_rendering(
    rendering: Any, kubernetes_version: str = KUBERNETES_VERSION, core: bool = True
) -> list[Issue]:
    """Every issue of a :class:`workflows.render.Rendering`, the kustomization included."""
    import yaml

    objects = [(o.path, o.obj) for o in rendering.ordered()]
    kustomization = yaml.safe_load(rendering.files()["kustomization.yaml"])
    issues: list[Issue] = []
    for where, obj in objects:
        if obj.get("kind") in ARGO_KINDS:
            issues += validate_argo(obj, where)
        elif core:
            issues += validate_core(obj, where, kubernetes_version)
    issues += _validate_kustomization(kustomization, "kustomization.yaml")
    missing = set(kustomization.get("resources") or []) ^ {where for where, _ in objects}
    for path in sorted(missing):
        issues.append(
            Issue(
                "kustomization.yaml",
                "resources",
                f"{path}: listed but not rendered, or rendered but not listed",
            )
        )
    external = [(e.kind, e.namespace, e.name) for e in rendering.external]
    issues += check_references(
        [obj for _, obj in objects], external, {id(obj): where for where, obj in objects}
    )
    return issues
