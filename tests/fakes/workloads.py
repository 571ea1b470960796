"""Simulated cluster controllers of the fake Kubernetes API server, the parts a backup and restore
tool meets: namespace lifecycle (default ServiceAccount and root CA ConfigMap, termination that deletes
the contents), a kubelet that runs pods (Running once their claims are bound, or through a test's pod
runner), Deployments -> ReplicaSets -> Pods, StatefulSets with volumeClaimTemplates, DaemonSets, Jobs,
and Services with cluster IPs, node ports, Endpoints and EndpointSlices.

The PersistentVolume controller's static binding: a claim naming a volume (``spec.volumeName``) binds to
it when the volume is free (no ``claimRef``) or reserved for that claim (``claimRef`` naming the claim's
namespace and name, without a uid or with the claim's), also when the reservation comes after the claim. A volume whose ``claimRef`` is cleared becomes Available; one whose claim is
deleted is Released with its reclaim policy Retain (:mod:`tests.fakes.csi` deletes it with Delete).

With ``enforce_pod_security`` on, a pod is refused (403) when it violates the Pod Security level its
namespace enforces (label ``pod-security.kubernetes.io/enforce``), as the admission plugin does.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import json
from collections.abc import Callable
from typing import TYPE_CHECKING

from tests.fakes.kube_objects import (
    ApiError,
    forbidden,
    get_path,
    invalid,
    label_selector_matcher,
    owner_reference,
    random_suffix,
    rfc3339,
)
from tests.fakes.kube_resources import ResourceType
from tests.fakes.kube_store import ADDED, DELETED, MODIFIED, StoreEvent

if TYPE_CHECKING:
    from tests.fakes.kubeapi import FakeKubeAPI

NODE_NAME = "fake-node"
SERVICE_CIDR = ipaddress.ip_network("10.96.0.0/12")
ROOT_CA = (
    "-----BEGIN CERTIFICATE-----\n"
    "MIIBfakeCAcertificateForTheFakeKubernetesAPIServerOnly\n"
    "-----END CERTIFICATE-----\n"
)

PodRunner = Callable[[dict, dict[str, str]], "int | None"]
"""pod_runner(pod, mounts) runs a pod's work locally (in a worker thread) and returns its exit code, or
None to leave it running. `mounts` maps each container mountPath backed by a bound claim to the local
directory (or file, for block volumes) holding the volume."""


def template_hash(template: dict) -> str:
    digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()
    alphabet = "bcdfghjklmnpqrstvwxz2456789"
    number = int(digest[:16], 16)
    out = []
    for _ in range(10):
        number, rest = divmod(number, len(alphabet))
        out.append(alphabet[rest])
    return "".join(out)


class ClusterSimulator:
    def __init__(self, server: FakeKubeAPI):
        self.server = server
        self.store = server.store
        self.namespace_defaults = True
        self.namespace_deletion_delay = 0.0
        self.auto_run_pods = True
        self.pod_runner: PodRunner | None = None
        self.enforce_pod_security = False
        self._next_ip = 10
        self._next_node_port = 30000
        self._running: set[tuple[str, str]] = set()
        self.rt = {
            name: server.registry.resolve(name)
            for name in (
                "namespaces",
                "pods",
                "serviceaccounts",
                "configmaps",
                "services",
                "endpoints",
                "endpointslices",
                "persistentvolumeclaims",
                "persistentvolumes",
                "deployments.apps",
                "replicasets.apps",
                "statefulsets.apps",
                "daemonsets.apps",
                "jobs.batch",
                "nodes",
                "customresourcedefinitions",
            )
        }

    # -- wiring ---------------------------------------------------------------------------------------

    def install(self) -> None:
        self.store.admission.append(self.admit)
        self.store.listeners.append(self.handle)

    def seed(self) -> None:
        for name in ("default", "kube-system", "kube-public", "kube-node-lease"):
            if self.store.peek(self.rt["namespaces"], None, name) is None:
                self.store.create(self.rt["namespaces"], None, {"metadata": {"name": name}})
        self._seed_rbac()
        if self.store.peek(self.rt["services"], "default", "kubernetes") is None:
            labels = {"component": "apiserver", "provider": "kubernetes"}
            self.store.create(
                self.rt["services"],
                "default",
                {
                    "metadata": {"name": "kubernetes", "labels": labels},
                    "spec": {
                        "clusterIP": "10.96.0.1",
                        "ports": [{"name": "https", "port": 443, "targetPort": 6443}],
                    },
                },
            )
            self.store.create(
                self.rt["endpoints"],
                "default",
                {
                    "metadata": {
                        "name": "kubernetes",
                        "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"},
                    },
                    "subsets": [
                        {
                            "addresses": [{"ip": "10.0.0.1"}],
                            "ports": [{"name": "https", "port": 6443, "protocol": "TCP"}],
                        }
                    ],
                },
            )
        if self.store.peek(self.rt["nodes"], None, NODE_NAME) is None:
            self.store.create(
                self.rt["nodes"],
                None,
                {
                    "metadata": {
                        "name": NODE_NAME,
                        "labels": {"kubernetes.io/hostname": NODE_NAME, "kubernetes.io/os": "linux"},
                    },
                    "spec": {},
                    "status": {
                        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
                        "addresses": [
                            {"type": "InternalIP", "address": "10.0.0.1"},
                            {"type": "Hostname", "address": NODE_NAME},
                        ],
                    },
                },
                keep_status=True,
            )

    def _seed_rbac(self) -> None:
        """The default roles every authenticated identity has (discovery, self access reviews)."""
        roles = self.server.registry.resolve("clusterroles")
        bindings = self.server.registry.resolve("clusterrolebindings")
        defaults = {
            "system:basic-user": [
                {
                    "apiGroups": ["authorization.k8s.io"],
                    "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                    "verbs": ["create"],
                }
            ],
            "system:discovery": [
                {
                    "nonResourceURLs": [
                        "/api",
                        "/api/*",
                        "/apis",
                        "/apis/*",
                        "/healthz",
                        "/livez",
                        "/openapi",
                        "/openapi/*",
                        "/readyz",
                        "/version",
                        "/version/",
                    ],
                    "verbs": ["get"],
                }
            ],
        }
        for name, rules in defaults.items():
            if self.store.peek(roles, None, name) is None:
                self.store.create(roles, None, {"metadata": {"name": name}, "rules": rules})
            if self.store.peek(bindings, None, name) is None:
                self.store.create(
                    bindings,
                    None,
                    {
                        "metadata": {"name": name},
                        "roleRef": {
                            "apiGroup": "rbac.authorization.k8s.io",
                            "kind": "ClusterRole",
                            "name": name,
                        },
                        "subjects": [
                            {
                                "apiGroup": "rbac.authorization.k8s.io",
                                "kind": "Group",
                                "name": "system:authenticated",
                            }
                        ],
                    },
                )

    def _ip(self) -> str:
        allocated = self._allocated_ips()
        while True:
            self._next_ip += 1
            ip = f"10.96.{self._next_ip // 250}.{self._next_ip % 250 + 1}"
            if ip not in allocated:
                return ip

    def _allocated_ips(self) -> set[str]:
        """The cluster IPs the Services hold (the allocator's bitmap, recomputed)."""
        used: set[str] = set()
        for svc in self.store.items(self.rt["services"]):
            spec = svc.get("spec") or {}
            for ip in [spec.get("clusterIP"), *(spec.get("clusterIPs") or [])]:
                if isinstance(ip, str) and ip and ip != "None":
                    used.add(ip)
        return used

    def _check_requested_ip(self, name: str, ip: str) -> None:
        """A cluster IP the client asks for must be a free address of the service range, or the create is
        422 Invalid as from the real allocator."""
        problem = None
        try:
            in_range = ipaddress.ip_address(ip) in SERVICE_CIDR
        except ValueError:
            in_range = None
            problem = "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"
        if in_range is False:
            problem = (
                f"failed to allocate IP {ip}: the provided IP ({ip}) is not in the valid range. "
                f"The range of valid IPs is {SERVICE_CIDR}"
            )
        elif in_range and ip in self._allocated_ips():
            problem = f"failed to allocate IP {ip}: provided IP is already allocated"
        if problem:
            raise invalid(
                "Service",
                "",
                name,
                [{"field": "spec.clusterIPs", "message": f'Invalid value: []string{{"{ip}"}}: {problem}'}],
            )

    # -- admission ------------------------------------------------------------------------------------

    def admit(self, operation: str, rtype: ResourceType, new: dict, old: dict | None) -> None:
        if operation != "CREATE":
            return
        key = rtype.key
        if key == ("", "namespaces"):
            new["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = new["metadata"]["name"]
            new.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
            new["status"] = {"phase": "Active"}
        elif key == ("", "pods"):
            if self.enforce_pod_security:
                self._admit_pod_security(new)
            spec = new.setdefault("spec", {})
            spec.setdefault("serviceAccountName", "default")
            spec.setdefault("restartPolicy", "Always")
            spec.setdefault("dnsPolicy", "ClusterFirst")
            spec.setdefault("schedulerName", "default-scheduler")
            spec.setdefault("terminationGracePeriodSeconds", 30)
            for container in spec.get("containers") or []:
                container.setdefault("imagePullPolicy", "IfNotPresent")
                container.setdefault("terminationMessagePath", "/dev/termination-log")
            new.setdefault("status", {}).setdefault("phase", "Pending")
        elif key == ("", "services"):
            spec = new.setdefault("spec", {})
            spec.setdefault("type", "ClusterIP")
            if spec["type"] != "ExternalName":
                requested = spec.get("clusterIP") or next(iter(spec.get("clusterIPs") or []), None)
                if requested and requested != "None":
                    self._check_requested_ip(new["metadata"].get("name", ""), requested)
                    spec["clusterIP"] = requested
                elif requested == "None":
                    spec["clusterIP"] = "None"
                if spec.get("clusterIP") != "None":
                    spec["clusterIP"] = spec.get("clusterIP") or self._ip()
                spec["clusterIPs"] = (
                    [spec["clusterIP"]] if spec.get("clusterIP") else spec.get("clusterIPs", [])
                )
                spec.setdefault("ipFamilies", ["IPv4"])
                spec.setdefault("ipFamilyPolicy", "SingleStack")
                spec.setdefault("internalTrafficPolicy", "Cluster")
            spec.setdefault("sessionAffinity", "None")
            for port in spec.get("ports") or []:
                port.setdefault("protocol", "TCP")
                port.setdefault("targetPort", port.get("port"))
                if spec["type"] in ("NodePort", "LoadBalancer") and not port.get("nodePort"):
                    self._next_node_port += 1
                    port["nodePort"] = self._next_node_port
            if spec["type"] == "LoadBalancer" and spec.get("externalTrafficPolicy") == "Local":
                self._next_node_port += 1
                spec.setdefault("healthCheckNodePort", self._next_node_port)
            new["status"] = {"loadBalancer": {}}
        elif key in (("apps", "deployments"), ("apps", "statefulsets"), ("apps", "replicasets")):
            new.setdefault("spec", {}).setdefault("replicas", 1)
        elif key == ("apiextensions.k8s.io", "customresourcedefinitions"):
            try:
                self.server.registry.register_crd(new)
            except (KeyError, ValueError) as error:
                raise ApiError(
                    422,
                    "Invalid",
                    f'CustomResourceDefinition "{new["metadata"]["name"]}" is invalid: {error}',
                ) from None
            new["status"] = {
                "conditions": [{"type": "Established", "status": "True", "reason": "InitialNamesAccepted"}],
                "acceptedNames": get_path(new, "spec", "names", default={}),
                "storedVersions": [
                    v["name"] for v in get_path(new, "spec", "versions", default=[]) if v.get("storage")
                ],
            }

    # -- events ---------------------------------------------------------------------------------------

    def handle(self, event: StoreEvent) -> None:
        key = event.rtype.key
        obj = event.obj
        meta = obj["metadata"]
        namespace = meta.get("namespace")
        if key == ("", "namespaces"):
            self._namespace(event)
        elif key == ("", "pods"):
            if event.type == DELETED:
                self._running.discard((namespace, meta["name"]))
            else:
                self._kubelet(namespace, meta["name"])
            for ref in meta.get("ownerReferences") or []:
                self._poke_owner(namespace, ref)
        elif key == ("", "persistentvolumeclaims") and event.type != DELETED:
            self._bind_claim(obj)
            for pod in self.store.items(self.rt["pods"], namespace):
                if get_path(pod, "status", "phase") == "Pending":
                    self._kubelet(namespace, pod["metadata"]["name"])
        elif key == ("", "persistentvolumes") and event.type != DELETED:
            self._sync_volume(meta["name"])
        elif key == ("apps", "deployments") and event.type != DELETED:
            self._deployment(namespace, meta["name"])
        elif key == ("apps", "replicasets"):
            if event.type != DELETED:
                self._replicaset(namespace, meta["name"])
            for ref in meta.get("ownerReferences") or []:
                self._poke_owner(namespace, ref)
        elif key == ("apps", "statefulsets") and event.type != DELETED:
            self._statefulset(namespace, meta["name"])
        elif key == ("apps", "daemonsets") and event.type != DELETED:
            self._daemonset(namespace, meta["name"])
        elif key == ("batch", "jobs") and event.type != DELETED:
            self._job(namespace, meta["name"])
        elif key == ("", "services"):
            self._service(event)
        elif key == ("apiextensions.k8s.io", "customresourcedefinitions") and event.type == DELETED:
            group, plural = get_path(obj, "spec", "group"), get_path(obj, "spec", "names", "plural")
            rtype = self.server.registry.by_key((group, plural))
            if rtype is not None:
                for item in list(self.store.items(rtype)):
                    self.store.delete(rtype, item["metadata"].get("namespace"), item["metadata"]["name"])
                self.server.registry.unregister(group, plural)

    def _poke_owner(self, namespace: str, ref: dict) -> None:
        kind = ref.get("kind")
        if kind == "ReplicaSet":
            self._replicaset(namespace, ref["name"])
        elif kind == "Deployment":
            self._deployment(namespace, ref["name"])
        elif kind == "StatefulSet":
            self._statefulset(namespace, ref["name"])
        elif kind == "DaemonSet":
            self._daemonset(namespace, ref["name"])
        elif kind == "Job":
            self._job(namespace, ref["name"])

    # -- persistent volumes (static binding) ----------------------------------------------------------

    def _sync_volume(self, name: str) -> None:
        pv = self.store.peek(self.rt["persistentvolumes"], None, name)
        if pv is None or pv["metadata"].get("deletionTimestamp"):
            return
        ref = get_path(pv, "spec", "claimRef")
        phase = get_path(pv, "status", "phase")
        if not ref:
            if phase != "Available":
                self.store.set_status(self.rt["persistentvolumes"], None, name, {"phase": "Available"})
            return
        if ref.get("uid"):
            return  # bound (or Released, if its claim is gone): the provisioner and release handle it
        if phase != "Available":
            self.store.set_status(self.rt["persistentvolumes"], None, name, {"phase": "Available"})
        claim = self.store.peek(self.rt["persistentvolumeclaims"], ref.get("namespace"), ref.get("name", ""))
        if claim is not None:
            self._bind_claim(claim)

    def _bind_claim(self, claim: dict) -> None:
        """Bind a Pending claim to the volume it names, if that volume is free or reserved for it."""
        meta = claim["metadata"]
        if get_path(claim, "status", "phase") != "Pending" or meta.get("deletionTimestamp"):
            return
        namespace, name, uid = meta["namespace"], meta["name"], meta["uid"]
        pvs = self.rt["persistentvolumes"]
        wanted = get_path(claim, "spec", "volumeName")
        if not wanted or meta.get("annotations", {}).get("pv.kubernetes.io/bind-completed"):
            return  # dynamic provisioning (tests.fakes.csi) binds the others
        pv = self.store.peek(pvs, None, wanted)
        if pv is None or pv["metadata"].get("deletionTimestamp"):
            return
        ref = get_path(pv, "spec", "claimRef") or {}
        if ref and (
            ref.get("namespace") != namespace
            or ref.get("name") != name
            or (ref.get("uid") and ref["uid"] != uid)
        ):
            self.server.record_event(
                claim,
                "FailedBinding",
                f"volume {pv['metadata']['name']} already bound to a different claim.",
                "Warning",
                "persistentvolume-controller",
            )
            return
        pv_name = pv["metadata"]["name"]

        def reserve(v: dict) -> None:
            v["spec"]["claimRef"] = {
                "kind": "PersistentVolumeClaim",
                "apiVersion": "v1",
                "namespace": namespace,
                "name": name,
                "uid": uid,
                "resourceVersion": meta["resourceVersion"],
            }

        self.store.mutate(pvs, None, pv_name, reserve)
        self.store.set_status(pvs, None, pv_name, {"phase": "Bound"})
        capacity = get_path(pv, "spec", "capacity", "storage")

        def bind(c: dict) -> None:
            c["spec"]["volumeName"] = pv_name
            c["metadata"].setdefault("annotations", {})["pv.kubernetes.io/bind-completed"] = "yes"
            c["status"] = {
                "phase": "Bound",
                "accessModes": list(get_path(pv, "spec", "accessModes", default=[]) or []),
                "capacity": {"storage": capacity},
            }

        self.store.mutate(self.rt["persistentvolumeclaims"], namespace, name, bind)

    # -- pod security ---------------------------------------------------------------------------------

    def _admit_pod_security(self, pod: dict) -> None:
        from steps.manifests import podsecurity

        namespace = pod["metadata"].get("namespace")
        ns = self.store.peek(self.rt["namespaces"], None, namespace) if namespace else None
        level = ((ns or {}).get("metadata", {}).get("labels") or {}).get(podsecurity.ENFORCE_LABEL)
        if level not in ("baseline", "restricted"):
            return
        problems = podsecurity.violations(pod.get("spec") or {}, level, pod["metadata"].get("annotations"))
        if problems:
            raise forbidden(
                "pods",
                "",
                pod["metadata"].get("name", ""),
                f'violates PodSecurity "{level}:latest": {"; ".join(problems)}',
            )

    # -- namespaces -----------------------------------------------------------------------------------

    def _namespace(self, event: StoreEvent) -> None:
        name = event.obj["metadata"]["name"]
        if event.type == ADDED and self.namespace_defaults:
            if self.store.peek(self.rt["serviceaccounts"], name, "default") is None:
                self.store.create(self.rt["serviceaccounts"], name, {"metadata": {"name": "default"}})
            if self.store.peek(self.rt["configmaps"], name, "kube-root-ca.crt") is None:
                self.store.create(
                    self.rt["configmaps"],
                    name,
                    {
                        "metadata": {
                            "name": "kube-root-ca.crt",
                            "annotations": {
                                "kubernetes.io/description": "Contains a CA bundle that can be used to verify the "
                                "kube-apiserver when using internal endpoints such as the internal service IP or "
                                "kubernetes.default.svc. No other usage is guaranteed across distributions of "
                                "Kubernetes clusters."
                            },
                        },
                        "data": {"ca.crt": ROOT_CA},
                    },
                )
        elif (
            event.type == MODIFIED
            and event.obj["metadata"].get("deletionTimestamp")
            and not (event.old or {}).get("metadata", {}).get("deletionTimestamp")
        ):
            self.server._spawn(self._terminate_namespace(name))

    async def _terminate_namespace(self, name: str) -> None:
        if self.namespace_deletion_delay:
            await asyncio.sleep(self.namespace_deletion_delay)
        attempt = 0
        while True:
            self.store.delete_all_in_namespace(name)
            remaining = [r for r in self.server.registry.all() if r.namespaced and self.store.items(r, name)]
            if not remaining:
                break
            # objects held by finalizers keep the namespace Terminating, as in a real cluster
            attempt += 1
            await asyncio.sleep(min(0.2, 0.02 * attempt))

        def finalize(ns: dict) -> None:
            ns.setdefault("spec", {})["finalizers"] = [
                f for f in ns["spec"].get("finalizers") or [] if f != "kubernetes"
            ]

        self.store.mutate(self.rt["namespaces"], None, name, finalize)

    # -- pods -----------------------------------------------------------------------------------------

    def _claims(self, pod: dict) -> list[str]:
        return [
            v["persistentVolumeClaim"]["claimName"]
            for v in get_path(pod, "spec", "volumes", default=[]) or []
            if v.get("persistentVolumeClaim", {}).get("claimName")
        ]

    def _kubelet(self, namespace: str, name: str) -> None:
        pod = self.store.peek(self.rt["pods"], namespace, name)
        if pod is None or not self.auto_run_pods or pod["metadata"].get("deletionTimestamp"):
            return
        if get_path(pod, "status", "phase") != "Pending" or (namespace, name) in self._running:
            return
        unbound = []
        for claim in self._claims(pod):
            pvc = self.store.peek(self.rt["persistentvolumeclaims"], namespace, claim)
            if pvc is None:
                unbound.append(f'persistentvolumeclaim "{claim}" not found')
            elif get_path(pvc, "status", "phase") != "Bound":
                unbound.append(f'pod has unbound immediate PersistentVolumeClaims ("{claim}")')
        if unbound:

            def unschedulable(p: dict) -> None:
                p.setdefault("status", {})["conditions"] = [
                    {
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": "Unschedulable",
                        "message": "0/1 nodes are available: " + "; ".join(unbound) + ".",
                        "lastTransitionTime": rfc3339(),
                    }
                ]

            self.store.mutate(self.rt["pods"], namespace, name, unschedulable)
            self.server.storage.consumer_created(namespace, self._claims(pod))
            return
        self._running.add((namespace, name))
        now = rfc3339()

        def run(p: dict) -> None:
            p["spec"].setdefault("nodeName", NODE_NAME)
            p["status"] = {
                "phase": "Running",
                "conditions": [
                    {"type": t, "status": "True", "lastTransitionTime": now}
                    for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")
                ],
                "hostIP": "10.0.0.1",
                "podIP": self._ip().replace("10.96.", "10.244."),
                "startTime": now,
                "qosClass": "BestEffort",
                "containerStatuses": [
                    {
                        "name": c["name"],
                        "image": c.get("image", ""),
                        "imageID": f"{c.get('image', '')}@sha256:{'0' * 64}",
                        "containerID": f"containerd://{hashlib.sha256((name + c['name']).encode()).hexdigest()}",
                        "ready": True,
                        "started": True,
                        "restartCount": 0,
                        "state": {"running": {"startedAt": now}},
                    }
                    for c in p["spec"].get("containers") or []
                ],
            }

        self.store.mutate(self.rt["pods"], namespace, name, run)
        if self.pod_runner is not None:
            self.server._spawn(self._run_pod(namespace, name))

    async def _run_pod(self, namespace: str, name: str) -> None:
        pod = self.store.peek(self.rt["pods"], namespace, name)
        if pod is None:
            return
        mounts = {}
        volumes = {v["name"]: v for v in get_path(pod, "spec", "volumes", default=[]) or []}
        for container in get_path(pod, "spec", "containers", default=[]) or []:
            for mount in (container.get("volumeMounts") or []) + (container.get("volumeDevices") or []):
                claim = get_path(volumes.get(mount.get("name"), {}), "persistentVolumeClaim", "claimName")
                path = mount.get("mountPath") or mount.get("devicePath")
                if claim and path:
                    try:
                        mounts[path] = str(self.server.storage.volume_path(namespace, claim))
                    except KeyError:
                        pass
        runner = self.pod_runner
        exit_code = await asyncio.get_running_loop().run_in_executor(None, runner, pod, mounts)
        if exit_code is None:
            return
        now = rfc3339()

        def finish(p: dict) -> None:
            status = p.setdefault("status", {})
            status["phase"] = "Succeeded" if exit_code == 0 else "Failed"
            for cs in status.get("containerStatuses") or []:
                cs["ready"], cs["started"] = False, False
                cs["state"] = {
                    "terminated": {
                        "exitCode": exit_code,
                        "reason": "Completed" if exit_code == 0 else "Error",
                        "startedAt": status.get("startTime", now),
                        "finishedAt": now,
                    }
                }
            for cond in status.get("conditions") or []:
                if cond["type"] in ("Ready", "ContainersReady"):
                    cond["status"], cond["reason"] = "False", "PodCompleted"

        self.store.mutate(self.rt["pods"], namespace, name, finish)

    def _owned_pods(self, namespace: str, uid: str) -> list[dict]:
        return [
            p
            for p in self.store.items(self.rt["pods"], namespace)
            if any(r.get("uid") == uid for r in p["metadata"].get("ownerReferences") or [])
            and not p["metadata"].get("deletionTimestamp")
        ]

    @staticmethod
    def _ready(pod: dict) -> bool:
        return get_path(pod, "status", "phase") == "Running" and any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in get_path(pod, "status", "conditions", default=[]) or []
        )

    def _new_pod(self, owner: dict, name: str, template: dict, extra_labels: dict | None = None) -> dict:
        meta = dict(template.get("metadata") or {})
        labels = dict(meta.get("labels") or {})
        labels.update(extra_labels or {})
        pod = {
            "metadata": {
                "name": name,
                "labels": labels,
                "annotations": dict(meta.get("annotations") or {}),
                "ownerReferences": [owner_reference(owner)],
            },
            "spec": json.loads(json.dumps(template.get("spec") or {})),
        }
        if not pod["metadata"]["annotations"]:
            del pod["metadata"]["annotations"]
        return pod

    # -- workloads ------------------------------------------------------------------------------------

    def _set_status(self, rtype: ResourceType, namespace: str, name: str, status: dict) -> None:
        obj = self.store.peek(rtype, namespace, name)
        if obj is None:
            return
        merged = dict(obj.get("status") or {})
        merged.update(status)
        if merged != obj.get("status"):
            self.store.set_status(rtype, namespace, name, merged)

    def _replicaset(self, namespace: str, name: str) -> None:
        rs = self.store.peek(self.rt["replicasets.apps"], namespace, name)
        if rs is None or rs["metadata"].get("deletionTimestamp"):
            return
        want = get_path(rs, "spec", "replicas", default=1)
        pods = self._owned_pods(namespace, rs["metadata"]["uid"])
        template = get_path(rs, "spec", "template", default={})
        for _ in range(want - len(pods)):
            self.store.create(
                self.rt["pods"], namespace, self._new_pod(rs, f"{name}-{random_suffix()}", template)
            )
        for pod in sorted(pods, key=lambda p: p["metadata"]["creationTimestamp"], reverse=True)[
            : max(0, len(pods) - want)
        ]:
            self.store.delete(self.rt["pods"], namespace, pod["metadata"]["name"])
        pods = self._owned_pods(namespace, rs["metadata"]["uid"])
        ready = sum(1 for p in pods if self._ready(p))
        self._set_status(
            self.rt["replicasets.apps"],
            namespace,
            name,
            {
                "replicas": len(pods),
                "fullyLabeledReplicas": len(pods),
                "readyReplicas": ready,
                "availableReplicas": ready,
                "observedGeneration": rs["metadata"].get("generation", 1),
            },
        )

    def _deployment(self, namespace: str, name: str) -> None:
        rt_rs = self.rt["replicasets.apps"]
        deploy = self.store.peek(self.rt["deployments.apps"], namespace, name)
        if deploy is None or deploy["metadata"].get("deletionTimestamp"):
            return
        template = json.loads(json.dumps(get_path(deploy, "spec", "template", default={})))
        pod_hash = template_hash(template)
        template.setdefault("metadata", {}).setdefault("labels", {})["pod-template-hash"] = pod_hash
        rs_name = f"{name}-{pod_hash}"
        want = get_path(deploy, "spec", "replicas", default=1)
        if get_path(deploy, "spec", "paused"):
            return
        owned = [
            rs
            for rs in self.store.items(rt_rs, namespace)
            if any(
                r.get("uid") == deploy["metadata"]["uid"] for r in rs["metadata"].get("ownerReferences") or []
            )
        ]
        for rs in owned:
            if rs["metadata"]["name"] != rs_name and get_path(rs, "spec", "replicas", default=0) != 0:
                self.store.mutate(
                    rt_rs, namespace, rs["metadata"]["name"], lambda o: o["spec"].__setitem__("replicas", 0)
                )
        current = self.store.peek(rt_rs, namespace, rs_name)
        if current is None:
            selector = json.loads(json.dumps(get_path(deploy, "spec", "selector", default={})))
            selector.setdefault("matchLabels", {})["pod-template-hash"] = pod_hash
            self.store.create(
                rt_rs,
                namespace,
                {
                    "metadata": {
                        "name": rs_name,
                        "labels": dict(template["metadata"]["labels"]),
                        "annotations": {"deployment.kubernetes.io/revision": str(len(owned) + 1)},
                        "ownerReferences": [owner_reference(deploy)],
                    },
                    "spec": {"replicas": want, "selector": selector, "template": template},
                },
            )
        elif get_path(current, "spec", "replicas") != want:
            self.store.mutate(rt_rs, namespace, rs_name, lambda o: o["spec"].__setitem__("replicas", want))
        rs = self.store.peek(rt_rs, namespace, rs_name) or {}
        ready = get_path(rs, "status", "readyReplicas", default=0) or 0
        total = sum(
            get_path(r, "status", "replicas", default=0) or 0
            for r in self.store.items(rt_rs, namespace)
            if any(
                ref.get("uid") == deploy["metadata"]["uid"]
                for ref in r["metadata"].get("ownerReferences") or []
            )
        )
        available = ready >= want
        self._set_status(
            self.rt["deployments.apps"],
            namespace,
            name,
            {
                "observedGeneration": deploy["metadata"].get("generation", 1),
                "replicas": total,
                "updatedReplicas": get_path(rs, "status", "replicas", default=0) or 0,
                "readyReplicas": ready,
                "availableReplicas": ready,
                "unavailableReplicas": max(0, want - ready),
                "conditions": [
                    {
                        "type": "Available",
                        "status": "True" if available else "False",
                        "reason": "MinimumReplicasAvailable" if available else "MinimumReplicasUnavailable",
                        "message": "Deployment has minimum availability."
                        if available
                        else "Deployment does not have minimum availability.",
                    },
                    {
                        "type": "Progressing",
                        "status": "True",
                        "reason": "NewReplicaSetAvailable" if available else "ReplicaSetUpdated",
                        "message": f'ReplicaSet "{rs_name}" has successfully progressed.'
                        if available
                        else f'ReplicaSet "{rs_name}" is progressing.',
                    },
                ],
            },
        )

    def _statefulset(self, namespace: str, name: str) -> None:
        sts = self.store.peek(self.rt["statefulsets.apps"], namespace, name)
        if sts is None or sts["metadata"].get("deletionTimestamp"):
            return
        want = get_path(sts, "spec", "replicas", default=1)
        template = get_path(sts, "spec", "template", default={})
        revision = f"{name}-{template_hash(template)}"
        claim_templates = get_path(sts, "spec", "volumeClaimTemplates", default=[]) or []
        selector_labels = get_path(sts, "spec", "selector", "matchLabels", default={}) or {}
        pods = {p["metadata"]["name"]: p for p in self._owned_pods(namespace, sts["metadata"]["uid"])}
        for ordinal in range(want):
            pod_name = f"{name}-{ordinal}"
            for claim in claim_templates:
                claim_name = f"{claim['metadata']['name']}-{pod_name}"
                if self.store.peek(self.rt["persistentvolumeclaims"], namespace, claim_name) is None:
                    body = json.loads(json.dumps(claim))
                    body.pop("status", None)
                    body["metadata"] = {
                        "name": claim_name,
                        "labels": {**(claim["metadata"].get("labels") or {}), **selector_labels},
                    }
                    if claim["metadata"].get("annotations"):
                        body["metadata"]["annotations"] = dict(claim["metadata"]["annotations"])
                    self.store.create(self.rt["persistentvolumeclaims"], namespace, body)
            if pod_name not in pods and self.store.peek(self.rt["pods"], namespace, pod_name) is None:
                pod = self._new_pod(
                    sts,
                    pod_name,
                    template,
                    {
                        "statefulset.kubernetes.io/pod-name": pod_name,
                        "apps.kubernetes.io/pod-index": str(ordinal),
                        "controller-revision-hash": revision,
                    },
                )
                pod["spec"]["hostname"] = pod_name
                if get_path(sts, "spec", "serviceName"):
                    pod["spec"]["subdomain"] = sts["spec"]["serviceName"]
                volumes = pod["spec"].setdefault("volumes", [])
                for claim in claim_templates:
                    volumes.append(
                        {
                            "name": claim["metadata"]["name"],
                            "persistentVolumeClaim": {"claimName": f"{claim['metadata']['name']}-{pod_name}"},
                        }
                    )
                self.store.create(self.rt["pods"], namespace, pod)
        for pod_name in pods:
            ordinal = pod_name.rsplit("-", 1)[-1]
            if ordinal.isdigit() and int(ordinal) >= want:
                self.store.delete(self.rt["pods"], namespace, pod_name)
        pods = self._owned_pods(namespace, sts["metadata"]["uid"])
        ready = sum(1 for p in pods if self._ready(p))
        self._set_status(
            self.rt["statefulsets.apps"],
            namespace,
            name,
            {
                "observedGeneration": sts["metadata"].get("generation", 1),
                "replicas": len(pods),
                "readyReplicas": ready,
                "currentReplicas": len(pods),
                "updatedReplicas": len(pods),
                "availableReplicas": ready,
                "currentRevision": revision,
                "updateRevision": revision,
                "collisionCount": 0,
            },
        )

    def _daemonset(self, namespace: str, name: str) -> None:
        ds = self.store.peek(self.rt["daemonsets.apps"], namespace, name)
        if ds is None or ds["metadata"].get("deletionTimestamp"):
            return
        pods = self._owned_pods(namespace, ds["metadata"]["uid"])
        if not pods:
            pod = self._new_pod(ds, f"{name}-{random_suffix()}", get_path(ds, "spec", "template", default={}))
            pod["spec"]["nodeName"] = NODE_NAME
            self.store.create(self.rt["pods"], namespace, pod)
            pods = self._owned_pods(namespace, ds["metadata"]["uid"])
        ready = sum(1 for p in pods if self._ready(p))
        self._set_status(
            self.rt["daemonsets.apps"],
            namespace,
            name,
            {
                "observedGeneration": ds["metadata"].get("generation", 1),
                "desiredNumberScheduled": 1,
                "currentNumberScheduled": len(pods),
                "numberReady": ready,
                "numberAvailable": ready,
                "updatedNumberScheduled": len(pods),
                "numberMisscheduled": 0,
            },
        )

    def _job(self, namespace: str, name: str) -> None:
        job = self.store.peek(self.rt["jobs.batch"], namespace, name)
        if job is None or job["metadata"].get("deletionTimestamp"):
            return
        status = job.get("status") or {}
        if any(
            c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
            for c in status.get("conditions") or []
        ):
            return
        if get_path(job, "spec", "suspend"):
            return
        uid = job["metadata"]["uid"]
        pods = self._owned_pods(namespace, uid)
        succeeded = sum(1 for p in pods if get_path(p, "status", "phase") == "Succeeded")
        failed = sum(1 for p in pods if get_path(p, "status", "phase") == "Failed")
        active = [p for p in pods if get_path(p, "status", "phase") not in ("Succeeded", "Failed")]
        completions = get_path(job, "spec", "completions", default=1) or 1
        backoff = get_path(job, "spec", "backoffLimit", default=6)
        now = rfc3339()
        update = {
            "active": len(active),
            "succeeded": succeeded,
            "failed": failed,
            "startTime": status.get("startTime", now),
        }
        if succeeded >= completions:
            update.update(
                active=0,
                completionTime=now,
                conditions=[
                    {"type": "SuccessCriteriaMet", "status": "True", "lastTransitionTime": now},
                    {"type": "Complete", "status": "True", "lastTransitionTime": now},
                ],
            )
        elif failed > backoff:
            update.update(
                active=0,
                conditions=[
                    {
                        "type": "FailureTarget",
                        "status": "True",
                        "reason": "BackoffLimitExceeded",
                        "lastTransitionTime": now,
                    },
                    {
                        "type": "Failed",
                        "status": "True",
                        "reason": "BackoffLimitExceeded",
                        "message": "Job has reached the specified backoff limit",
                        "lastTransitionTime": now,
                    },
                ],
            )
        elif not active:
            template = json.loads(json.dumps(get_path(job, "spec", "template", default={})))
            labels = {
                "batch.kubernetes.io/controller-uid": uid,
                "batch.kubernetes.io/job-name": name,
                "controller-uid": uid,
                "job-name": name,
            }
            self.store.create(
                self.rt["pods"], namespace, self._new_pod(job, f"{name}-{random_suffix()}", template, labels)
            )
            update["active"] = 1
        self._set_status(self.rt["jobs.batch"], namespace, name, update)

    # -- services -------------------------------------------------------------------------------------

    def _service(self, event: StoreEvent) -> None:
        svc = event.obj
        namespace, name = svc["metadata"]["namespace"], svc["metadata"]["name"]
        if event.type == DELETED:
            if self.store.peek(self.rt["endpoints"], namespace, name) is not None:
                self.store.delete(self.rt["endpoints"], namespace, name)
            return
        if event.type != ADDED or not get_path(svc, "spec", "selector"):
            return
        if self.store.peek(self.rt["endpoints"], namespace, name) is None:
            self.store.create(
                self.rt["endpoints"],
                namespace,
                {"metadata": {"name": name, "labels": dict(svc["metadata"].get("labels") or {})}},
            )
        matcher = label_selector_matcher({"matchLabels": svc["spec"]["selector"]})
        addresses = [
            {
                "addresses": [get_path(p, "status", "podIP", default="")],
                "conditions": {"ready": self._ready(p)},
                "targetRef": {
                    "kind": "Pod",
                    "name": p["metadata"]["name"],
                    "namespace": namespace,
                    "uid": p["metadata"]["uid"],
                },
            }
            for p in self.store.items(self.rt["pods"], namespace)
            if matcher(p["metadata"].get("labels") or {}) and get_path(p, "status", "podIP")
        ]
        self.store.create(
            self.rt["endpointslices"],
            namespace,
            {
                "metadata": {
                    "generateName": f"{name}-",
                    "labels": {
                        "kubernetes.io/service-name": name,
                        "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
                    },
                    "ownerReferences": [owner_reference(svc)],
                },
                "addressType": "IPv4",
                "endpoints": addresses,
                "ports": [
                    {
                        "name": p.get("name", ""),
                        "port": p.get("targetPort")
                        if isinstance(p.get("targetPort"), int)
                        else p.get("port"),
                        "protocol": p.get("protocol", "TCP"),
                    }
                    for p in get_path(svc, "spec", "ports", default=[]) or []
                ],
            },
        )
