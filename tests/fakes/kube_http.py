"""HTTP layer of the fake Kubernetes API server (aiohttp): discovery, CRUD, list, watch streams,
patch kinds, /status and /scale, delete with propagation, access reviews, pods/log and pods/exec.

`build_app(server)` returns the aiohttp application; `server` is the FakeKubeAPI facade (store,
registry, identities, injected faults, request log, exec settings).
"""

from __future__ import annotations

import asyncio
import copy
import json
import time
from typing import TYPE_CHECKING

import yaml
from aiohttp import web

from tests.fakes import kube_rbac
from tests.fakes.kube_gatekeeper import REQUESTER
from tests.fakes.kube_objects import (
    ApiError,
    PatchError,
    SelectorError,
    bad_request,
    get_path,
    invalid,
    json_patch,
    merge_patch,
    parse_field_selector,
    parse_label_selector,
    selector_to_string,
    strategic_merge_patch,
)
from tests.fakes.kube_resources import ResourceType

if TYPE_CHECKING:
    from tests.fakes.kubeapi import FakeKubeAPI

_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    410: "Expired",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


def status_error(code: int, message: str, reason: str | None = None) -> ApiError:
    return ApiError(code, reason or _REASONS.get(code, "Unknown"), message)


def json_response(body: dict, status: int = 200) -> web.Response:
    return web.Response(status=status, text=json.dumps(body), content_type="application/json")


def _truthy(value: str | None) -> bool:
    return (value or "").lower() in ("true", "1", "yes")


class Route:
    """What a request path names."""

    def __init__(self):
        self.group = ""
        self.version = ""
        self.namespace: str | None = None
        self.plural = ""
        self.name: str | None = None
        self.subresource: str | None = None
        self.legacy_watch = False


def parse_route(parts: list[str]) -> Route:
    """parts: the path after /api/v1 or /apis/<group>/<version>."""
    route = Route()
    if parts and parts[0] == "watch":
        route.legacy_watch = True
        parts = parts[1:]
    if not parts:
        raise status_error(404, "the server could not find the requested resource")
    if (
        parts[0] == "namespaces"
        and len(parts) >= 3
        and not (len(parts) == 3 and parts[2] in ("status", "finalize"))
    ):
        route.namespace = parts[1]
        parts = parts[2:]
    route.plural = parts[0]
    if len(parts) >= 2:
        route.name = parts[1]
    if len(parts) >= 3:
        route.subresource = parts[2]
    if len(parts) > 3:
        raise status_error(404, "the server could not find the requested resource")
    return route


