"""Talk to an Argo Server through Hera's WorkflowsService: submit a workflow from a template, apply
rendered WorkflowTemplates and CronWorkflows.

Connection settings, first match wins:

=========================  ==========================================  =======================
setting                    option                                      environment
=========================  ==========================================  =======================
server URL                 ``--server``                                ``ARGO_SERVER`` (host:port
                                                                       or URL; ``ARGO_SECURE=false``
                                                                       means http)
base path                  ``--base-href``                             ``ARGO_BASE_HREF``
token                      ``--token-file`` (file holding the token)   ``ARGO_TOKEN``,
                                                                       ``ARGO_TOKEN_FILE``
CA bundle                  ``--ca-file``                               ``ARGO_CA_FILE``
skip TLS verification      ``--insecure-skip-tls-verify``              ``ARGO_INSECURE_SKIP_VERIFY``
client certificate         ``--client-cert`` / ``--client-key``
namespace                  ``-n/--namespace``                          ``ARGO_NAMESPACE``
=========================  ==========================================  =======================

The token is never printed, logged or put into an error message. The Argo Server manages Argo
objects only: ServiceAccounts, Roles and the plan ConfigMaps go through ``kubectl apply -k``.
Called by ``snapflow submit`` and ``snapflow apply``.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from steps.errors import PermanentError, TemporaryError, UsageError

DEFAULT_TIMEOUT_S = 30.0
TRUE_VALUES = ("1", "true", "yes", "on")
APPLIED_KINDS = ("WorkflowTemplate", "CronWorkflow")


@dataclass(frozen=True)
class ServerSettings:
    url: str
    token: str | None = field(default=None, repr=False)
    verify: bool | str = True  # False, True or a CA bundle path
    client_cert: tuple[str, str] | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Argo Server connection")
    group.add_argument("--server", metavar="URL", help="Argo Server URL or host:port (env ARGO_SERVER)")
    group.add_argument(
        "--base-href", metavar="PATH", help="path prefix of the Argo Server (env ARGO_BASE_HREF)"
    )
    group.add_argument(
        "--token-file",
        metavar="FILE",
        help="file holding the bearer token (env ARGO_TOKEN or ARGO_TOKEN_FILE)",
    )
    group.add_argument("--ca-file", metavar="FILE", help="CA bundle to verify the server (env ARGO_CA_FILE)")
    group.add_argument(
        "--insecure-skip-tls-verify",
        action="store_true",
        default=None,
        help="do not verify the server certificate (env ARGO_INSECURE_SKIP_VERIFY)",
    )
    group.add_argument("--client-cert", metavar="FILE", help="client certificate (PEM) for mutual TLS")
    group.add_argument("--client-key", metavar="FILE", help="key of the client certificate (PEM)")
    group.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        metavar="SECONDS",
        help="per request (default: 30)",
    )


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in TRUE_VALUES


def _read_token(path: str, what: str) -> str:
    try:
        token = Path(path).read_text().strip()
    except OSError as err:
        raise UsageError(f"{what}: cannot read {path} ({err.strerror or err.__class__.__name__})") from None
    if not token:
        raise UsageError(f"{what}: {path} is empty, expected a bearer token")
    return token


def settings_from(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> ServerSettings:
    """Connection settings from options, then the environment; raises UsageError naming what is missing."""
    env = os.environ if env is None else env
    server = getattr(args, "server", None) or env.get("ARGO_SERVER")
    if not server:
        raise UsageError("--server: required (or set ARGO_SERVER), expected the Argo Server URL or host:port")
    if "://" not in server:
        scheme = (
            "http"
            if env.get("ARGO_SECURE", "true").strip().lower() in ("0", "false", "no", "off")
            else "https"
        )
        server = f"{scheme}://{server}"
    if not server.startswith(("http://", "https://")):
        raise UsageError(f"--server: expected an http:// or https:// URL, got {server.split('://')[0]}://")
    base = getattr(args, "base_href", None) or env.get("ARGO_BASE_HREF") or ""
    url = server.rstrip("/") + "/" + base.strip("/")
    url = url.rstrip("/") + "/"

    token = None
    if getattr(args, "token_file", None):
        token = _read_token(args.token_file, "--token-file")
    elif env.get("ARGO_TOKEN"):
        token = env["ARGO_TOKEN"].strip()
    elif env.get("ARGO_TOKEN_FILE"):
        token = _read_token(env["ARGO_TOKEN_FILE"], "ARGO_TOKEN_FILE")

    insecure = getattr(args, "insecure_skip_tls_verify", None)
    if insecure is None:
        insecure = _truthy(env.get("ARGO_INSECURE_SKIP_VERIFY"))
    ca_file = getattr(args, "ca_file", None) or env.get("ARGO_CA_FILE")
    if insecure and ca_file:
        raise UsageError("--ca-file: expected either a CA bundle or --insecure-skip-tls-verify, not both")
    verify: bool | str = True
    if insecure:
        verify = False
    elif ca_file:
        if not Path(ca_file).is_file():
            raise UsageError(f"--ca-file: {ca_file} does not exist")
        verify = ca_file

    cert, key = getattr(args, "client_cert", None), getattr(args, "client_key", None)
    if bool(cert) != bool(key):
        raise UsageError("--client-cert: expected both --client-cert and --client-key")
    for option, path in (("--client-cert", cert), ("--client-key", key)):
        if path and not Path(path).is_file():
            raise UsageError(f"{option}: {path} does not exist")
    timeout = getattr(args, "timeout", None)
    timeout = DEFAULT_TIMEOUT_S if timeout is None else float(timeout)
    if timeout <= 0:
        raise UsageError(f"--timeout: expected a positive number of seconds, got {timeout}")
    return ServerSettings(
        url=url,
        token=token,
        verify=verify,
        client_cert=(cert, key) if cert and key else None,
        timeout_s=timeout,
    )


def namespace_from(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    namespace = getattr(args, "namespace", None) or env.get("ARGO_NAMESPACE")
    if not namespace:
        raise UsageError("--namespace: required (or set ARGO_NAMESPACE), expected the template's namespace")
    return namespace


def parse_parameters(items: Sequence[str]) -> list[str]:
    """``NAME=VALUE`` strings, checked; returned as the Argo Server expects them."""
    out = []
    for item in items:
        name, sep, _value = item.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"--parameter: expected NAME=VALUE, got {item!r}")
        out.append(item)
    return out


def open_service(settings: ServerSettings, namespace: str | None = None):
    """Hera's WorkflowsService with bounded request timeouts."""
    import requests
    from hera.workflows import WorkflowsService

    class _TimeoutSession(requests.Session):
        def request(self, method, url, **kwargs):  # type: ignore[override]
            kwargs.setdefault("timeout", settings.timeout_s)
            return super().request(method, url, **kwargs)

    return WorkflowsService(
        host=settings.url,
        token=settings.token,
        verify_ssl=settings.verify,  # type: ignore[arg-type]  # requests accepts a CA bundle path here
        client_certs=settings.client_cert,
        namespace=namespace,
        session=_TimeoutSession(),
    )


