"""The exporter's Kubernetes objects: ServiceAccount, Deployment, Service, ServiceMonitor, PrometheusRule,
and a ConfigMap holding the Grafana dashboard (labelled for Grafana's dashboard sidecar).

:func:`render_objects` builds them from :class:`DeploySettings`; credentials reach the pod only by
Secret reference (the repository password mounted as a file, the S3 key pair as ``secretKeyRef``
environment), never as values. :func:`validate_objects` checks the core kinds with the project's
Kubernetes schema check (:func:`workflows.validate.validate_core`) and the two Prometheus Operator
kinds against the fields used here (:data:`OPERATOR_SCHEMAS`). Called by ``snapflow exporter --render``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from steps.api import runtime
from workflows.fleet import dashboard, rules
from workflows.policy import DEFAULT_IMAGE

PORT = 9464  # the exporter's port in the pod
PORT_NAME = "metrics"
PASSWORD_DIR = "/var/run/snapflow/repository"
DASHBOARD_LABEL = "grafana_dashboard"  # what Grafana's dashboard sidecar looks for (kube-prometheus-stack)


@dataclass(frozen=True)
class DeploySettings:
    namespace: str
    repos: tuple[str, ...]
    name: str = "snapflow-exporter"
    image: str = DEFAULT_IMAGE
    endpoint: str | None = None
    interval_s: float = 60.0
    password_secret: str = "snapflow-repository"
    password_key: str = "password"
    credentials_secret: str | None = None  # S3 key pair (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)
    policy_config_map: str | None = None  # policy files mounted for the targets
    extra_args: tuple[str, ...] = ()  # --rpo, --freeze-budget, ... passed through
    labels: dict[str, str] = field(default_factory=dict)  # added to every object (ServiceMonitor selectors)
    runbook_base: str = rules.DEFAULT_RUNBOOK_BASE


def _labels(s: DeploySettings) -> dict[str, str]:
    return {"app.kubernetes.io/name": s.name, "app.kubernetes.io/part-of": "snapflow", **s.labels}


def _container(s: DeploySettings) -> dict[str, Any]:
    args = ["exporter", f"--listen=0.0.0.0:{PORT}", f"--interval={s.interval_s:g}"]
    args += [f"--repo={url}" for url in s.repos]
    if s.endpoint:
        args.append(f"--endpoint={s.endpoint}")
    if s.policy_config_map:
        args.append("--policy=/etc/snapflow/policies")
    args += list(s.extra_args)
    env: list[dict[str, Any]] = [
        {"name": runtime.PASSWORD_FILE, "value": f"{PASSWORD_DIR}/{s.password_key}"},
    ]
    if s.credentials_secret:
        for var in (runtime.AWS_ACCESS_KEY_ID, runtime.AWS_SECRET_ACCESS_KEY):
            env.append(
                {"name": var, "valueFrom": {"secretKeyRef": {"name": s.credentials_secret, "key": var}}}
            )
    mounts = [{"name": "repository-password", "mountPath": PASSWORD_DIR, "readOnly": True}]
    if s.policy_config_map:
        mounts.append({"name": "policies", "mountPath": "/etc/snapflow/policies", "readOnly": True})
    probe = {"httpGet": {"path": "/metrics", "port": PORT_NAME}, "periodSeconds": 30, "timeoutSeconds": 5}
    return {
        "name": "exporter",
        "image": s.image,
        "command": ["/usr/bin/tini", "--", "snapflow"],
        "args": args,
        "env": env,
        "ports": [{"name": PORT_NAME, "containerPort": PORT, "protocol": "TCP"}],
        "readinessProbe": probe,
        "livenessProbe": {**probe, "failureThreshold": 5},
        "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": mounts,
    }


def render_objects(s: DeploySettings) -> list[dict[str, Any]]:
    labels = _labels(s)
    selector = {"app.kubernetes.io/name": s.name}
    meta = {"name": s.name, "namespace": s.namespace, "labels": labels}
    volumes: list[dict[str, Any]] = [
        {
            "name": "repository-password",
            "secret": {
                "secretName": s.password_secret,
                "items": [{"key": s.password_key, "path": s.password_key}],
            },
        }
    ]
    if s.policy_config_map:
        volumes.append({"name": "policies", "configMap": {"name": s.policy_config_map}})
    service_account = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": meta,
        "automountServiceAccountToken": False,
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta,
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "serviceAccountName": s.name,
                    "automountServiceAccountToken": False,
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532},
                    "containers": [_container(s)],
                    "volumes": volumes,
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta,
        "spec": {
            "selector": selector,
            "ports": [{"name": PORT_NAME, "port": PORT, "targetPort": PORT_NAME, "protocol": "TCP"}],
        },
    }
    monitor = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": meta,
        "spec": {
            "selector": {"matchLabels": selector},
            "namespaceSelector": {"matchNames": [s.namespace]},
            "endpoints": [
                {"port": PORT_NAME, "path": "/metrics", "interval": f"{max(15, int(s.interval_s))}s"}
            ],
        },
    }
    rule = rules.prometheus_rule(s.namespace, s.name, labels, s.runbook_base)
    board = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": f"{s.name}-dashboard",
            "namespace": s.namespace,
            "labels": {**labels, DASHBOARD_LABEL: "1"},
        },
        "data": {f"{dashboard.UID}.json": dashboard.to_json(dashboard.build())},
    }
    return [service_account, deployment, service, monitor, rule, board]


# The fields of the two Prometheus Operator kinds that render_objects writes (strict: a typo fails).
_META = {
    "type": "object",
    "required": ["name", "namespace"],
    "properties": {
        "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63},
        "namespace": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
    },
    "additionalProperties": False,
}
_STR_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_DURATION = {"type": "string", "pattern": r"^(0|([0-9]+(ms|s|m|h|d|w|y))+)$"}
OPERATOR_SCHEMAS: dict[str, dict[str, Any]] = {
    "ServiceMonitor": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "kind": {"const": "ServiceMonitor"},
            "metadata": _META,
            "spec": {
                "type": "object",
                "required": ["selector", "endpoints"],
                "additionalProperties": False,
                "properties": {
                    "selector": {
                        "type": "object",
                        "properties": {"matchLabels": _STR_MAP},
                        "additionalProperties": False,
                    },
                    "namespaceSelector": {
                        "type": "object",
                        "properties": {"matchNames": {"type": "array", "items": {"type": "string"}}},
                        "additionalProperties": False,
                    },
                    "endpoints": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "properties": {
                                "port": {"type": "string"},
                                "path": {"type": "string"},
                                "interval": _DURATION,
                            },
                            "additionalProperties": False,
                        },
                    },
                },
            },
        },
        "additionalProperties": False,
    },
    "PrometheusRule": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "kind": {"const": "PrometheusRule"},
            "metadata": _META,
            "spec": {
                "type": "object",
                "required": ["groups"],
                "additionalProperties": False,
                "properties": {
                    "groups": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["name", "rules"],
                            "additionalProperties": False,
                            "properties": {
                                "name": {"type": "string", "minLength": 1},
                                "rules": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "required": ["alert", "expr"],
                                        "additionalProperties": False,
                                        "properties": {
                                            "alert": {
                                                "type": "string",
                                                "pattern": r"^[A-Za-z_][A-Za-z0-9_]*$",
                                            },
                                            "expr": {"type": "string", "minLength": 1},
                                            "for": _DURATION,
                                            "labels": _STR_MAP,
                                            "annotations": _STR_MAP,
                                        },
                                    },
                                },
                            },
                        },
                    }
                },
            },
        },
        "additionalProperties": False,
    },
}


def validate_objects(objects: list[dict[str, Any]]) -> list[str]:
    """One line per problem (``Kind/name: path: message``); empty when every object is valid."""
    import jsonschema

    from workflows.validate import validate_core

    problems: list[str] = []
    for obj in objects:
        kind = obj.get("kind")
        where = f"{kind}/{(obj.get('metadata') or {}).get('name')}"
        if kind in OPERATOR_SCHEMAS:
            for err in jsonschema.Draft202012Validator(OPERATOR_SCHEMAS[kind]).iter_errors(obj):
                path = ".".join(str(p) for p in err.absolute_path) or "(object)"
                problems.append(f"{where}: {path}: {err.message}")
        else:
            problems += [str(issue) for issue in validate_core(obj, where)]
    return problems
