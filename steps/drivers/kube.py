"""Kubernetes API access for the steps: the one place that builds a ``kubernetes`` ApiClient.

Provides :class:`KubeSettings` (where the configuration comes from, short explicit timeouts),
:func:`api_client` (an ApiClient from an explicit kubeconfig, ``$KUBECONFIG``, the in-cluster service
account, or ``~/.kube/config``, in that order), and :class:`KubeClient`, a small dict-based client for any
resource (get / list / create / replace / patch / delete / watch / wait) whose errors are mapped onto the
step error tree:

::

    KubeError (SnapflowError)
    ├── NotFound          404          (PermanentError)
    ├── AlreadyExists     409          (PermanentError)
    ├── Forbidden         401 / 403    (PermanentError)
    ├── Invalid           400 / 422    (PermanentError)
    ├── RequestFailed     other 4xx    (PermanentError)
    └── KubeUnavailable   5xx, 429, connection errors and timeouts (TemporaryError, retryable)

Called by the Kubernetes-facing steps (capture, prepare-clone, finalize, restore-app, preflight), the
``csi`` snapshot driver and the pods/exec runner. Data commands never import this module: the
``kubernetes`` package costs about a second of start-up.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from steps import runtime
from steps.drivers.kube_types import KNOWN, KNOWN_TYPES, ResourceType, guess_plural, version_priority
from steps.errors import PermanentError, SnapflowError, TemporaryError, UsageError

DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_READ_TIMEOUT = 30.0
DEFAULT_RETRIES = 3
IN_CLUSTER_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"


# --------------------------------------------------------------------------------------------------
# Errors


class KubeError(SnapflowError):
    """Base of the errors of this module; ``status`` is the HTTP status when there was one."""

    status: int | None = None


class NotFound(KubeError, PermanentError):
    status = 404


class AlreadyExists(KubeError, PermanentError):
    status = 409


class Forbidden(KubeError, PermanentError):
    status = 403


class Invalid(KubeError, PermanentError):
    status = 422


class KubeUnavailable(KubeError, TemporaryError):
    pass


class RequestFailed(KubeError, PermanentError):
    """Any other refusal by the API server (4xx)."""


class _Gone(KubeError):
    """A watch's resourceVersion is too old (410): list again and resume."""

    status = 410


# --------------------------------------------------------------------------------------------------
# Settings and the ApiClient


@dataclass(frozen=True)
class KubeSettings:
    """Where the client configuration comes from and how long a request may take."""

    kubeconfig: str | None = None
    context: str | None = None
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    read_timeout: float = DEFAULT_READ_TIMEOUT
    retries: int = DEFAULT_RETRIES

    @classmethod
    def from_env(cls, kubeconfig: str | None = None, context: str | None = None) -> KubeSettings:
        """Settings from arguments, then ``SNAPFLOW_KUBE_*`` environment variables."""

        def number(name: str, default: float) -> float:
            raw = os.environ.get(name)
            if raw is None or raw == "":
                return default
            try:
                value = float(raw)
            except ValueError:
                raise UsageError(f"{name}: expected a number of seconds, got {raw!r}") from None
            if value <= 0:
                raise UsageError(f"{name}: expected a positive number of seconds, got {raw!r}")
            return value

        return cls(
            kubeconfig=kubeconfig or None,
            context=context or os.environ.get(runtime.KUBE_CONTEXT) or None,
            connect_timeout=number(runtime.KUBE_CONNECT_TIMEOUT, DEFAULT_CONNECT_TIMEOUT),
            read_timeout=number(runtime.KUBE_READ_TIMEOUT, DEFAULT_READ_TIMEOUT),
            retries=int(number(runtime.KUBE_RETRIES, DEFAULT_RETRIES)),
        )

    @property
    def timeout(self) -> tuple[float, float]:
        return (self.connect_timeout, self.read_timeout)