def submit_request(
    namespace: str, template: str, parameters: Sequence[str] = (), labels: Mapping[str, str] | None = None
):
    """The request that starts a Workflow from WorkflowTemplate ``template`` (like ``argo submit --from``)."""
    from hera.workflows import models as m

    label_text = ",".join(f"{k}={v}" for k, v in sorted((labels or {}).items())) or None
    return m.WorkflowSubmitRequest(
        namespace=namespace,
        resource_kind="WorkflowTemplate",
        resource_name=template,
        submit_options=m.SubmitOpts(parameters=list(parameters) or None, labels=label_text),
    )


def request_body(request) -> dict[str, Any]:
    """The JSON body hera sends for ``request``."""
    return request.model_dump(
        mode="json", exclude_none=True, by_alias=True, exclude_unset=True, exclude_defaults=True
    )


def _call(settings: ServerSettings, what: str, fn, *args, **kwargs):
    """Run one service call; map transport and HTTP failures to Snapflow errors (never the token)."""
    import warnings

    import requests
    from hera import exceptions as hx
    from pydantic.warnings import PydanticDeprecatedSince20

    try:
        with warnings.catch_warnings():
            # hera serialises requests with pydantic's deprecated .json(); not the user's concern
            warnings.simplefilter("ignore", PydanticDeprecatedSince20)
            return fn(*args, **kwargs)
    except requests.exceptions.SSLError:
        raise PermanentError(
            f"{what}: TLS verification of {settings.url} failed (use --ca-file, or --insecure-skip-tls-verify)"
        ) from None
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as err:
        raise TemporaryError(
            f"{what}: cannot reach the Argo Server at {settings.url} ({err.__class__.__name__})"
        ) from None
    except hx.Unauthorized:
        raise PermanentError(
            f"{what}: the Argo Server refused the token (401); set ARGO_TOKEN or --token-file"
        ) from None
    except hx.Forbidden as err:
        raise PermanentError(f"{what}: forbidden (403): {err}") from None
    except hx.NotFound as err:
        raise UsageError(f"{what}: not found (404): {err}") from None
    except hx.BadRequest as err:
        raise UsageError(f"{what}: rejected (400): {err}") from None
    except hx.HeraException as err:
        raise TemporaryError(f"{what}: Argo Server error: {err}") from None
    except (ValueError, TypeError) as err:
        # A body that is not JSON (requests' JSONDecodeError) or not the Argo object expected (pydantic's
        # ValidationError; a TypeError when it is not even a JSON object): a proxy's page, another
        # service on that port, an incompatible server.
        raise PermanentError(
            f"{what}: the Argo Server at {settings.url} answered with {_malformed(err)}; check --server "
            "(and --base-href) point at an Argo Server of a supported version"
        ) from None


