"""Pod Security of every pod a policy's workflows create, against the level its namespace enforces.

Argo makes one pod of each container template: the template's container (``main``) and sidecars, its
init containers, its volumes with the WorkflowTemplate's, and the template's ``securityContext`` (else
the WorkflowTemplate's). :func:`argo_pods` rebuilds those pod specs from a rendered WorkflowTemplate;
:func:`admission` checks each, and the restore mover pod restore-app creates, with the one
implementation of the Pod Security Standards (:mod:`steps.manifests.podsecurity`).

Argo adds its own containers to each pod (``init``, ``wait``): their security context is the workflow
controller's ``executor.securityContext``, which a namespace enforcing ``restricted`` needs set
(docs/user/prerequisites.md); the rendered objects cannot say whether it is, so preflight warns.

With a mover namespace (``spec.movers.namespace``) every step pod runs there, and so do restore-app's
mover pods (``--mover-namespace``: they fill staging claims there whose volumes are handed over to the
target claims), so its level is checked against the templates and the restore mover; no pod of the
workflows runs in the policy's namespace (it keeps the app's snapshots), whatever level it enforces.

Two kinds of steps run as root, with only the capabilities they use (a subset of baseline's defaults):
the copy (it reads the files of every owner on the read-only clone, ``DAC_OVERRIDE``) and the
single-volume restore (it restores owners and modes, ``CHOWN``, ``DAC_OVERRIDE``, ``FOWNER``,
``FSETID``). ``restricted`` rejects both; everything else runs as a non-root user and passes it.
"""

from __future__ import annotations

from dataclasses import dataclass

from steps.api import ENFORCE_LABEL, LEVELS
from steps.api import pod_security_check as check
from workflows.hera_builder import build_workflow_template
from workflows.pipeline import Needs, Pipeline
from workflows.pipelines import pipelines_for
from workflows.policy import Policy

# The executor settings a namespace enforcing restricted needs (workflow-controller ConfigMap).
EXECUTOR_SECURITY_CONTEXT = (
    "runAsNonRoot: true, runAsUser (non-zero), allowPrivilegeEscalation: false, "
    "capabilities.drop [ALL], seccompProfile.type RuntimeDefault"
)


@dataclass(frozen=True)
class PodTemplate:
    """The pod Argo creates for one template of a WorkflowTemplate."""

    workflow_template: str
    template: str
    spec: dict
    annotations: dict
    why_root: str = ""  # why the step runs as root, when it does by design

    @property
    def where(self) -> str:
        return f"WorkflowTemplate {self.workflow_template}, template {self.template}"


def argo_pods(workflow_template: dict) -> list[tuple[str, dict, dict]]:
    """``(template name, pod spec, annotations)`` of each pod the WorkflowTemplate's templates create
    (container and script templates, container sets); the DAG and steps templates create none."""
    spec = workflow_template.get("spec") or {}
    shared_volumes = list(spec.get("volumes") or [])
    pod_annotations = dict((spec.get("podMetadata") or {}).get("annotations") or {})
    out = []
    for t in spec.get("templates") or []:
        main = t.get("container") or t.get("script")
        if main is not None:
            main_containers = [{"name": "main", **{k: v for k, v in main.items() if k != "source"}}]
        elif t.get("containerSet"):
            main_containers = list(t["containerSet"].get("containers") or [])
        else:
            continue
        pod: dict = {
            "initContainers": list(t.get("initContainers") or []),
            "containers": [*main_containers, *(t.get("sidecars") or [])],
            "volumes": [*(t.get("volumes") or []), *shared_volumes],
        }
        # the template's securityContext, when it has one (even empty), replaces the workflow's
        security = t["securityContext"] if "securityContext" in t else spec.get("securityContext")
        if security is not None:
            pod["securityContext"] = security
        for key in ("hostNetwork",):
            if spec.get(key) is not None:
                pod[key] = spec[key]
        annotations = {**pod_annotations, **((t.get("metadata") or {}).get("annotations") or {})}
        out.append((t["name"], pod, annotations))
    return out