def _config_source(settings: KubeSettings) -> tuple[str, str | None]:
    """('kubeconfig', path) or ('in-cluster', None), following the documented order."""
    if settings.kubeconfig:
        if not Path(settings.kubeconfig).is_file():
            raise UsageError(f"--kubeconfig: file {settings.kubeconfig} does not exist")
        return "kubeconfig", settings.kubeconfig
    env = os.environ.get(runtime.KUBECONFIG)
    if env:
        first = env.split(os.pathsep)[0]
        if not Path(first).is_file():
            raise UsageError(f"KUBECONFIG: file {first} does not exist")
        return "kubeconfig", first
    if os.environ.get(runtime.KUBERNETES_SERVICE_HOST) and Path(IN_CLUSTER_TOKEN).is_file():
        return "in-cluster", None
    home = Path.home() / ".kube" / "config"
    if home.is_file():
        return "kubeconfig", str(home)
    raise UsageError(
        "no Kubernetes configuration: pass --kubeconfig, set KUBECONFIG, or run in a pod with a service account"
    )


def api_client(settings: KubeSettings | None = None):
    """A fresh ``kubernetes.client.ApiClient``; never touches the library's global default configuration."""
    import urllib3
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    settings = settings or KubeSettings.from_env()
    source, path = _config_source(settings)
    cfg = client.Configuration()
    try:
        if source == "in-cluster":
            config.load_incluster_config(client_configuration=cfg)
        else:
            config.load_kube_config(
                config_file=path, context=settings.context, client_configuration=cfg, persist_config=False
            )
    except ConfigException as err:
        where = "in-cluster service account" if source == "in-cluster" else path
        raise UsageError(f"Kubernetes configuration {where}: {err}") from None
    except (TypeError, ValueError, KeyError, AttributeError) as err:  # a file that is not a kubeconfig
        where = "in-cluster service account" if source == "in-cluster" else path
        raise UsageError(
            f"Kubernetes configuration {where}: expected a kubeconfig (a YAML mapping with clusters, users"
            f" and contexts), could not read it ({type(err).__name__}: {err})"
        ) from None
    # Bounded retries for connection errors only: a request the server received is never replayed here.
    cfg.retries = urllib3.Retry(
        total=settings.retries, connect=settings.retries, read=0, status=0, other=0, backoff_factor=0.3
    )
    return client.ApiClient(configuration=cfg)


# --------------------------------------------------------------------------------------------------
# The client


@dataclass
class WatchEvent:
    type: str  # ADDED, MODIFIED, DELETED, BOOKMARK
    object: dict[str, Any]


