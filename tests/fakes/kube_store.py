"""The object store behind the fake Kubernetes API server.

Holds every object in its stored form, hands out a global resourceVersion, keeps a bounded event
history for watches, runs admission hooks and validation, cascades deletions to dependents (owner
references) and honours finalizers. All methods run on the server's event-loop thread; the HTTP layer
and the simulated controllers call them directly, tests go through `FakeKubeAPI`.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from tests.fakes.kube_objects import (
    ApiError,
    already_exists,
    bad_request,
    conflict,
    forbidden,
    invalid,
    name_problem,
    not_found,
    random_suffix,
    rfc3339,
)
from tests.fakes.kube_resources import Registry, ResourceType

ADDED, MODIFIED, DELETED = "ADDED", "MODIFIED", "DELETED"

NAMESPACES = ("", "namespaces")


@dataclass
class StoreEvent:
    rv: int
    type: str
    rtype: ResourceType
    obj: dict
    old: dict | None


Admission = Callable[[str, ResourceType, dict, "dict | None"], None]
"""admission(operation, rtype, new, old): mutates `new` in place or raises ApiError. operation is
"CREATE" or "UPDATE"."""


class WatchStream:
    """One watch request: filtered events queued for the HTTP handler."""

    def __init__(self, rtype: ResourceType, namespace: str | None, labels, fields, version: str):
        self.rtype = rtype
        self.namespace = namespace
        self.labels = labels
        self.fields = fields
        self.version = version
        self.queue: asyncio.Queue = asyncio.Queue()
        self.closed = False

    def _matches(self, obj: dict | None) -> bool:
        if obj is None:
            return False
        if self.namespace and obj["metadata"].get("namespace") != self.namespace:
            return False
        return self.labels(obj["metadata"].get("labels") or {}) and self.fields(obj)

    def translate(self, event: StoreEvent) -> tuple[str, dict] | None:
        """The event as this watcher sees it: objects leaving the selection are DELETED, entering ADDED."""
        if event.rtype.storage_key != self.rtype.storage_key:
            return None
        now, before = self._matches(event.obj), self._matches(event.old)
        if event.type == ADDED:
            kind = ADDED if now else None
        elif event.type == DELETED:
            kind = DELETED if now or before else None
        elif now and before:
            kind = MODIFIED
        elif now:
            kind = ADDED
        elif before:
            kind = DELETED
        else:
            kind = None
        if kind is None:
            return None
        return kind, self.rtype.to_served(event.obj, self.version)

    def offer(self, event: StoreEvent) -> None:
        translated = self.translate(event)
        if translated is not None and not self.closed:
            self.queue.put_nowait(translated)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.queue.put_nowait(None)


class Store:
    def __init__(self, registry: Registry, history_limit: int = 10000):
        self.registry = registry
        self.rv = 1000
        self._objects: dict[tuple[str, str], dict[tuple[str, str], dict]] = {}
        self.history: deque[StoreEvent] = deque(maxlen=history_limit)
        self._oldest_kept = self.rv + 1
        self.watches: set[WatchStream] = set()
        self.listeners: list[Callable[[StoreEvent], None]] = []
        self.admission: list[Admission] = []
        self.loop: asyncio.AbstractEventLoop | None = None

    # -- reading ------------------------------------------------------------------------------------------

    def _bucket(self, rtype: ResourceType) -> dict[tuple[str, str], dict]:
        # a type serving another group's objects (extensions/v1beta1 Ingresses) reads and writes theirs
        return self._objects.setdefault(rtype.storage_key, {})

    def _key(self, rtype: ResourceType, namespace: str | None, name: str) -> tuple[str, str]:
        return ((namespace or "") if rtype.namespaced else "", name)

    def peek(self, rtype: ResourceType, namespace: str | None, name: str) -> dict | None:
        """The stored object itself (no copy) or None."""
        return self._bucket(rtype).get(self._key(rtype, namespace, name))

    def get(self, rtype: ResourceType, namespace: str | None, name: str) -> dict:
        obj = self.peek(rtype, namespace, name)
        if obj is None:
            raise not_found(rtype.plural, rtype.group, name)
        return copy.deepcopy(obj)

    def items(self, rtype: ResourceType, namespace: str | None = None) -> list[dict]:
        """Stored objects (no copies), sorted by namespace and name."""
        bucket = self._bucket(rtype)
        keys = sorted(k for k in bucket if not namespace or k[0] == namespace)
        return [bucket[k] for k in keys]

    def list(
        self,
        rtype: ResourceType,
        namespace: str | None,
        labels=None,
        fields=None,
        limit: int | None = None,
        continue_token: str | None = None,
    ) -> tuple[list[dict], dict]:
        """Copies of the matching objects and the list metadata (resourceVersion, continue)."""
        matched = [
            o
            for o in self.items(rtype, namespace)
            if (labels is None or labels(o["metadata"].get("labels") or {})) and (fields is None or fields(o))
        ]
        list_rv = self.rv
        if continue_token:
            try:
                state = json.loads(base64.urlsafe_b64decode(continue_token.encode()))
                after, list_rv = tuple(state["after"]), int(state["rv"])
            except (ValueError, KeyError, TypeError):
                raise bad_request(f"continue token {continue_token!r} is not valid") from None
            matched = [
                o for o in matched if (o["metadata"].get("namespace", ""), o["metadata"]["name"]) > after
            ]
        list_meta: dict = {"resourceVersion": str(list_rv)}
        if limit and len(matched) > limit:
            remaining = len(matched) - limit
            matched = matched[:limit]
            last = matched[-1]["metadata"]
            token = json.dumps({"after": [last.get("namespace", ""), last["name"]], "rv": list_rv})
            list_meta["continue"] = base64.urlsafe_b64encode(token.encode()).decode()
            list_meta["remainingItemCount"] = remaining
        return [copy.deepcopy(o) for o in matched], list_meta

    # -- watching -----------------------------------------------------------------------------------------

    def watch(
        self, rtype: ResourceType, namespace: str | None, labels, fields, since: str | None, version: str
    ) -> tuple[WatchStream, list[tuple[str, dict]]]:
        """Register a watch; returns it and the events to send first (synthetic ADDED, or the replay of
        the history after `since`, or a 410 ERROR when `since` is older than the kept history)."""
        stream = WatchStream(rtype, namespace, labels, fields, version)
        initial: list[tuple[str, dict]] = []
        if not since or since == "0":
            for obj in self.items(rtype, namespace):
                if stream._matches(obj):
                    initial.append((ADDED, rtype.to_served(obj, version)))
        else:
            try:
                since_rv = int(since)
            except ValueError:
                raise bad_request(f'resourceVersion "{since}" is not a valid resource version') from None
            if since_rv + 1 < self._oldest_kept and since_rv < self.rv:
                gone = ApiError(
                    410, "Expired", f"too old resource version: {since_rv} ({self._oldest_kept - 1})"
                )
                return stream, [("ERROR", gone.status())]
            for event in self.history:
                if event.rv > since_rv:
                    translated = stream.translate(event)
                    if translated:
                        initial.append(translated)
        self.watches.add(stream)
        return stream, initial

    def unwatch(self, stream: WatchStream) -> None:
        self.watches.discard(stream)
        stream.close()

    def compact(self) -> None:
        """Forget the event history: watches from any older resourceVersion get 410 Gone."""
        self.history.clear()
        self._oldest_kept = self.rv + 1

    # -- writing ------------------------------------------------------------------------------------------

    def _commit(self, rtype: ResourceType, kind: str, obj: dict, old: dict | None) -> dict:
        rtype = self.registry.canonical(rtype)
        normalize_stored(rtype, obj)
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        key = self._key(rtype, obj["metadata"].get("namespace"), obj["metadata"]["name"])
        if kind == DELETED:
            self._bucket(rtype).pop(key, None)
        else:
            self._bucket(rtype)[key] = obj
        if len(self.history) == self.history.maxlen:
            self._oldest_kept = self.history[1].rv if len(self.history) > 1 else self.rv
        event = StoreEvent(self.rv, kind, rtype, copy.deepcopy(obj), copy.deepcopy(old) if old else None)
        self.history.append(event)
        for stream in list(self.watches):
            stream.offer(event)
        for listener in list(self.listeners):
            if self.loop is not None:
                self.loop.call_soon(listener, event)
            else:
                listener(event)
        return copy.deepcopy(obj)

    def _check_namespace(self, rtype: ResourceType, namespace: str, name: str) -> None:
        ns = self.peek(self.registry.by_key(NAMESPACES), None, namespace)
        if ns is None:
            raise not_found("namespaces", "", namespace)
        if ns["metadata"].get("deletionTimestamp"):
            raise forbidden(
                rtype.plural,
                rtype.group,
                name,
                f"unable to create new content in namespace {namespace} because it is being terminated",
            )

    def _validate(self, rtype: ResourceType, new: dict, old: dict | None) -> None:
        rtype = self.registry.canonical(rtype)
        causes = []
        if rtype.validate:
            causes += rtype.validate(new, old)
        if old is not None and rtype.immutable:
            causes += rtype.immutable(new, old)
        if causes:
            raise invalid(rtype.kind, rtype.group, new["metadata"].get("name", ""), causes)

    def _admit(self, operation: str, rtype: ResourceType, new: dict, old: dict | None) -> None:
        rtype = self.registry.canonical(rtype)
        for hook in self.admission:
            hook(operation, rtype, new, old)

    def create(
        self,
        rtype: ResourceType,
        namespace: str | None,
        body: dict,
        *,
        dry_run: bool = False,
        keep_status: bool = False,
    ) -> dict:
        """POST. `keep_status` keeps a status given at creation (tests seeding objects); API requests to
        kinds with a status subresource have it dropped, as the real server does."""
        if not isinstance(body, dict):
            raise bad_request("the request body must be a JSON object")
        obj = copy.deepcopy(body)
        meta = obj.get("metadata")
        if not isinstance(meta, dict):
            meta = obj["metadata"] = {}
        if rtype.namespaced:
            body_ns = meta.get("namespace")
            if namespace and body_ns and body_ns != namespace:
                raise bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            namespace = namespace or body_ns
            if not namespace:
                raise bad_request("a namespace is required for a namespaced resource")
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        name = meta.get("name")
        if not name:
            if meta.get("generateName"):
                for _ in range(20):
                    name = meta["generateName"] + random_suffix()
                    if self.peek(rtype, namespace, name) is None:
                        break
                meta["name"] = name
            else:
                raise invalid(
                    rtype.kind,
                    rtype.group,
                    "",
                    [
                        {
                            "field": "metadata.name",
                            "message": "Required value: name or generateName is required",
                            "reason": "FieldValueRequired",
                        }
                    ],
                )
        problem = name_problem(name, rtype.name_rule)
        if problem:
            raise invalid(
                rtype.kind,
                rtype.group,
                name,
                [{"field": "metadata.name", "message": f'Invalid value: "{name}": {problem}'}],
            )
        if rtype.namespaced:
            self._check_namespace(rtype, namespace, name)
        if self.peek(rtype, namespace, name) is not None:
            raise already_exists(rtype.plural, rtype.group, name)
        for server_field in (
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "selfLink",
        ):
            meta.pop(server_field, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = rfc3339()
        meta["generation"] = 1
        obj["apiVersion"] = rtype.api_version()
        obj["kind"] = rtype.kind
        if rtype.status and not keep_status:
            obj.pop("status", None)
        self._admit("CREATE", rtype, obj, None)
        self._validate(rtype, obj, None)
        if dry_run:
            return copy.deepcopy(obj)
        return self._commit(rtype, ADDED, obj, None)

    def _preserve_server_fields(self, new: dict, cur: dict) -> None:
        meta, old_meta = new["metadata"], cur["metadata"]
        for key in (
            "uid",
            "creationTimestamp",
            "namespace",
            "name",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
        ):
            if key in old_meta:
                meta[key] = old_meta[key]
            else:
                meta.pop(key, None)
        meta.pop("generation", None)

    @staticmethod
    def _content(rtype: ResourceType, obj: dict) -> dict:
        skip = {"metadata", "apiVersion", "kind"}
        if rtype.status:
            skip.add("status")
        return {k: v for k, v in obj.items() if k not in skip}

    def replace(
        self,
        rtype: ResourceType,
        namespace: str | None,
        name: str,
        body: dict,
        *,
        subresource: str | None = None,
        dry_run: bool = False,
        require_resource_version: bool | None = None,
    ) -> dict:
        """PUT (main resource or /status)."""
        cur = self.peek(rtype, namespace, name)
        if cur is None:
            raise not_found(rtype.plural, rtype.group, name)
        if not isinstance(body, dict) or not isinstance(body.get("metadata", {}), dict):
            raise bad_request("the request body must be a JSON object")
        body_meta = body.get("metadata") or {}
        if body_meta.get("name") and body_meta["name"] != name:
            raise bad_request(
                f"the name of the object ({body_meta['name']}) does not match the name on the URL ({name})"
            )
        if (
            rtype.namespaced
            and body_meta.get("namespace")
            and body_meta["namespace"] != cur["metadata"].get("namespace")
        ):
            raise bad_request(
                "the namespace of the provided object does not match the namespace sent on the request"
            )
        want_rv = body_meta.get("resourceVersion")
        if want_rv:
            if want_rv != cur["metadata"]["resourceVersion"]:
                raise conflict(rtype.plural, rtype.group, name)
        elif require_resource_version if require_resource_version is not None else not rtype.builtin:
            raise invalid(
                rtype.kind,
                rtype.group,
                name,
                [
                    {
                        "field": "metadata.resourceVersion",
                        "message": "Invalid value: 0x0: must be specified for an update",
                    }
                ],
            )
        incoming = copy.deepcopy(body)
        incoming.setdefault("metadata", {})
        return self._write(rtype, incoming, cur, subresource, dry_run=dry_run)

    def _write(
        self, rtype: ResourceType, incoming: dict, cur: dict, subresource: str | None, *, dry_run: bool
    ) -> dict:
        """Store ``incoming`` (the client's object, owned by the store now) over ``cur``: through the status
        subresource only its status counts; through the main resource of a type with a status subresource,
        everything but its status."""
        if subresource == "status":
            new = copy.deepcopy(cur)
            if "status" in incoming:
                new["status"] = incoming["status"]
            else:
                new.pop("status", None)
        else:
            new = incoming
            if rtype.status:
                if "status" in cur:
                    new["status"] = copy.deepcopy(cur["status"])
                else:
                    new.pop("status", None)
        new["apiVersion"] = rtype.api_version()
        new["kind"] = rtype.kind
        self._preserve_server_fields(new, cur)
        return self._update(rtype, new, cur, dry_run=dry_run)

    def _update(self, rtype: ResourceType, new: dict, cur: dict, *, dry_run: bool = False) -> dict:
        generation = cur["metadata"].get("generation", 1)
        if self._content(rtype, new) != self._content(rtype, cur):
            generation += 1
        new["metadata"]["generation"] = generation
        self._admit("UPDATE", rtype, new, cur)
        self._validate(rtype, new, cur)
        new["metadata"]["resourceVersion"] = cur["metadata"]["resourceVersion"]
        if new == cur:
            return copy.deepcopy(cur)
        if dry_run:
            return copy.deepcopy(new)
        if new["metadata"].get("deletionTimestamp") and not pending_finalizers(rtype, new):
            return self._remove(rtype, new, cur)
        return self._commit(rtype, MODIFIED, new, cur)

    def patch(
        self,
        rtype: ResourceType,
        namespace: str | None,
        name: str,
        apply: Callable[[dict], dict],
        *,
        subresource: str | None = None,
        dry_run: bool = False,
    ) -> dict:
        """PATCH: `apply` maps the current (stored-form) object to the patched one."""
        cur = self.peek(rtype, namespace, name)
        if cur is None:
            raise not_found(rtype.plural, rtype.group, name)
        patched = apply(copy.deepcopy(cur))
        if not isinstance(patched, dict) or not isinstance(patched.get("metadata"), dict):
            raise bad_request("the patch would produce an object without metadata")
        want_rv = patched["metadata"].get("resourceVersion")
        if want_rv and want_rv != cur["metadata"]["resourceVersion"]:
            raise conflict(rtype.plural, rtype.group, name)
        if patched["metadata"].get("name", name) != name:
            raise bad_request(
                f"the name of the object ({patched['metadata']['name']}) does not match the name on the URL ({name})"
            )
        return self._write(rtype, patched, cur, subresource, dry_run=dry_run)

    def set_status(self, rtype: ResourceType, namespace: str | None, name: str, status: dict | None) -> dict:
        """Controllers' and tests' status writes (no preconditions)."""
        cur = self.peek(rtype, namespace, name)
        if cur is None:
            raise not_found(rtype.plural, rtype.group, name)
        new = copy.deepcopy(cur)
        if status is None:
            new.pop("status", None)
        else:
            new["status"] = copy.deepcopy(status)
        if new == cur:
            return copy.deepcopy(cur)
        return self._commit(rtype, MODIFIED, new, cur)

    def mutate(
        self, rtype: ResourceType, namespace: str | None, name: str, change: Callable[[dict], None]
    ) -> dict | None:
        """Controllers' read-modify-write of any part of an object; no-op if it is gone."""
        cur = self.peek(rtype, namespace, name)
        if cur is None:
            return None
        new = copy.deepcopy(cur)
        change(new)
        if new == cur:
            return copy.deepcopy(cur)
        generation = cur["metadata"].get("generation", 1)
        if self._content(rtype, new) != self._content(rtype, cur):
            new["metadata"]["generation"] = generation + 1
        if new["metadata"].get("deletionTimestamp") and not pending_finalizers(rtype, new):
            return self._remove(rtype, new, cur)
        return self._commit(rtype, MODIFIED, new, cur)

    def delete(
        self,
        rtype: ResourceType,
        namespace: str | None,
        name: str,
        *,
        propagation: str | None = None,
        preconditions: dict | None = None,
        dry_run: bool = False,
    ) -> tuple[dict, bool]:
        """DELETE. Returns (object, deleted_now). Objects with finalizers (and namespaces) are only marked
        with a deletionTimestamp; dependents are deleted (Background/Foreground) or orphaned."""
        cur = self.peek(rtype, namespace, name)
        if cur is None:
            raise not_found(rtype.plural, rtype.group, name)
        preconditions = preconditions or {}
        if preconditions.get("uid") and preconditions["uid"] != cur["metadata"]["uid"]:
            raise conflict(
                rtype.plural,
                rtype.group,
                name,
                f"Precondition failed: UID in precondition: {preconditions['uid']}, UID in object meta: {cur['metadata']['uid']}",
            )
        if (
            preconditions.get("resourceVersion")
            and preconditions["resourceVersion"] != cur["metadata"]["resourceVersion"]
        ):
            raise conflict(
                rtype.plural,
                rtype.group,
                name,
                f"Precondition failed: ResourceVersion in precondition: {preconditions['resourceVersion']}, "
                f"ResourceVersion in object meta: {cur['metadata']['resourceVersion']}",
            )
        if propagation not in (None, "Background", "Foreground", "Orphan"):
            raise bad_request(
                f"propagationPolicy {propagation!r} is not one of Background, Foreground, Orphan"
            )
        if dry_run:
            return copy.deepcopy(cur), False
        if pending_finalizers(rtype, cur):
            if cur["metadata"].get("deletionTimestamp"):
                return copy.deepcopy(cur), False
            new = copy.deepcopy(cur)
            new["metadata"]["deletionTimestamp"] = rfc3339()
            new["metadata"]["deletionGracePeriodSeconds"] = 0
            if rtype.key == NAMESPACES:
                new.setdefault("status", {})["phase"] = "Terminating"
            return self._commit(rtype, MODIFIED, new, cur), False
        uid = cur["metadata"]["uid"]
        if propagation == "Foreground":
            self._delete_dependents(uid, propagation)
        deleted = copy.deepcopy(cur)
        deleted["metadata"]["deletionTimestamp"] = deleted["metadata"].get("deletionTimestamp") or rfc3339()
        result = self._commit(rtype, DELETED, deleted, cur)
        if propagation == "Orphan":
            self._orphan_dependents(uid)
        elif propagation != "Foreground":
            self._delete_dependents(uid, "Background")
        return result, True

    def finalize(self, rtype: ResourceType, namespace: str | None, name: str) -> None:
        """Remove an object marked for deletion whose finalizers are all done (namespaces: spec too)."""
        cur = self.peek(rtype, namespace, name)
        if cur is None or not cur["metadata"].get("deletionTimestamp"):
            return
        if pending_finalizers(rtype, cur):
            return
        self._remove(rtype, copy.deepcopy(cur), cur)

    def _remove(self, rtype: ResourceType, final: dict, cur: dict) -> dict:
        result = self._commit(rtype, DELETED, final, cur)
        self._delete_dependents(cur["metadata"]["uid"], "Background")
        return result

    def dependents(self, uid: str) -> list[tuple[ResourceType, dict]]:
        found = []
        for rtype in self.registry.all():
            for obj in self.items(rtype):
                refs = obj["metadata"].get("ownerReferences") or []
                if any(ref.get("uid") == uid for ref in refs):
                    found.append((rtype, obj))
        return found

    def _delete_dependents(self, uid: str, propagation: str) -> None:
        for rtype, obj in self.dependents(uid):
            meta = obj["metadata"]
            if self.peek(rtype, meta.get("namespace"), meta["name"]) is None:
                continue
            remaining = [r for r in meta.get("ownerReferences") or [] if r.get("uid") != uid]
            if any(self._owner_exists(ref, meta.get("namespace")) for ref in remaining):
                self.mutate(
                    rtype,
                    meta.get("namespace"),
                    meta["name"],
                    lambda o, keep=remaining: o["metadata"].__setitem__("ownerReferences", keep),
                )
                continue
            self.delete(rtype, meta.get("namespace"), meta["name"], propagation=propagation)

    def _owner_exists(self, ref: dict, namespace: str | None) -> bool:
        return self._owner_state(ref, namespace) == "present"

    def _owner_state(self, ref: dict, namespace: str | None) -> str:
        """Whether the owner an ownerReference names exists, the way the garbage collector resolves it:
        by kind, name and uid, a namespaced owner in the DEPENDENT's namespace (``namespace``; None for a
        cluster-scoped dependent, which cannot have a namespaced owner), a cluster-scoped owner at the
        cluster scope. "present", "absent", or "unknown" when no served type has the reference's kind."""
        api_version = ref.get("apiVersion", "") if isinstance(ref, dict) else ""
        group = api_version.rpartition("/")[0] if "/" in api_version else ""
        rtypes = [
            r for r in self.registry.served() if r.kind == ref.get("kind") and r.group == group
        ] if isinstance(ref, dict) else []  # fmt: skip
        if not rtypes:
            return "unknown"
        for rtype in rtypes:
            if rtype.namespaced and not namespace:
                continue
            obj = self.peek(rtype, namespace, ref.get("name", ""))
            if obj is not None and obj["metadata"]["uid"] == ref.get("uid"):
                return "present"
        return "absent"

    def collect_garbage(self, event: StoreEvent) -> None:
        """The garbage collector's look at a written object with owner references: a reference whose
        owner is absent (no object of that kind and name with that uid in the dependent's namespace, or
        at the cluster scope for a cluster-scoped owner) is dangling. A dependent with only dangling
        references is deleted (Background); one with an owner left loses the dangling references."""
        if event.type == DELETED:
            return
        meta = event.obj["metadata"]
        rtype = self.registry.canonical(event.rtype)
        namespace = meta.get("namespace") if rtype.namespaced else None
        cur = self.peek(rtype, namespace, meta["name"])
        if cur is None or cur["metadata"].get("uid") != meta.get("uid"):
            return
        refs = cur["metadata"].get("ownerReferences") or []
        if not refs:
            return
        states = [self._owner_state(r, namespace) for r in refs]
        if "absent" not in states:
            return
        if all(state == "absent" for state in states):
            self.delete(rtype, namespace, meta["name"], propagation="Background")
            return
        keep = [r for r, state in zip(refs, states, strict=True) if state != "absent"]
        self.mutate(
            rtype, namespace, meta["name"], lambda o: o["metadata"].__setitem__("ownerReferences", keep)
        )

    def _orphan_dependents(self, uid: str) -> None:
        for rtype, obj in self.dependents(uid):
            meta = obj["metadata"]
            keep = [r for r in meta.get("ownerReferences") or [] if r.get("uid") != uid]
            self.mutate(
                rtype,
                meta.get("namespace"),
                meta["name"],
                lambda o, keep=keep: (
                    o["metadata"].__setitem__("ownerReferences", keep)
                    if keep
                    else o["metadata"].pop("ownerReferences", None)
                ),
            )

    def delete_all_in_namespace(self, namespace: str) -> None:
        for rtype in self.registry.all():
            if not rtype.namespaced:
                continue
            for obj in list(self.items(rtype, namespace)):
                if self.peek(rtype, namespace, obj["metadata"]["name"]) is not None:
                    self.delete(rtype, namespace, obj["metadata"]["name"])

    def find_by_uid(self, uid: str) -> tuple[ResourceType, dict] | None:
        for rtype in self.registry.all():
            for obj in self.items(rtype):
                if obj["metadata"].get("uid") == uid:
                    return rtype, obj
        return None


def normalize_stored(rtype: ResourceType, obj: dict) -> None:
    """What a real API server does to every object it stores: empty label/annotation maps are omitted
    (Go's omitempty), and a Secret's write-only ``stringData`` is merged into ``data`` (base64)."""
    meta = obj.get("metadata") or {}
    for field in ("labels", "annotations"):
        if field in meta and not meta[field]:
            del meta[field]
    if rtype.kind == "Secret" and rtype.group == "" and obj.get("stringData"):
        data = dict(obj.get("data") or {})
        for key, value in obj.pop("stringData").items():
            data[key] = base64.b64encode(str(value).encode()).decode()
        obj["data"] = data
    elif rtype.kind == "Secret" and "stringData" in obj:
        obj.pop("stringData")


def pending_finalizers(rtype: ResourceType, obj: dict) -> list[str]:
    """Finalizers still holding `obj` (a namespace's spec.finalizers count too)."""
    pending = list(obj["metadata"].get("finalizers") or [])
    if rtype.key == NAMESPACES:
        pending += list((obj.get("spec") or {}).get("finalizers") or [])
    return pending