def _why_root(pipeline: Pipeline) -> dict[str, str]:
    """Template name → why its step runs as root (the copy and the single-volume restore)."""
    steps = [*pipeline.order(), *([pipeline.exit_step] if pipeline.exit_step else [])]
    out = {}
    for step in steps:
        if step.source_pod is not None and step.source_pod.as_root:
            out[step.name] = (
                "it reads the etcd client key of the control-plane node (root's, mode 0600) or writes a new "
                "etcd data directory there, through a hostPath volume"
            )
        elif Needs.SOURCE in step.needs:
            out[step.name] = "it reads the files of every owner on the clone as root (DAC_OVERRIDE)"
        elif Needs.TARGET in step.needs:
            out[step.name] = (
                "it restores the files' owners and modes as root (CHOWN, DAC_OVERRIDE, FOWNER, FSETID)"
            )
    return out


def pod_templates(policy: Policy) -> list[PodTemplate]:
    """Every pod template of the policy's rendered WorkflowTemplates."""
    out = []
    for pipeline in pipelines_for(policy):
        wt = build_workflow_template(pipeline).to_dict()
        why = _why_root(pipeline)
        for name, spec, notes in argo_pods(wt):
            out.append(PodTemplate(wt["metadata"]["name"], name, spec, notes, why.get(name, "")))
    return out


def mover_pod(policy: Policy, run_as_root: bool = True) -> dict:
    """The restore mover pod restore-app creates for one PVC (the policy's image, Secrets, CA)."""
    from steps.api import manifest_render as render

    spec = policy.spec
    repo = spec.repository
    creds = repo.credentials_secret
    return render.mover_pod(
        name="preflight",
        namespace=policy.namespace,
        pvc="preflight",
        image=spec.image,
        repository=repo.url,
        snapshot_id="preflight",
        labels={},
        password_secret=repo.password_secret.name,
        password_secret_key=repo.password_secret.key,
        credentials_secret=creds.name if creds else None,
        **(
            {"access_key_key": creds.access_key_id_key, "secret_key_key": creds.secret_access_key_key}
            if creds
            else {}
        ),
        ca_config_map=repo.ca_bundle.config_map if repo.ca_bundle else None,
        run_as_root=run_as_root,
    )


@dataclass(frozen=True)
class Admission:
    """What a level makes of a policy's pods."""

    level: str
    rejected: list[tuple[PodTemplate, list[str]]]  # (template, violations), at this level
    templates: int
    mover_root: list[str]  # violations of the root mover (restore-app's default)
    mover_non_root: list[str]  # violations of the --mover-non-root mover


def admission(policy: Policy, level: str, templates: list[PodTemplate] | None = None) -> Admission:
    """``templates``: the policy's pod templates (default: :func:`pod_templates`)."""
    templates = pod_templates(policy) if templates is None else templates
    rejected = []
    for t in templates:
        found = [str(v) for v in check(t.spec, level, t.annotations)]
        if found:
            rejected.append((t, found))
    movers = not policy.is_local and policy.spec.source is None  # restore-app's movers, for an app
    mover_root = [str(v) for v in check(mover_pod(policy)["spec"], level)] if movers else []
    mover_non_root = (
        [str(v) for v in check(mover_pod(policy, run_as_root=False)["spec"], level)] if movers else []
    )
    return Admission(level, rejected, len(templates), mover_root, mover_non_root)


def _enforced_level(client, namespace: str, checks, missing: str = "") -> str | None:
    """The level ``namespace`` enforces; None (after saying why, if it matters) when it cannot be known.
    ``missing``: the failure to report when the namespace does not exist (else another check does)."""
    from steps.api import KubeError

    try:
        ns_obj = client.get_or_none("v1", "Namespace", namespace)
    except KubeError as err:
        checks.add("pod-security", "warn", f"cannot read namespace {namespace}: {err}")
        return None
    if ns_obj is None:
        if missing:
            checks.add("pod-security", "fail", missing)
        return None
    level = ((ns_obj.get("metadata") or {}).get("labels") or {}).get(ENFORCE_LABEL, "privileged")
    if level not in LEVELS:
        checks.add("pod-security", "warn", f"namespace {namespace}: unknown {ENFORCE_LABEL} level {level!r}")
        return None
    return level