def _malformed(err: ValueError | TypeError) -> str:
    """A short description of a response that could not be read, without its content (it may echo
    the request)."""
    from pydantic import ValidationError

    if isinstance(err, ValidationError):
        first = err.errors()[0] if err.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ())) or "the body"
        return f"JSON that is not the expected Argo object ({err.error_count()} problem(s), first at {where})"
    if isinstance(err, TypeError):
        return "JSON that is not the expected Argo object (not a JSON object)"
    return "a body that is not JSON"


def submit(settings: ServerSettings, request) -> str:
    """Start the workflow; returns its name."""
    service = open_service(settings, request.namespace)
    what = f"submit {request.namespace}/{request.resource_name}"
    workflow = _call(settings, what, service.submit_workflow, request, namespace=request.namespace)
    name = getattr(getattr(workflow, "metadata", None), "name", None)
    if not name:
        raise PermanentError(f"{what}: the Argo Server at {settings.url} answered without a workflow name")
    return name


def apply_objects(settings: ServerSettings, objects: Sequence[dict[str, Any]]) -> list[str]:
    """Create or update each WorkflowTemplate and CronWorkflow; returns one line per object."""
    from hera import exceptions as hx
    from hera.workflows import models as m

    lines = []
    for obj in objects:
        kind, meta = obj["kind"], obj["metadata"]
        name, namespace = meta["name"], meta["namespace"]
        what = f"apply {kind} {namespace}/{name}"
        service = open_service(settings, namespace)
        if kind == "WorkflowTemplate":
            model = m.WorkflowTemplate.model_validate(obj)
            get, create, update = (
                service.get_workflow_template,
                service.create_workflow_template,
                service.update_workflow_template,
            )
            create_request, update_request, field = (
                m.WorkflowTemplateCreateRequest,
                m.WorkflowTemplateUpdateRequest,
                "template",
            )
        elif kind == "CronWorkflow":
            model = m.CronWorkflow.model_validate(obj)
            get, create, update = (
                service.get_cron_workflow,
                service.create_cron_workflow,
                service.update_cron_workflow,
            )
            create_request, update_request, field = (
                m.CreateCronWorkflowRequest,
                m.UpdateCronWorkflowRequest,
                "cron_workflow",
            )
        else:
            raise UsageError(f"{what}: the Argo Server applies only {', '.join(APPLIED_KINDS)}")
        current = _call(settings, what, _get_or_none, get, name, namespace, hx)
        if current is None:
            request = create_request(namespace=namespace, **{field: model})
            _call(settings, what, create, request, namespace=namespace)
            lines.append(f"created {kind} {namespace}/{name}")
        else:
            model.metadata.resource_version = current.metadata.resource_version
            request = update_request(name=name, namespace=namespace, **{field: model})
            _call(settings, what, update, name, request, namespace=namespace)
            lines.append(f"updated {kind} {namespace}/{name}")
    return lines


def _get_or_none(getter, name: str, namespace: str, hx):
    try:
        return getter(name, namespace=namespace)
    except hx.NotFound:
        return None
