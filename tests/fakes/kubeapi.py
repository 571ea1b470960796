"""A fake Kubernetes API server for tests: real HTTP and WebSocket on 127.0.0.1, so the real
`kubernetes` client (typed APIs, CustomObjectsApi, DynamicClient, watch.Watch, stream.stream) is
used unchanged, with no patching.

What it serves (aiohttp, one server in a background thread, a free port, bearer-token auth):
- discovery (/api, /api/v1, /apis, /apis/<group>[/<version>], /version) for every registered kind:
  core/v1, apps, batch, rbac, storage, networking, policy, ... , snapshot.storage.k8s.io/v1,
  groupsnapshot.storage.k8s.io v1beta1/v1beta2/v1, argoproj.io/v1alpha1, plus kinds a test
  registers (`register_kind`) or a CustomResourceDefinition creates;
- create / get / list / replace / patch (merge, strategic merge, JSON patch, apply) / delete /
  deletecollection, /status and /scale, label and field selectors, limit/continue, dryRun=All;
  a global resourceVersion, 409 AlreadyExists and Conflict, 404 NotFound, 422 Invalid as Status
  objects; uid, creationTimestamp and generation set by the server; finalizers, owner-reference
  cascades (Background, Foreground, Orphan), namespace termination deleting the contents;
- list responses whose items carry no kind/apiVersion for built-in kinds (as the real server's);
- watch (`?watch=true`): newline-delimited JSON events honouring resourceVersion (resumed from it; an
  ERROR event with a 410 Expired Status for one older than the kept window, `history_limit` events, or
  after `compact_history()`), timeoutSeconds and selectors;
- a Service's requested `spec.clusterIP` that another Service holds (or outside 10.96.0.0/12) is
  422 Invalid, as from the real allocator;
- garbage collection: an ownerReference names its owner by kind, name and uid in the DEPENDENT's
  namespace (a cluster-scoped owner at the cluster scope); a dependent whose owners are all absent
  there is deleted, dangling references next to a live owner are removed;
- server profiles (`profile=`): "current" (1.33) and "1.20", which serves CronJobs only at
  batch/v1beta1, Ingresses at networking.k8s.io/v1 and v1beta1 and at extensions/v1beta1 (one object,
  same uid, in both groups), PodDisruptionBudgets at policy/v1beta1, with a 1.20's preferred versions
  in discovery (see kube_resources.profile_types);
- simulated controllers (tests/fakes/workloads.py, tests/fakes/csi.py): pods run, Deployments /
  StatefulSets / DaemonSets / Jobs create pods, Services get IPs and Endpoints; PVCs are backed by
  directories; VolumeSnapshots and VolumeGroupSnapshots copy them at the cut, with injectable
  delays and failures (`server.storage.behave(...)`);
- pods/exec over WebSocket (v5/v4 channel protocol) running the command as a local process
  (tests/fakes/exec_ws.py), SubjectAccessReviews and optional RBAC enforcement;
- ServiceAccount tokens: TokenRequest (``POST .../serviceaccounts/NAME/token``, audience-bound, with an
  expiry) and TokenReview (``authentication.k8s.io/v1``), as a service checking a client's token uses it.

Example:

    from kubernetes import client, stream
    from tests.fakes.kubeapi import FakeKubeAPI

    with FakeKubeAPI() as server:
        api = client.CoreV1Api(server.api_client())
        api.create_namespace({"metadata": {"name": "app"}})
        api.create_namespaced_persistent_volume_claim("app", {
            "metadata": {"name": "data"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
        })
        server.wait_for("pvc", "data", "app", lambda o: o["status"]["phase"] == "Bound")
        (server.volume_path("app", "data") / "hello").write_text("hi")
        server.create({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "db", "namespace": "app"},
                       "spec": {"containers": [{"name": "db", "image": "postgres"}]}})
        server.wait_for("pods", "db", "app", lambda o: o["status"]["phase"] == "Running")
        out = stream.stream(api.connect_get_namespaced_pod_exec, "db", "app",
                            command=["sh", "-c", "echo $HOSTNAME"], stdout=True, stderr=True)
        assert out == "db\\n"

In pytest use the fixtures of tests/fixtures/kube.py: `kube_server`, `kube_client`, `kubeconfig`.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import os
import shutil
import socket
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml
from aiohttp import web

from tests.fakes.csi import SnapshotBehavior, StorageSimulator
from tests.fakes.exec_ws import ExecService, ExecSession, ExecSettings, PodExec
from tests.fakes.kube_http import build_app
from tests.fakes.kube_objects import (
    ApiError,
    invalid,
    merge_patch,
    parse_label_selector,
    random_suffix,
    rfc3339,
)
from tests.fakes.kube_rbac import SYSTEM_MASTERS, Identity, service_account_identity
from tests.fakes.kube_resources import (
    VERSION_INFO_1_20,
    Registry,
    ResourceType,
    create_only_types,
    profile_types,
)
from tests.fakes.kube_store import Store
from tests.fakes.workloads import ClusterSimulator, PodRunner

__all__ = [
    "ApiError",
    "ExecSession",
    "FakeKubeAPI",
    "PodExec",
    "SnapshotBehavior",
]

DEFAULT_TOKEN = "fake-kube-token"
API_AUDIENCE = "https://kubernetes.default.svc.cluster.local"


@dataclass
class IssuedToken:
    identity: Identity
    audiences: list[str]
    expires: float  # epoch seconds


@dataclass
class Fault:
    method: str
    resource: str
    name: str | None
    subresource: str | None
    status: int
    message: str | None
    count: int
    delay: float

    def matches(self, method: str, rtype: ResourceType, name: str | None, subresource: str | None) -> bool:
        return (
            self.count > 0
            and self.method in ("*", method)
            and self.resource in ("*", rtype.plural, rtype.qualified, rtype.kind)
            and (self.name is None or self.name == name)
            and (self.subresource is None or self.subresource == (subresource or ""))
        )


class FakeKubeAPI:
    """The fake API server. Start it (or use it as a context manager), point clients at it with
    `api_client()` / `configuration()` / `write_kubeconfig()`, seed and inspect state with
    `create` / `get` / `list` / `patch` / `delete` / `wait_for`, steer controllers through
    `storage` (StorageSimulator), `cluster` (ClusterSimulator) and the exec helpers."""

    def __init__(
        self,
        root: str | Path | None = None,
        *,
        token: str | None = DEFAULT_TOKEN,
        seed: bool = True,
        history_limit: int = 10000,
        enforce_rbac: bool = False,
        profile: str = "current",
    ):
        self._own_root = root is None
        self.root = Path(root) if root is not None else Path(tempfile.mkdtemp(prefix="fake-kube-"))
        self.root.mkdir(parents=True, exist_ok=True)
        self.token = token
        self.identities: dict[str, Identity] = {}
        self.issued_tokens: dict[str, IssuedToken] = {}  # TokenRequest answers, for TokenReview
        if token:
            self.identities[token] = Identity("system:admin", [SYSTEM_MASTERS, "system:authenticated"])
        self.enforce_rbac = enforce_rbac
        self.profile = profile
        self.registry = Registry()
        for rtype in profile_types(profile) + create_only_types():
            self.registry.register(rtype)
        self.store = Store(self.registry, history_limit)
        self.store.listeners.append(self.store.collect_garbage)
        self.requests: deque[tuple[str, str]] = deque(maxlen=20000)
        self.faults: list[Fault] = []
        self.pod_logs: dict[tuple[str, str, str | None], str] = {}
        self.version_info = {
            "major": "1",
            "minor": "33",
            "gitVersion": "v1.33.0",
            "gitCommit": "0" * 40,
            "gitTreeState": "clean",
            "buildDate": "2025-04-23T00:00:00Z",
            "goVersion": "go1.24.2",
            "compiler": "gc",
            "platform": "linux/amd64",
        }
        if profile == "1.20":
            self.version_info = dict(VERSION_INFO_1_20)
        self._exec = ExecService(self)
        self.cluster = ClusterSimulator(self)
        self.storage = StorageSimulator(self)
        self.cluster.install()
        self.storage.install()
        self.store.listeners.append(self._pod_gone)
        self._seed = seed
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._tasks: set[asyncio.Task] = set()
        self._streams: set = set()
        self.port: int | None = None
        self.errors: list[BaseException] = []
        """Exceptions raised inside the fake (controllers, request handlers): bugs of the fake."""

    # -- lifecycle ------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("the fake Kubernetes API server is not started")
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeKubeAPI:
        if self._thread is not None:
            return self
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop
            self.store.loop = loop
            try:
                loop.run_until_complete(self._serve())
            except BaseException as error:  # reported to start()
                failure.append(error)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=run, name="fake-kube-api", daemon=True)
        self._thread.start()
        if not ready.wait(30):
            raise RuntimeError("the fake Kubernetes API server did not start within 30 s")
        if failure:
            self._thread = None
            raise RuntimeError(f"the fake Kubernetes API server failed to start: {failure[0]}") from failure[
                0
            ]
        return self

    async def _serve(self) -> None:
        if self._seed:
            self.cluster.seed()
            self.storage.seed()
        app = build_app(self)
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        site = web.SockSite(self._runner, sock)
        await site.start()

    def stop(self) -> None:
        """Stop serving, end watches and exec sessions (killing their processes), stop controllers;
        remove the state directory when the server created it."""
        if self._thread is None or self._loop is None:
            return
        loop = self._loop
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout=30)
        except Exception:
            pass
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(timeout=30)
        self._thread = None
        self._loop = None
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    async def _shutdown(self) -> None:
        for stream in list(self._streams):
            stream.close()
        for task in list(self._tasks):
            task.cancel()
        await self._exec.shutdown()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)
        if self._runner is not None:
            await self._runner.cleanup()

    def __enter__(self) -> FakeKubeAPI:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _spawn(self, coro) -> asyncio.Task:
        """Run a controller coroutine on the server loop (from the loop thread)."""
        task = asyncio.ensure_future(coro, loop=self._loop)
        self._tasks.add(task)

        def done(t: asyncio.Task) -> None:
            self._tasks.discard(t)
            if not t.cancelled() and t.exception() is not None:
                self.errors.append(t.exception())

        task.add_done_callback(done)
        return task

    def _pod_gone(self, event) -> None:
        if event.type == "DELETED" and event.rtype.key == ("", "pods"):
            meta = event.obj["metadata"]
            self._exec.kill_pod(meta.get("namespace", ""), meta["name"])

    def call(self, fn: Callable, *args, **kwargs):
        """Run `fn` on the server thread (where the store lives) and return its result."""
        if self._loop is None or threading.current_thread() is self._thread:
            return fn(*args, **kwargs)

        async def run():
            return fn(*args, **kwargs)

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout=30)

    # -- clients --------------------------------------------------------------------------------------

    def configuration(self, token: str | None = None):
        """A kubernetes.client.Configuration for this server (plain http, bearer token)."""
        from kubernetes import client

        config = client.Configuration()
        config.host = self.url
        token = token or self.token
        if token:
            config.api_key = {"BearerToken": token}
            config.api_key_prefix = {"BearerToken": "Bearer"}
        config.verify_ssl = False
        return config

    def api_client(self, token: str | None = None):
        from kubernetes import client

        return client.ApiClient(self.configuration(token))

    def write_kubeconfig(
        self, path: str | Path, namespace: str = "default", token: str | None = None
    ) -> Path:
        """A kubeconfig file with one context pointing at this server (for config.load_kube_config)."""
        path = Path(path)
        user: dict = {"token": token or self.token} if (token or self.token) else {}
        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": user}],
            "contexts": [
                {"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": namespace}}
            ],
            "current-context": "fake",
        }
        path.write_text(yaml.safe_dump(doc))
        return path

    def add_token(self, token: str, user: str, groups: list[str] | None = None) -> str:
        self.identities[token] = Identity(user, list(groups or ["system:authenticated"]))
        return token

    def service_account_token(self, namespace: str, name: str) -> str:
        """A bearer token that authenticates as the ServiceAccount (RBAC applies with enforce_rbac)."""
        token = f"sa-{namespace}-{name}-{random_suffix(8)}"
        self.identities[token] = service_account_identity(namespace, name)
        return token

    def request_token(self, namespace: str, name: str, body: dict) -> dict:
        """Answer a TokenRequest (``POST .../serviceaccounts/NAME/token``): a new token bound to the
        requested audiences (the API server's own when none) and lifetime (at least 600 s, as the real
        server enforces). Only a token for the API server's audience authenticates requests to it; the
        others are for TokenReview by the service named in the audience."""
        spec = body.get("spec") if isinstance(body, dict) else None
        spec = spec if isinstance(spec, dict) else {}
        audiences = [a for a in spec.get("audiences") or [] if isinstance(a, str) and a]
        seconds = spec.get("expirationSeconds") or 3600
        if not isinstance(seconds, int) or seconds < 600:
            raise invalid(
                "TokenRequest",
                "authentication.k8s.io",
                name,
                [
                    {
                        "field": "spec.expirationSeconds",
                        "message": "may not specify a duration less than 10 minutes",
                    }
                ],
            )
        token = f"tr-{namespace}-{name}-{random_suffix(16)}"
        expires = time.time() + seconds
        who = service_account_identity(namespace, name)
        self.issued_tokens[token] = IssuedToken(who, audiences or [API_AUDIENCE], expires)
        if not audiences:
            self.identities[token] = who
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires))
        return {
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"audiences": audiences or [API_AUDIENCE], "expirationSeconds": seconds},
            "status": {"token": token, "expirationTimestamp": stamp},
        }

    def review_token(self, body: dict) -> dict:
        """Answer a TokenReview: who the token is, if it was issued here, is unexpired and is meant for one
        of the requested audiences."""
        spec = body.get("spec") if isinstance(body, dict) else None
        spec = spec if isinstance(spec, dict) else {}
        token, wanted = spec.get("token") or "", [a for a in spec.get("audiences") or [] if a]
        issued = self.issued_tokens.get(token)
        if issued is None and token in self.identities:
            issued = IssuedToken(self.identities[token], [API_AUDIENCE], float("inf"))
        status: dict = {"authenticated": False}
        if issued is None:
            status["error"] = "invalid bearer token"
        elif issued.expires < time.time():
            status["error"] = "token has expired"
        else:
            common = [a for a in issued.audiences if a in (wanted or [API_AUDIENCE])]
            if not common:
                status["error"] = "token audiences is invalid for the target audiences"
            else:
                status = {
                    "authenticated": True,
                    "user": {"username": issued.identity.user, "groups": list(issued.identity.groups)},
                    "audiences": common,
                }
        return {"spec": spec, "status": status}

    # -- state for tests ------------------------------------------------------------------------------

    def resource(self, resource: str) -> ResourceType:
        return self.registry.resolve(resource)

    def _locate(self, obj: dict) -> ResourceType:
        api_version, kind = obj.get("apiVersion"), obj.get("kind")
        if not api_version or not kind:
            raise ValueError("the object needs apiVersion and kind")
        return self.registry.resolve(f"{api_version}/{kind}")

    def create(self, obj: dict, namespace: str | None = None, *, ensure_namespace: bool = True) -> dict:
        """Create an object as a client would (admission, validation, controllers react), but keep a
        status it carries. A missing namespace is created first unless ensure_namespace=False."""
        rtype = self._locate(obj)
        version = obj["apiVersion"].rpartition("/")[2]
        namespace = namespace or obj.get("metadata", {}).get("namespace")
        if rtype.namespaced and not namespace:
            namespace = "default"

        def do() -> dict:
            ns_type = self.registry.resolve("namespaces")
            if rtype.namespaced and ensure_namespace and self.store.peek(ns_type, None, namespace) is None:
                self.store.create(ns_type, None, {"metadata": {"name": namespace}})
            created = self.store.create(rtype, namespace, rtype.to_storage(obj, version), keep_status=True)
            return rtype.to_served(created, version)

        return self.call(do)

    def apply(self, obj: dict, namespace: str | None = None) -> dict:
        """Create, or replace the existing object's content (keeping its identity)."""
        rtype = self._locate(obj)
        name = obj["metadata"]["name"]
        namespace = namespace or obj["metadata"].get("namespace") or ("default" if rtype.namespaced else None)
        if self.get(rtype.qualified, name, namespace) is None:
            return self.create(obj, namespace)
        version = obj["apiVersion"].rpartition("/")[2]

        def do() -> dict:
            body = rtype.to_storage(obj, version)
            body.setdefault("metadata", {}).pop("resourceVersion", None)
            updated = self.store.replace(rtype, namespace, name, body, require_resource_version=False)
            if "status" in obj and rtype.status:
                updated = self.store.set_status(rtype, namespace, name, body.get("status"))
            return rtype.to_served(updated, version)

        return self.call(do)

    def get(self, resource: str, name: str, namespace: str | None = None) -> dict | None:
        """The object (stored form) or None. `resource`: plural, Kind, short name or plural.group."""
        rtype = self.registry.resolve(resource)

        def do():
            obj = self.store.peek(rtype, namespace, name)
            return copy.deepcopy(obj)

        return self.call(do)

    def list(
        self, resource: str, namespace: str | None = None, label_selector: str | None = None
    ) -> list[dict]:
        rtype = self.registry.resolve(resource)
        labels = parse_label_selector(label_selector)

        def do():
            return [
                copy.deepcopy(o)
                for o in self.store.items(rtype, namespace)
                if labels(o["metadata"].get("labels") or {})
            ]

        return self.call(do)

    def patch(self, resource: str, name: str, patch: dict, namespace: str | None = None) -> dict:
        """Merge-patch an object, status included (no preconditions)."""
        rtype = self.registry.resolve(resource)

        def change(obj: dict) -> None:
            patched = merge_patch(obj, patch)
            obj.clear()
            obj.update(patched)

        def do():
            result = self.store.mutate(rtype, namespace, name, change)
            if result is None:
                raise KeyError(
                    f"{rtype.qualified} {namespace + '/' if namespace else ''}{name} does not exist"
                )
            return result

        return self.call(do)

    def set_status(self, resource: str, name: str, status: dict | None, namespace: str | None = None) -> dict:
        rtype = self.registry.resolve(resource)
        return self.call(self.store.set_status, rtype, namespace, name, status)

    def delete(
        self, resource: str, name: str, namespace: str | None = None, propagation: str | None = None
    ) -> bool:
        """Delete as a client would; False if it did not exist."""
        rtype = self.registry.resolve(resource)

        def do():
            if self.store.peek(rtype, namespace, name) is None:
                return False
            self.store.delete(rtype, namespace, name, propagation=propagation)
            return True

        return self.call(do)

    def wait_for(
        self,
        resource: str,
        name: str,
        namespace: str | None = None,
        condition: Callable[[dict], bool] | None = None,
        timeout: float = 30.0,
        gone: bool = False,
    ) -> dict | None:
        """Poll until the object exists and `condition(obj)` holds (or, with gone=True, until it no
        longer exists). Raises TimeoutError quoting the last state seen."""
        deadline = time.monotonic() + timeout
        last = None
        while True:
            last = self.get(resource, name, namespace)
            if gone and last is None:
                return None
            if not gone and last is not None:
                try:
                    if condition is None or condition(last):
                        return last
                except (KeyError, TypeError, IndexError):
                    pass
            if time.monotonic() > deadline:
                where = f"{namespace}/{name}" if namespace else name
                state = "still exists" if gone else f"last state: {last!r}"
                raise TimeoutError(
                    f"{resource} {where} did not reach the expected state within {timeout} s; {state}"
                )
            time.sleep(0.01)

    def register_kind(
        self,
        group: str,
        version: str,
        kind: str,
        plural: str | None = None,
        *,
        namespaced: bool = True,
        status: bool = True,
        scale: bool = False,
        short_names: tuple[str, ...] = (),
    ) -> ResourceType:
        """Serve one more kind (as a custom resource)."""
        rtype = ResourceType(
            group=group,
            versions=(version,),
            kind=kind,
            plural=plural or kind.lower() + "s",
            namespaced=namespaced,
            status=status,
            scale=scale,
            short_names=short_names,
            builtin=False,
            delete_returns_object=True,
        )
        return self.call(self.registry.register, rtype)

    def compact_history(self) -> None:
        """Forget the watch history: watches from an older resourceVersion get 410 Expired."""
        self.call(self.store.compact)

    @property
    def resource_version(self) -> int:
        return self.store.rv

    def fail_next(
        self,
        method: str = "*",
        resource: str = "*",
        status: int = 500,
        *,
        count: int = 1,
        name: str | None = None,
        subresource: str | None = None,
        message: str | None = None,
        delay: float = 0.0,
    ) -> Fault:
        """Make the next `count` matching requests fail with `status` (0 = only delay them)."""
        fault = Fault(
            method.upper() if method != "*" else "*",
            resource,
            name,
            subresource,
            status,
            message,
            count,
            delay,
        )
        self.faults.append(fault)
        return fault

    def _take_fault(self, method: str, rtype: ResourceType, route) -> Fault | None:
        for fault in self.faults:
            if fault.matches(method, rtype, route.name, route.subresource):
                fault.count -= 1
                return fault
        return None

    # -- events ---------------------------------------------------------------------------------------

    def record_event(
        self, involved: dict, reason: str, message: str, type: str = "Warning", component: str = "fake-kube"
    ) -> None:
        """Record (or count again) a core/v1 Event about `involved`, as controllers do."""

        def do() -> None:
            events = self.registry.resolve("events")
            meta = involved["metadata"]
            namespace = meta.get("namespace") or "default"
            for existing in self.store.items(events, namespace):
                ref = existing.get("involvedObject") or {}
                if (
                    ref.get("uid") == meta.get("uid")
                    and existing.get("reason") == reason
                    and existing.get("message") == message
                ):
                    self.store.mutate(
                        events,
                        namespace,
                        existing["metadata"]["name"],
                        lambda e: e.update(count=e.get("count", 1) + 1, lastTimestamp=rfc3339()),
                    )
                    return
            ns_type = self.registry.resolve("namespaces")
            if self.store.peek(ns_type, None, namespace) is None:
                return
            now = rfc3339()
            body = {
                "metadata": {"name": f"{meta['name']}.{os.urandom(8).hex()}", "namespace": namespace},
                "involvedObject": {
                    "apiVersion": involved.get("apiVersion"),
                    "kind": involved.get("kind"),
                    "name": meta["name"],
                    "namespace": meta.get("namespace"),
                    "uid": meta.get("uid"),
                    "resourceVersion": meta.get("resourceVersion"),
                },
                "reason": reason,
                "message": message,
                "type": type,
                "count": 1,
                "firstTimestamp": now,
                "lastTimestamp": now,
                "source": {"component": component},
                "reportingComponent": component,
                "reportingInstance": component,
            }
            body["involvedObject"] = {k: v for k, v in body["involvedObject"].items() if v is not None}
            with contextlib.suppress(ApiError):
                self.store.create(events, namespace, body)

        self.call(do)

    def events(
        self, namespace: str | None = None, involved: str | None = None, reason: str | None = None
    ) -> list[dict]:
        """Events, oldest first, optionally about the object named `involved` and/or with `reason`."""
        found = [
            e
            for e in self.list("events", namespace)
            if (involved is None or (e.get("involvedObject") or {}).get("name") == involved)
            and (reason is None or e.get("reason") == reason)
        ]
        return sorted(found, key=lambda e: int(e["metadata"]["resourceVersion"]))

    # -- storage --------------------------------------------------------------------------------------

    def volume_path(self, namespace: str, pvc: str) -> Path:
        """The directory (or, for volumeMode Block, the file) backing a bound claim."""
        return self.call(self.storage.volume_path, namespace, pvc)

    def snapshot_path(self, namespace: str, volumesnapshot: str) -> Path:
        """The directory holding a VolumeSnapshot's data once it is cut."""
        return self.call(self.storage.snapshot_path, namespace, volumesnapshot)

    def snapshot_behavior(self, mode: str = "ready", **kwargs) -> SnapshotBehavior:
        """Shortcut for storage.behave(): e.g. snapshot_behavior("never_ready", pvc="data")."""
        selectors = {k: kwargs.pop(k) for k in ("namespace", "pvc", "name", "count") if k in kwargs}
        return self.storage.behave(SnapshotBehavior(mode=mode, **kwargs), **selectors)

    # -- pods and exec --------------------------------------------------------------------------------

    def configure_exec(
        self,
        namespace: str,
        pod: str,
        *,
        env: dict[str, str] | None = None,
        cwd: str | Path | None = None,
        wrap: Callable[[list[str]], list[str]] | None = None,
        container: str | None = None,
    ) -> PodExec:
        """How exec into `pod` runs locally: extra env, working directory, a command wrapper
        (e.g. lambda cmd: ["runuser", "-u", "postgres", "--", *cmd])."""
        config = PodExec(env=dict(env or {}), cwd=cwd, wrap=wrap)
        self._exec.pods[(namespace, pod, container)] = config
        return config

    @property
    def exec_settings(self) -> ExecSettings:
        return self._exec.settings

    @property
    def exec_sessions(self) -> list[ExecSession]:
        return list(self._exec.sessions)

    def wait_exec_done(self, session: ExecSession, timeout: float = 10.0) -> int | None:
        deadline = time.monotonic() + timeout
        while session.running and time.monotonic() < deadline:
            time.sleep(0.01)
        if session.running:
            raise TimeoutError(
                f"exec {session.command} in {session.namespace}/{session.pod} still runs after {timeout} s"
            )
        return session.exit_code

    def set_pod_log(self, namespace: str, pod: str, text: str, container: str | None = None) -> None:
        self.pod_logs[(namespace, pod, container)] = text

    def set_pod_runner(self, runner: PodRunner | None) -> None:
        """Run pods' work locally: runner(pod, mounts) -> exit code (or None to keep running)."""
        self.cluster.pod_runner = runner

    def pod(
        self,
        namespace: str,
        name: str,
        containers: list[str] | None = None,
        labels: dict | None = None,
        image: str = "busybox",
        wait: bool = True,
        **spec,
    ) -> dict:
        """Create a pod with the given container names and wait until it runs."""
        body = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": dict(labels or {})},
            "spec": {"containers": [{"name": c, "image": image} for c in (containers or ["main"])], **spec},
        }
        self.create(body)
        if wait and self.cluster.auto_run_pods:
            return self.wait_for("pods", name, namespace, lambda p: p["status"]["phase"] == "Running")
        return self.get("pods", name, namespace)

    def pvc(
        self,
        namespace: str,
        name: str,
        size: str = "1Gi",
        labels: dict | None = None,
        wait: bool = True,
        **spec,
    ) -> dict:
        """Create a ReadWriteOnce claim and wait until it is bound."""
        body = {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "namespace": namespace, "labels": dict(labels or {})},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}, **spec},
        }
        self.create(body)
        if wait:
            return self.wait_for("pvc", name, namespace, lambda p: p["status"]["phase"] == "Bound")
        return self.get("pvc", name, namespace)