class Handlers:
    def __init__(self, server: FakeKubeAPI):
        self.server = server

    @property
    def store(self):
        return self.server.store

    @property
    def registry(self):
        return self.server.registry

    # -- entry point ----------------------------------------------------------------------------------

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        self.server.requests.append((request.method, request.path_qs))
        try:
            who = self._authenticate(request)
            REQUESTER.set(who)  # for admission steps that review the requester (kube_gatekeeper)
            path = request.path.rstrip("/") or "/"
            if path in ("/healthz", "/readyz", "/livez"):
                return web.Response(text="ok")
            if path == "/version":
                return json_response(self.server.version_info)
            if path == "/api":
                return json_response(self._api_versions(request))
            if path == "/apis":
                return json_response(self._group_list())
            parts = [p for p in path.split("/") if p]
            if parts[0] == "api" and len(parts) >= 2:
                group, version, rest = "", parts[1], parts[2:]
            elif parts[0] == "apis" and len(parts) >= 2:
                group = parts[1]
                if len(parts) == 2:
                    return json_response(self._group(group))
                version, rest = parts[2], parts[3:]
            else:
                raise status_error(404, "the server could not find the requested resource")
            if not rest:
                return json_response(self._resource_list(group, version))
            route = parse_route(rest)
            route.group, route.version = group, version
            rtype = self.registry.route(group, version, route.plural)
            if rtype is None:
                raise status_error(404, "the server could not find the requested resource")
            if rtype.namespaced is False and route.namespace is not None:
                raise status_error(404, "the server could not find the requested resource")
            self._authorize(request, who, rtype, route)
            fault = self.server._take_fault(request.method, rtype, route)
            if fault is not None:
                if fault.delay:
                    await asyncio.sleep(fault.delay)
                if fault.status:
                    raise status_error(fault.status, fault.message or f"injected failure ({fault.status})")
            return await self._resource(request, rtype, route, who)
        except ApiError as error:
            return json_response(error.status(), error.code)
        except SelectorError as error:
            return json_response(bad_request(str(error)).status(), 400)
        except (asyncio.CancelledError, ConnectionResetError):
            raise
        except Exception as error:
            self.server.errors.append(error)
            return json_response(status_error(500, f"Internal error occurred: {error!r}").status(), 500)

    def _authenticate(self, request: web.Request) -> kube_rbac.Identity:
        header = request.headers.get("Authorization", "")
        token = header[7:].strip() if header.lower().startswith("bearer ") else None
        if self.server.token is None and not token:
            return kube_rbac.Identity("system:admin", [kube_rbac.SYSTEM_MASTERS, "system:authenticated"])
        who = self.server.identities.get(token or "")
        if who is None:
            raise status_error(401, "Unauthorized")
        return who

    def _authorize(
        self, request: web.Request, who: kube_rbac.Identity, rtype: ResourceType, route: Route
    ) -> None:
        if not self.server.enforce_rbac or who.is_admin:
            return
        verb = self._verb(request, route)
        attrs = kube_rbac.Attributes(
            verb=verb,
            api_group=rtype.group,
            resource=rtype.plural,
            subresource=route.subresource or "",
            namespace=route.namespace or "",
            name=route.name or "",
        )
        ok, _ = kube_rbac.allowed(self.store, self.registry, who, attrs)
        if not ok:
            scope = f' in the namespace "{route.namespace}"' if route.namespace else " at the cluster scope"
            resource = f"{rtype.plural}/{route.subresource}" if route.subresource else rtype.plural
            raise ApiError(
                403,
                "Forbidden",
                f"{rtype.qualified}{(' ' + chr(34) + route.name + chr(34)) if route.name else ''} is forbidden: "
                f'User "{who.user}" cannot {verb} resource "{resource}" in API group "{rtype.group}"{scope}',
                {"name": route.name or "", "group": rtype.group, "kind": rtype.plural},
            )

    @staticmethod
    def _verb(request: web.Request, route: Route) -> str:
        method = request.method
        if route.subresource == "exec":
            return "create"
        if method == "GET":
            if route.name is None:
                return "watch" if route.legacy_watch or _truthy(request.query.get("watch")) else "list"
            return "get"
        return {
            "POST": "create",
            "PUT": "update",
            "PATCH": "patch",
            "DELETE": "delete" if route.name else "deletecollection",
        }.get(method, method.lower())

    # -- discovery ------------------------------------------------------------------------------------

    def _api_versions(self, request: web.Request) -> dict:
        return {
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": request.host}],
        }

    def _group(self, group: str) -> dict:
        versions = self.registry.groups().get(group)
        if not versions:
            raise status_error(404, "the server could not find the requested resource")
        return {
            "kind": "APIGroup",
            "apiVersion": "v1",
            "name": group,
            "versions": [{"groupVersion": f"{group}/{v}", "version": v} for v in versions],
            "preferredVersion": {"groupVersion": f"{group}/{versions[0]}", "version": versions[0]},
        }

    def _group_list(self) -> dict:
        groups = [self._group(g) for g in self.registry.groups()]
        for g in groups:
            g.pop("kind")
            g.pop("apiVersion")
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}

    def _resource_list(self, group: str, version: str) -> dict:
        types = self.registry.in_group_version(group, version)
        if not types:
            raise status_error(404, "the server could not find the requested resource")
        resources = [
            entry for rtype in sorted(types, key=lambda r: r.plural) for entry in rtype.discovery_entries()
        ]
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version,
            "resources": resources,
        }

    # -- resources ------------------------------------------------------------------------------------

    async def _body(self, request: web.Request) -> object:
        raw = await request.read()
        if not raw.strip():
            return None
        content_type = request.headers.get("Content-Type", "")
        try:
            if "yaml" in content_type:
                return yaml.safe_load(raw)
            return json.loads(raw)
        except (ValueError, yaml.YAMLError) as error:
            raise bad_request(f"the request body is not valid JSON: {error}") from None

    def _served(self, rtype: ResourceType, obj: dict, version: str) -> dict:
        return rtype.to_served(obj, version)

    async def _resource(
        self, request: web.Request, rtype: ResourceType, route: Route, who
    ) -> web.StreamResponse:
        method, query = request.method, request.query
        dry_run = "All" in query.getall("dryRun", [])
        version = route.version
        if route.subresource == "exec" and rtype.key == ("", "pods"):
            return await self.server._exec.handle(request, route.namespace, route.name)
        if route.name is None:
            if method == "GET":
                if route.legacy_watch or _truthy(query.get("watch")):
                    return await self._watch(request, rtype, route)
                return json_response(self._list(rtype, route, query))
            if method == "POST":
                if "create" not in rtype.verbs:
                    raise status_error(405, f"create is not supported on {rtype.qualified}")
                body = await self._body(request)
                if rtype.group == "authentication.k8s.io":
                    answer = self.server.review_token(body or {})
                    answer["apiVersion"], answer["kind"] = rtype.api_version(version), rtype.kind
                    return json_response(answer, 201)
                if rtype.group == "authorization.k8s.io":
                    answer = kube_rbac.review(
                        self.store, self.registry, rtype.kind, body or {}, who, route.namespace
                    )
                    answer["apiVersion"], answer["kind"] = rtype.api_version(version), rtype.kind
                    return json_response(answer, 201)
                self._check_kind(rtype, body, version)
                created = self.store.create(
                    rtype, route.namespace, rtype.to_storage(body, version), dry_run=dry_run
                )
                return json_response(self._served(rtype, created, version), 201)
            if method == "DELETE":
                return json_response(self._delete_collection(rtype, route, query, dry_run))
            raise status_error(405, "the server does not allow this method on the requested resource")
        sub = route.subresource
        if sub is None:
            if method == "GET":
                return json_response(
                    self._served(rtype, self.store.get(rtype, route.namespace, route.name), version)
                )
            if method == "PUT":
                body = await self._body(request)
                self._check_kind(rtype, body, version)
                updated = self.store.replace(
                    rtype, route.namespace, route.name, rtype.to_storage(body, version), dry_run=dry_run
                )
                return json_response(self._served(rtype, updated, version))
            if method == "PATCH":
                return await self._patch(request, rtype, route, dry_run)
            if method == "DELETE":
                return await self._delete(request, rtype, route, dry_run)
            raise status_error(405, "the server does not allow this method on the requested resource")
        if sub == "status" and rtype.status:
            if method == "GET":
                return json_response(
                    self._served(rtype, self.store.get(rtype, route.namespace, route.name), version)
                )
            if method == "PUT":
                body = await self._body(request)
                updated = self.store.replace(
                    rtype,
                    route.namespace,
                    route.name,
                    rtype.to_storage(body or {}, version),
                    subresource="status",
                    dry_run=dry_run,
                    require_resource_version=False,
                )
                return json_response(self._served(rtype, updated, version))
            if method == "PATCH":
                return await self._patch(request, rtype, route, dry_run, subresource="status")
        if sub == "token" and rtype.key == ("", "serviceaccounts") and method == "POST":
            self.store.get(rtype, route.namespace, route.name)  # 404 for an unknown ServiceAccount
            body = await self._body(request)
            answer = self.server.request_token(route.namespace or "", route.name, body or {})
            answer["apiVersion"], answer["kind"] = "authentication.k8s.io/v1", "TokenRequest"
            return json_response(answer, 201)
        if sub == "scale" and rtype.scale:
            return await self._scale(request, rtype, route, dry_run)
        if sub == "log" and rtype.key == ("", "pods"):
            self.store.get(rtype, route.namespace, route.name)
            text = self.server.pod_logs.get((route.namespace, route.name, query.get("container")), None)
            if text is None:
                text = self.server.pod_logs.get((route.namespace, route.name, None), "")
            if query.get("tailLines"):
                lines = text.splitlines(keepends=True)
                text = "".join(lines[-int(query["tailLines"]) :])
            return web.Response(text=text, content_type="text/plain")
        if sub == "finalize" and rtype.key == ("", "namespaces") and method == "PUT":
            body = await self._body(request) or {}
            finalizers = get_path(body, "spec", "finalizers", default=[]) or []
            updated = self.store.mutate(
                rtype,
                None,
                route.name,
                lambda o: o.setdefault("spec", {}).__setitem__("finalizers", finalizers),
            )
            if updated is None:
                raise status_error(404, f'namespaces "{route.name}" not found')
            return json_response(self._served(rtype, updated, version))
        raise status_error(404, "the server could not find the requested resource")

    def _check_kind(self, rtype: ResourceType, body: object, version: str) -> None:
        if not isinstance(body, dict):
            raise bad_request("the request body must be a JSON object")
        kind = body.get("kind")
        if kind and kind != rtype.kind:
            raise bad_request(f"the kind of the object ({kind}) does not match the resource ({rtype.kind})")
        api_version = body.get("apiVersion")
        if api_version and api_version.split("/")[0] != rtype.api_version(version).split("/")[0]:
            raise bad_request(
                f"the API version in the data ({api_version}) does not match the expected API version "
                f"({rtype.api_version(version)})"
            )

    def _list(self, rtype: ResourceType, route: Route, query) -> dict:
        labels = parse_label_selector(query.get("labelSelector"))
        fields = parse_field_selector(query.get("fieldSelector"))
        limit = int(query["limit"]) if query.get("limit") else None
        items, list_meta = self.store.list(
            rtype, route.namespace, labels, fields, limit, query.get("continue")
        )
        served = []
        for item in items:
            out = self._served(rtype, item, route.version)
            if rtype.builtin:
                out.pop("kind", None)
                out.pop("apiVersion", None)
            served.append(out)
        return {
            "kind": f"{rtype.kind}List",
            "apiVersion": rtype.api_version(route.version),
            "metadata": list_meta,
            "items": served,
        }

    async def _watch(self, request: web.Request, rtype: ResourceType, route: Route) -> web.StreamResponse:
        query = request.query
        labels = parse_label_selector(query.get("labelSelector"))
        fields = parse_field_selector(query.get("fieldSelector"))
        timeout = float(query["timeoutSeconds"]) if query.get("timeoutSeconds") else None
        stream, initial = self.store.watch(
            rtype, route.namespace, labels, fields, query.get("resourceVersion"), route.version
        )
        response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        self.server._streams.add(stream)
        try:
            await response.prepare(request)
            deadline = time.monotonic() + timeout if timeout else None
            for kind, obj in initial:
                await response.write(json.dumps({"type": kind, "object": obj}).encode() + b"\n")
                if kind == "ERROR":
                    return response
            while True:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(stream.queue.get(), remaining)
                except TimeoutError:
                    break
                if item is None:
                    break
                kind, obj = item
                await response.write(json.dumps({"type": kind, "object": obj}).encode() + b"\n")
            await response.write_eof()
        finally:
            self.store.unwatch(stream)
            self.server._streams.discard(stream)
        return response

    async def _patch(
        self,
        request: web.Request,
        rtype: ResourceType,
        route: Route,
        dry_run: bool,
        subresource: str | None = None,
    ) -> web.Response:
        content_type = (
            request.headers.get("Content-Type", "application/merge-patch+json").split(";")[0].strip()
        )
        patch = await self._body(request)
        version = route.version
        if content_type == "application/apply-patch+yaml":
            if not request.query.get("fieldManager"):
                raise bad_request("PATCH with apply-patch requires a fieldManager")
            if self.store.peek(rtype, route.namespace, route.name) is None:
                body = copy.deepcopy(patch or {})
                body.setdefault("metadata", {})["name"] = route.name
                created = self.store.create(
                    rtype, route.namespace, rtype.to_storage(body, version), dry_run=dry_run
                )
                return json_response(self._served(rtype, created, version), 201)
        if content_type == "application/json-patch+json":
            if not isinstance(patch, list):
                raise bad_request("a JSON patch must be a list of operations")

            def apply_patch(current: dict) -> dict:
                return json_patch(current, patch)
        elif content_type in ("application/merge-patch+json", "application/json"):
            if not isinstance(patch, dict):
                raise bad_request("a merge patch must be a JSON object")

            def apply_patch(current: dict) -> dict:
                return merge_patch(current, patch)
        elif content_type in ("application/strategic-merge-patch+json", "application/apply-patch+yaml"):
            if not isinstance(patch, dict):
                raise bad_request("a strategic merge patch must be a JSON object")
            if content_type.startswith("application/strategic") and not rtype.builtin:
                raise ApiError(
                    415,
                    "UnsupportedMediaType",
                    "the body of the request was in an unknown format - accepted media types include: "
                    "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
                )

            def apply_patch(current: dict) -> dict:
                return strategic_merge_patch(current, patch)
        else:
            raise ApiError(
                415,
                "UnsupportedMediaType",
                f"the body of the request was in an unknown format - {content_type}",
            )

        def in_version(current: dict) -> dict:
            try:
                patched = apply_patch(rtype.to_served(current, version))
            except PatchError as error:
                raise invalid(
                    rtype.kind, rtype.group, route.name, [{"field": "patch", "message": str(error)}]
                ) from None
            if not isinstance(patched, dict):
                raise bad_request("the patch must produce a JSON object")
            return rtype.to_storage(patched, version)

        updated = self.store.patch(
            rtype, route.namespace, route.name, in_version, subresource=subresource, dry_run=dry_run
        )
        return json_response(self._served(rtype, updated, version))

    async def _delete_options(self, request: web.Request) -> dict:
        options = {}
        body = await self._body(request)
        if isinstance(body, dict):
            options.update(body)
        for key in ("propagationPolicy", "gracePeriodSeconds"):
            if key in request.query:
                options.setdefault(key, request.query[key])
        if "orphanDependents" in options and "propagationPolicy" not in options:
            orphan = options["orphanDependents"]
            options["propagationPolicy"] = "Orphan" if orphan in (True, "true") else "Background"
        return options

    async def _delete(
        self, request: web.Request, rtype: ResourceType, route: Route, dry_run: bool
    ) -> web.Response:
        options = await self._delete_options(request)
        obj, deleted = self.store.delete(
            rtype,
            route.namespace,
            route.name,
            propagation=options.get("propagationPolicy"),
            preconditions=options.get("preconditions"),
            dry_run=dry_run or "All" in (options.get("dryRun") or []),
        )
        if deleted and not rtype.delete_returns_object:
            details = {"name": route.name, "kind": rtype.plural, "uid": obj["metadata"]["uid"]}
            if rtype.group:
                details["group"] = rtype.group
            return json_response(
                {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "metadata": {},
                    "status": "Success",
                    "details": details,
                }
            )
        return json_response(self._served(rtype, obj, route.version))

    def _delete_collection(self, rtype: ResourceType, route: Route, query, dry_run: bool) -> dict:
        labels = parse_label_selector(query.get("labelSelector"))
        fields = parse_field_selector(query.get("fieldSelector"))
        items, list_meta = self.store.list(rtype, route.namespace, labels, fields)
        for item in items:
            if (
                self.store.peek(rtype, item["metadata"].get("namespace"), item["metadata"]["name"])
                is not None
            ):
                self.store.delete(
                    rtype,
                    item["metadata"].get("namespace"),
                    item["metadata"]["name"],
                    propagation=query.get("propagationPolicy"),
                    dry_run=dry_run,
                )
        return {
            "kind": f"{rtype.kind}List",
            "apiVersion": rtype.api_version(route.version),
            "metadata": list_meta,
            "items": [self._served(rtype, i, route.version) for i in items],
        }

    # -- scale ----------------------------------------------------------------------------------------

    def _scale_of(self, rtype: ResourceType, obj: dict) -> dict:
        selector = get_path(obj, *rtype.scale_selector_path)
        if isinstance(selector, dict):
            selector = selector_to_string(selector)
        status = {"replicas": get_path(obj, *rtype.scale_status_path, default=0) or 0}
        if selector:
            status["selector"] = selector
        meta = obj["metadata"]
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                k: meta[k]
                for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                if k in meta
            },
            "spec": {"replicas": get_path(obj, *rtype.scale_replicas_path, default=0) or 0},
            "status": status,
        }

    async def _scale(
        self, request: web.Request, rtype: ResourceType, route: Route, dry_run: bool
    ) -> web.Response:
        current = self.store.get(rtype, route.namespace, route.name)
        scale = self._scale_of(rtype, current)
        if request.method == "GET":
            return json_response(scale)
        body = await self._body(request)
        if request.method == "PUT":
            new_scale = body
        elif request.method == "PATCH":
            content_type = request.headers.get("Content-Type", "").split(";")[0].strip()
            try:
                new_scale = (
                    json_patch(scale, body)
                    if content_type == "application/json-patch+json"
                    else merge_patch(scale, body)
                )
            except PatchError as error:
                raise invalid(
                    "Scale", "autoscaling", route.name, [{"field": "patch", "message": str(error)}]
                ) from None
        else:
            raise status_error(405, "the server does not allow this method on the requested resource")
        if not isinstance(new_scale, dict):
            raise bad_request("the request body must be a JSON object")
        replicas = get_path(new_scale, "spec", "replicas")
        if not isinstance(replicas, int) or replicas < 0:
            raise invalid(
                "Scale",
                "autoscaling",
                route.name,
                [
                    {
                        "field": "spec.replicas",
                        "message": f"Invalid value: {replicas!r}: must be greater than or equal to 0",
                    }
                ],
            )
        want_rv = get_path(new_scale, "metadata", "resourceVersion")

        def set_replicas(obj: dict) -> dict:
            if want_rv:
                obj["metadata"]["resourceVersion"] = want_rv
            node = obj
            for part in rtype.scale_replicas_path[:-1]:
                node = node.setdefault(part, {})
            node[rtype.scale_replicas_path[-1]] = replicas
            return obj

        updated = self.store.patch(rtype, route.namespace, route.name, set_replicas, dry_run=dry_run)
        return json_response(self._scale_of(rtype, updated))


def build_app(server: FakeKubeAPI) -> web.Application:
    handlers = Handlers(server)
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", handlers.dispatch)
    return app