@dataclass
class KubeClient:
    """Dict-in, dict-out access to any resource, with the settings' timeouts on every request."""

    settings: KubeSettings = field(default_factory=KubeSettings.from_env)
    api: Any = None  # kubernetes.client.ApiClient; built from the settings when not given

    def __post_init__(self) -> None:
        if self.api is None:
            self.api = api_client(self.settings)
        self._types: dict[tuple[str, str], ResourceType] = dict(KNOWN)
        self._discovered: set[str] = set()

    @property
    def host(self) -> str:
        return self.api.configuration.host

    def close(self) -> None:
        self.api.close()

    def __enter__(self) -> KubeClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- low level ---------------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, Any] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout: tuple[float, float] | None = None,
        stream: bool = False,
        what: str = "",
    ):
        """One HTTP request; returns the decoded JSON body (or the raw response when ``stream``)."""
        from kubernetes.client.exceptions import ApiException

        params = [(k, v) for k, v in (query or {}).items() if v is not None and v != ""]
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        method_, url, headers, body_, _ = self.api.param_serialize(
            method=method,
            resource_path=path,
            query_params=params,
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        try:
            resp = self.api.call_api(
                method_,
                url,
                header_params=headers,
                body=body_,
                _request_timeout=timeout or self.settings.timeout,
            )
        except ApiException as err:  # raised by the REST layer for some transport-level failures
            raise self._error(err.status, err.body, what or path) from None
        except Exception as err:
            raise self._transport_error(err, what or path) from None
        if stream:
            if not 200 <= resp.status <= 299:
                data = resp.read()
                raise self._error(resp.status, data, what or path)
            return resp.response
        try:
            data = resp.read()
        except Exception as err:
            raise self._transport_error(err, what or path) from None
        if not 200 <= resp.status <= 299:
            raise self._error(resp.status, data, what or path)
        return json.loads(data) if data else {}

    def _transport_error(self, err: Exception, what: str) -> KubeError:
        detail = str(err).splitlines()[0][:300] if str(err) else type(err).__name__
        return KubeUnavailable(f"{what}: Kubernetes API at {self.host} did not answer: {detail}")

    @staticmethod
    def _error(status: int | None, body: Any, what: str) -> KubeError:
        message = ""
        if isinstance(body, bytes | bytearray):
            body = body.decode("utf-8", "replace")
        if isinstance(body, str) and body:
            try:
                message = json.loads(body).get("message", "") or body
            except (ValueError, AttributeError):
                message = body
        message = " ".join(str(message).split())[:500]
        text = f"{what}: {message}" if message else f"{what}: HTTP {status}"
        cls: type[KubeError]
        if status == 404:
            cls = NotFound
        elif status == 409:
            cls = AlreadyExists
        elif status in (401, 403):
            cls = Forbidden
        elif status in (400, 422):
            cls = Invalid
        elif status == 410:
            cls = _Gone
        elif status is None or status == 429 or status >= 500:
            cls = KubeUnavailable
        else:
            cls = RequestFailed
        err = cls(text)
        err.status = status
        return err

    # -- resource types ----------------------------------------------------------------------------

    def resource(self, api_version: str, kind: str) -> ResourceType:
        """The REST type of ``kind`` in ``api_version``: the built-in table, then API discovery."""
        key = (api_version, kind)
        if key in self._types:
            return self._types[key]
        if api_version not in self._discovered:
            self._discover(api_version)
        if key in self._types:
            return self._types[key]
        return ResourceType(api_version, kind, guess_plural(kind), True)

    def _discover(self, api_version: str) -> list[ResourceType]:
        path = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
        found: list[ResourceType] = []
        try:
            doc = self.request("GET", path, what=f"discovery of {api_version}")
        except KubeError:
            self._discovered.add(api_version)
            return found
        for res in doc.get("resources") or []:
            if "/" in res.get("name", ""):
                continue  # subresources
            rt = ResourceType(api_version, res["kind"], res["name"], bool(res.get("namespaced", True)))
            self._types.setdefault((api_version, rt.kind), rt)
            found.append(rt)
        self._discovered.add(api_version)
        return found

    def namespaced_types(self) -> list[ResourceType]:
        """Every listable namespaced kind the server serves, once per group and kind, or the built-in
        table when discovery fails.

        Every served version of every group is read, not only the preferred ones: a kind may be served
        only at a version that is not its group's preferred one (Kubernetes 1.20 serves CronJobs only at
        ``batch/v1beta1`` while batch prefers ``v1``). Each kind is taken at its group's preferred version
        when that version serves it, else at the newest version that does (:func:`version_priority`).
        Capture uses this so that custom resources (an operator's database object) are exported too.
        """
        candidates: list[tuple[str, str, bool]] = []  # (group, version, preferred by the group)
        try:
            core = self.request("GET", "/api", what="discovery")
            candidates += [("", v, True) for v in core.get("versions") or ["v1"]]
            groups = self.request("GET", "/apis", what="discovery")
            for g in groups.get("groups") or []:
                name = g.get("name") or ""
                pref = (g.get("preferredVersion") or {}).get("version")
                served = [v.get("version") for v in g.get("versions") or [] if v.get("version")]
                if pref and pref not in served:
                    served.insert(0, pref)
                candidates += [(name, v, v == pref) for v in served]
        except KubeError:
            candidates = []
        chosen: dict[tuple[str, str], tuple[tuple, ResourceType]] = {}
        for group, version, preferred in candidates:
            api_version = f"{group}/{version}" if group else version
            path = f"/api/{api_version}" if not group else f"/apis/{api_version}"
            try:
                doc = self.request("GET", path, what=f"discovery of {api_version}")
            except KubeError:
                continue
            for res in doc.get("resources") or []:
                verbs = res.get("verbs") or []
                if "/" in res.get("name", "") or not res.get("namespaced") or "list" not in verbs:
                    continue
                rt = ResourceType(api_version, res["kind"], res["name"], True)
                self._types.setdefault((api_version, rt.kind), rt)
                rank = (preferred, version_priority(version))
                current = chosen.get((group, rt.kind))
                if current is None or rank > current[0]:
                    chosen[(group, rt.kind)] = (rank, rt)
        types = [rt for _rank, rt in chosen.values()]
        if not types:
            seen: set[str] = set()
            for t in KNOWN_TYPES:
                if t.namespaced and t.kind not in seen:
                    seen.add(t.kind)
                    types.append(t)
        return types

    # -- CRUD --------------------------------------------------------------------------------------

    @staticmethod
    def _what(kind: str, name: str | None, namespace: str | None) -> str:
        ref = f"{kind}/{name}" if name else kind
        return f"{ref} in namespace {namespace}" if namespace else ref

    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> dict:
        rt = self.resource(api_version, kind)
        return self.request("GET", rt.path(namespace, name), what=self._what(kind, name, namespace))

    def get_or_none(
        self, api_version: str, kind: str, name: str, namespace: str | None = None
    ) -> dict | None:
        try:
            return self.get(api_version, kind, name, namespace)
        except NotFound:
            return None

    def list(
        self,
        api_version: str,
        kind: str,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> tuple[list[dict], str]:
        """The items (each with apiVersion and kind filled in) and the list's resourceVersion."""
        rt = self.resource(api_version, kind)
        doc = self.request(
            "GET",
            rt.path(namespace),
            query={"labelSelector": label_selector, "fieldSelector": field_selector},
            what=self._what(kind + " list", None, namespace),
        )
        items = doc.get("items") or []
        for item in items:
            item.setdefault("apiVersion", api_version)
            item.setdefault("kind", kind)
        return items, (doc.get("metadata") or {}).get("resourceVersion", "")

    def create(self, obj: dict, namespace: str | None = None) -> dict:
        meta = obj.get("metadata") or {}
        ns = namespace or meta.get("namespace")
        rt = self.resource(obj["apiVersion"], obj["kind"])
        return self.request("POST", rt.path(ns), body=obj, what=self._what(obj["kind"], meta.get("name"), ns))

    def replace(self, obj: dict) -> dict:
        meta = obj["metadata"]
        rt = self.resource(obj["apiVersion"], obj["kind"])
        ns = meta.get("namespace")
        return self.request(
            "PUT", rt.path(ns, meta["name"]), body=obj, what=self._what(obj["kind"], meta["name"], ns)
        )

    def patch(
        self,
        api_version: str,
        kind: str,
        name: str,
        namespace: str | None,
        patch: Any,
        patch_type: str = "merge",
    ) -> dict:
        """``patch_type``: ``merge`` (RFC 7386) or ``json`` (RFC 6902, a list of operations)."""
        content_type = {
            "merge": "application/merge-patch+json",
            "json": "application/json-patch+json",
            "strategic": "application/strategic-merge-patch+json",
        }[patch_type]
        rt = self.resource(api_version, kind)
        return self.request(
            "PATCH",
            rt.path(namespace, name),
            body=patch,
            content_type=content_type,
            what=self._what(kind, name, namespace),
        )

    def delete(
        self,
        api_version: str,
        kind: str,
        name: str,
        namespace: str | None = None,
        propagation: str = "Background",
    ) -> bool:
        """Delete one object; False when it did not exist (deleting is idempotent)."""
        rt = self.resource(api_version, kind)
        try:
            self.request(
                "DELETE",
                rt.path(namespace, name),
                body={"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": propagation},
                what=self._what(kind, name, namespace),
            )
        except NotFound:
            return False
        return True

    # -- watch -------------------------------------------------------------------------------------

    def watch(
        self,
        api_version: str,
        kind: str,
        namespace: str | None = None,
        *,
        resource_version: str = "",
        label_selector: str | None = None,
        field_selector: str | None = None,
        timeout_s: float = 60.0,
    ) -> Iterator[WatchEvent]:
        """Events after ``resource_version`` until the server ends the stream (at most ``timeout_s``)."""
        rt = self.resource(api_version, kind)
        server_timeout = max(1, int(timeout_s))
        what = self._what(f"watch of {kind}", None, namespace)
        resp = self.request(
            "GET",
            rt.path(namespace),
            query={
                "watch": "true",
                "resourceVersion": resource_version,
                "labelSelector": label_selector,
                "fieldSelector": field_selector,
                "timeoutSeconds": server_timeout,
                "allowWatchBookmarks": "true",
            },
            # the read timeout guards against a server that neither sends nor closes
            timeout=(self.settings.connect_timeout, server_timeout + self.settings.read_timeout),
            stream=True,
            what=what,
        )
        buf = b""
        try:
            for chunk in resp.stream(4096, decode_content=True):
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if line.strip():
                        yield self._watch_event(line, what)
            if buf.strip():
                yield self._watch_event(buf, what)
        except KubeError:
            raise
        except Exception as err:
            raise self._transport_error(err, what) from None
        finally:
            resp.release_conn()

    def _watch_event(self, line: bytes, what: str) -> WatchEvent:
        ev = json.loads(line)
        obj = ev.get("object") or {}
        if ev.get("type") == "ERROR":
            raise self._error(obj.get("code"), json.dumps(obj), what)
        return WatchEvent(ev.get("type", ""), obj)

    def _follow(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        deadline: float,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> Iterator[tuple[list[dict], WatchEvent | None]]:
        """List, then watch from the list's resourceVersion until ``deadline`` (``time.monotonic()``):
        yields ``(items, None)`` after each list and ``([], event)`` for each event but bookmarks. Lists
        again when the server ends a watch with 410 Gone, or was unavailable for a moment; a list that
        fails raises. The caller stops iterating once it has what it waits for, or the deadline passed."""
        rv = ""
        relist = True
        while True:
            if relist:
                items, rv = self.list(
                    api_version, kind, namespace, label_selector=label_selector, field_selector=field_selector
                )
                yield items, None
                relist = False
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            try:
                for ev in self.watch(
                    api_version,
                    kind,
                    namespace,
                    resource_version=rv,
                    label_selector=label_selector,
                    field_selector=field_selector,
                    timeout_s=min(remaining, 300.0),
                ):
                    meta = ev.object.get("metadata") or {}
                    if meta.get("resourceVersion"):
                        rv = meta["resourceVersion"]
                    if ev.type != "BOOKMARK":
                        yield [], ev
            except _Gone:
                relist = True
            except KubeUnavailable:
                if time.monotonic() >= deadline:
                    return
                time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
                relist = True

    def wait_for(
        self,
        api_version: str,
        kind: str,
        name: str,
        namespace: str | None,
        predicate: Callable[[dict | None], bool],
        timeout_s: float,
        on_timeout: Callable[[dict | None], SnapflowError] | None = None,
    ) -> dict | None:
        """Watch one object until ``predicate(obj)`` (obj None once deleted) holds; the object then.

        The predicate may raise to stop early (a snapshot that reports an error). On timeout, raises
        ``on_timeout(last_seen)`` or a :class:`KubeUnavailable`. Watches rather than polls: one request
        per ``timeout_s`` at most, resumed from the last resourceVersion when the server closes it.
        """
        deadline = time.monotonic() + timeout_s
        obj: dict | None = None
        for items, ev in self._follow(
            api_version, kind, namespace, deadline, field_selector=f"metadata.name={name}"
        ):
            if ev is None:
                obj = next((i for i in items if i.get("metadata", {}).get("name") == name), None)
            elif (ev.object.get("metadata") or {}).get("name") != name:
                continue
            else:
                obj = None if ev.type == "DELETED" else ev.object
            if predicate(obj):
                return obj
            if ev is not None and time.monotonic() >= deadline:
                break
        if on_timeout is not None:
            raise on_timeout(obj)
        raise KubeUnavailable(f"{self._what(kind, name, namespace)}: not ready after {timeout_s:g}s")

    def wait_for_all(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        names: list[str],
        done: Callable[[dict], bool],
        timeout_s: float,
        *,
        label_selector: str | None = None,
        on_timeout: Callable[[dict[str, dict]], SnapflowError] | None = None,
    ) -> dict[str, dict]:
        """Watch several objects (one stream, narrowed by ``label_selector``) until ``done`` holds for
        each; returns the objects by name. ``done`` may raise to stop early. A deleted object counts as
        not done. On timeout raises ``on_timeout(last_seen_by_name)`` or :class:`KubeUnavailable`."""
        deadline = time.monotonic() + timeout_s
        wanted = set(names)
        seen: dict[str, dict] = {}
        finished: set[str] = set()

        def consider(obj: dict | None, name: str) -> None:
            if obj is None:
                seen.pop(name, None)
                finished.discard(name)
                return
            seen[name] = obj
            if done(obj):
                finished.add(name)
            else:
                finished.discard(name)

        for items, ev in self._follow(api_version, kind, namespace, deadline, label_selector=label_selector):
            if ev is None:
                present = {i["metadata"]["name"]: i for i in items if i["metadata"].get("name") in wanted}
                for name in wanted:
                    consider(present.get(name), name)
            else:
                name = (ev.object.get("metadata") or {}).get("name")
                if name not in wanted:
                    continue
                consider(None if ev.type == "DELETED" else ev.object, name)
            if finished >= wanted:
                return {n: seen[n] for n in names}
            if ev is not None and time.monotonic() >= deadline:
                break
        if on_timeout is not None:
            raise on_timeout(dict(seen))
        missing = ", ".join(sorted(wanted - finished))
        raise KubeUnavailable(f"{kind} {missing} in namespace {namespace}: not ready after {timeout_s:g}s")

    # -- helpers used by several steps -------------------------------------------------------------

    def events_for(self, namespace: str, kind: str, name: str, limit: int = 5) -> list[str]:
        """The most recent events about one object, as ``Reason: message`` strings, newest first."""
        try:
            items, _ = self.list(
                "v1",
                "Event",
                namespace,
                field_selector=f"involvedObject.kind={kind},involvedObject.name={name}",
            )
        except KubeError:
            return []
        items = [
            i
            for i in items
            if (i.get("involvedObject") or {}).get("name") == name
            and (i.get("involvedObject") or {}).get("kind") == kind
        ]

        def when(e: dict) -> tuple[str, int]:
            stamp = (
                e.get("lastTimestamp")
                or e.get("eventTime")
                or (e.get("metadata") or {}).get("creationTimestamp")
            )
            rv = str((e.get("metadata") or {}).get("resourceVersion") or "0")
            return str(stamp or ""), int(rv) if rv.isdigit() else 0

        items.sort(key=when, reverse=True)
        return [
            f"{e.get('reason', '')}: {' '.join(str(e.get('message', '')).split())}" for e in items[:limit]
        ]

    def pod_log(self, namespace: str, name: str, container: str | None = None, tail_lines: int = 20) -> str:
        """The last lines a pod's container wrote."""
        rt = self.resource("v1", "Pod")
        resp = self.request(
            "GET",
            rt.path(namespace, name, "log"),
            query={"container": container, "tailLines": tail_lines},
            stream=True,
            what=f"log of pod {name} in namespace {namespace}",
        )
        try:
            return resp.read().decode("utf-8", "replace")
        finally:
            resp.release_conn()

    def can_i(
        self,
        verb: str,
        resource: str,
        namespace: str | None,
        group: str = "",
        subresource: str = "",
        *,
        service_account: str = "",
        name: str = "",
    ) -> bool:
        """May the current identity (a SelfSubjectAccessReview), or ServiceAccount ``service_account``
        (``NS/NAME``: a SubjectAccessReview), ``verb`` ``resource`` (the object ``name``, if given) in
        ``namespace``?"""
        attributes = {
            k: v
            for k, v in {
                "verb": verb,
                "resource": resource,
                "group": group,
                "namespace": namespace,
                "subresource": subresource,
                "name": name,
            }.items()
            if v
        }
        if service_account:
            ns, _, name = service_account.partition("/")
            review = {
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SubjectAccessReview",
                "spec": {
                    "user": f"system:serviceaccount:{ns}:{name}",
                    "groups": [
                        "system:serviceaccounts",
                        f"system:serviceaccounts:{ns}",
                        "system:authenticated",
                    ],
                    "resourceAttributes": attributes,
                },
            }
        else:
            review = {
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SelfSubjectAccessReview",
                "spec": {"resourceAttributes": attributes},
            }
        out = self.create(review)
        return bool((out.get("status") or {}).get("allowed"))