def check_pod_security(client, policy: Policy, checks, templates: list[PodTemplate] | None = None) -> None:
    """``pod-security``: the level enforced where the workflows run (the policy's namespace, or its
    mover namespace) admits every pod of its workflows (``templates``, default: :func:`pod_templates`)
    and the restore mover restore-app creates (there, too, with a mover namespace)."""
    ns = policy.namespace
    home = policy.workflow_namespace
    if home == ns:
        level = _enforced_level(client, ns, checks)
        if level is None:
            return
        result = admission(policy, level, templates)
        _report_templates(checks, result, "")
        _report_mover(checks, result, "")
        _report_executor(checks, level, "")
        if not result.rejected:
            checks.add(
                "pod-security",
                "ok",
                f"enforce={level} admits the {result.templates} step pods of the workflows"
                + (
                    ""
                    if policy.is_local or policy.spec.source is not None or result.mover_root
                    else " and the restore mover"
                ),
            )
        return
    # a mover namespace: every step pod and restore-app's movers run there, none in the app's
    level = _enforced_level(
        client,
        home,
        checks,
        missing=f"mover namespace {home} (spec.movers.namespace) does not exist: create it, labelled "
        "pod-security.kubernetes.io/enforce=baseline, with the repository's Secrets",
    )
    if level is not None:
        result = admission(policy, level, templates)
        _report_templates(checks, result, f"mover namespace {home}: ")
        _report_mover(checks, result, f"mover namespace {home}: ")
        _report_executor(checks, level, f"mover namespace {home}: ")
        if not result.rejected:
            checks.add(
                "pod-security",
                "ok",
                f"mover namespace {home}: enforce={level} admits the {result.templates} step pods of the "
                "workflows" + ("" if result.mover_root else " and the restore mover"),
            )
    app_level = _enforced_level(client, ns, checks)
    if app_level is not None:
        checks.add(
            "pod-security",
            "ok",
            f"namespace {ns}: enforce={app_level}; no pod of the workflows runs there (step pods and restore "
            f"movers run in {home})",
        )


def _report_templates(checks, result: Admission, where: str) -> None:
    level = result.level
    for template, found in result.rejected:
        needed = None
        if not check(template.spec, "baseline", template.annotations):
            needed = "baseline"
        elif any("hostPath" in v for v in template.spec.get("volumes") or ()):
            needed = "privileged"  # the etcd steps on a control-plane node's files (spec.source.etcd)
        if template.why_root and needed:
            checks.add(
                "pod-security",
                "fail",
                f"{where}enforce={level} rejects {template.where}: {template.why_root}; it needs the {needed} "
                f"level ({'; '.join(found)})",
            )
        else:
            checks.add(
                "pod-security", "fail", f"{where}enforce={level} rejects {template.where}: {'; '.join(found)}"
            )


def _report_executor(checks, level: str, where: str) -> None:
    if level == "restricted":
        checks.add(
            "pod-security",
            "warn",
            f"{where}enforce=restricted also rejects Argo's init and wait containers unless the "
            f"workflow-controller ConfigMap sets executor.securityContext ({EXECUTOR_SECURITY_CONTEXT}); "
            "see the prerequisites",
        )


def _report_mover(checks, result: Admission, where: str) -> None:
    level = result.level
    if result.mover_root:
        if not result.mover_non_root:
            checks.add(
                "pod-security",
                "warn",
                f"{where}enforce={level} rejects the restore mover as root ({result.mover_root[0]}); restores "
                "there need --mover-non-root (file owners are then not restored)",
            )
        else:
            checks.add(
                "pod-security",
                "fail",
                f"{where}enforce={level} rejects the restore mover pod: {'; '.join(result.mover_non_root)}",
            )
