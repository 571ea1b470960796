"""The restore's scope: which of a backup's (transformed) objects restore-app may create."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from steps.manifests.scope import Scope, check_scope

RBAC = "rbac.authorization.k8s.io/v1"
CLUSTER_KINDS = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "PersistentVolume",
    "StorageClass",
    "MutatingWebhookConfiguration",
}


def namespaced(_api_version: str, kind: str) -> bool:
    """The API server's answer (discovery), which is what decides, never the object's metadata."""
    return kind not in CLUSTER_KINDS


def obj(kind: str, name: str, namespace: str | None = "app", api: str = "v1", **body) -> dict:
    meta = {"name": name, **({"namespace": namespace} if namespace else {})}
    return {"apiVersion": api, "kind": kind, "metadata": meta, **body}


def binding(name: str, subjects, role_kind="Role", role="r", namespace="app") -> dict:
    return obj(
        "RoleBinding",
        name,
        namespace,
        api=RBAC,
        subjects=subjects,
        roleRef={"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role},
    )


def sa(name: str, namespace: str | None = None) -> dict:
    return {"kind": "ServiceAccount", "name": name, **({"namespace": namespace} if namespace else {})}


def check(objects, scope=Scope(frozenset({"app"}))):
    result = check_scope(objects, scope, namespaced)
    return (
        [f"{o['kind']}/{o['metadata']['name']}" for o in result.allowed],
        {f"{r.ref.kind}/{r.ref.name}": r.reason for r in result.refused},
    )


def test_the_app_and_its_own_rbac_are_allowed():
    allowed, refused = check(
        [
            obj("Namespace", "app", None),
            obj("ConfigMap", "c"),
            obj("Role", "r", api=RBAC),
            binding("own", [sa("db", "app")]),
            binding("own-implicit-namespace", [sa("db")]),
            *(binding(f"std-{r}", [sa("db")], "ClusterRole", r) for r in ("admin", "edit", "view")),
        ]
    )
    assert refused == {}
    assert len(allowed) == 8


def test_scope_comes_from_the_api_server_not_from_the_object():
    # GIVEN a ClusterRoleBinding that names the restore's namespace, as if it were namespaced
    crb = obj("ClusterRoleBinding", "x", "app", api=RBAC, subjects=[sa("db", "app")])

    # THEN it is still cluster-scoped: refused by default, and allowed without that namespace
    _, refused = check([crb])
    assert refused["ClusterRoleBinding/x"].startswith("cluster-scoped")
    result = check_scope([crb], Scope(frozenset({"app"}), cluster_resources=True), namespaced)
    assert "namespace" not in result.allowed[0]["metadata"]
    assert crb["metadata"]["namespace"] == "app"  # the input is left as it was


def test_namespaced_objects_elsewhere_or_nowhere_are_refused_even_with_cluster_resources():
    objects = [obj("ConfigMap", "other", "kube-system"), obj("Secret", "nowhere", None)]
    for flag in (False, True):
        allowed, refused = check(objects, Scope(frozenset({"app"}), cluster_resources=flag))
        assert allowed == []
        assert "outside the restore's namespaces (app)" in refused["ConfigMap/other"]
        assert refused["Secret/nowhere"] == "namespaced kind without a namespace"


def test_bindings_reaching_outside_are_refused_with_each_reason():
    _, refused = check(
        [
            binding("user", [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "alice"}]),
            binding("group", [{"kind": "Group", "name": "system:masters"}]),
            binding("foreign", [sa("db"), sa("default", "kube-system")]),
            binding("cluster-admin", [sa("db")], "ClusterRole", "cluster-admin"),
            binding("custom", [sa("db")], "ClusterRole", "operator-role"),
            binding("odd-role", [sa("db")], "Something", "x"),
            binding("odd-subject", ["db"]),
            binding("sa-with-group", [{"kind": "ServiceAccount", "apiGroup": "example.com", "name": "db"}]),
        ]
    )
    assert "subject User alice" in refused["RoleBinding/user"]
    assert "subject Group system:masters" in refused["RoleBinding/group"]
    assert "subject ServiceAccount kube-system/default" in refused["RoleBinding/foreign"]
    assert "ClusterRole cluster-admin" in refused["RoleBinding/cluster-admin"]
    assert "ClusterRole operator-role" in refused["RoleBinding/custom"]
    assert "role Something x" in refused["RoleBinding/odd-role"]
    assert "a subject that is not an object" in refused["RoleBinding/odd-subject"]
    assert "subject ServiceAccount db" in refused["RoleBinding/sa-with-group"]
    assert all(r.endswith("created only with --cluster-resources") for r in refused.values())


def test_cluster_resources_allows_cluster_objects_and_wider_bindings():
    objects = [
        obj("Namespace", "other", None),
        obj("CustomResourceDefinition", "dbs.example.com", None, api="apiextensions.k8s.io/v1"),
        binding("group", [{"kind": "Group", "name": "devs"}], "ClusterRole", "cluster-admin"),
    ]
    allowed, refused = check(objects, Scope(frozenset({"app"}), cluster_resources=True))
    assert refused == {} and len(allowed) == 3


def test_the_namespace_map_names_more_namespaces():
    scope = Scope.of("app-restored", ["monitoring-dr"])
    assert scope.namespaces == {"app-restored", "monitoring-dr"}
    allowed, refused = check(
        [
            obj("ConfigMap", "a", "app-restored"),
            obj("ConfigMap", "b", "monitoring-dr"),
            obj("ConfigMap", "c"),
        ],
        scope,
    )
    assert allowed == ["ConfigMap/a", "ConfigMap/b"] and list(refused) == ["ConfigMap/c"]
    assert Scope.of("", []).namespaces == frozenset()


def test_objects_without_api_version_or_kind_are_refused():
    _, refused = check([{"kind": "ConfigMap", "metadata": {"name": "x", "namespace": "app"}}])
    assert refused == {"ConfigMap/x": "no apiVersion or kind"}


names = st.sampled_from(["app", "other", "kube-system", ""])
kinds = st.sampled_from(["ConfigMap", "RoleBinding", "Namespace", "ClusterRoleBinding", "PersistentVolume"])
subjects = st.lists(
    st.fixed_dictionaries(
        {"kind": st.sampled_from(["ServiceAccount", "User", "Group"]), "name": st.just("s")},
        optional={"namespace": names},
    ),
    max_size=3,
)


@settings(max_examples=300, derandomize=True, deadline=None)
@given(
    st.lists(
        st.builds(
            lambda kind, name, ns, subj, role: {
                "apiVersion": RBAC if "Binding" in kind else "v1",
                "kind": kind,
                "metadata": {"name": name or "n", **({"namespace": ns} if ns else {})},
                "subjects": subj,
                "roleRef": {"kind": role[0], "name": role[1]},
            },
            kinds,
            names,
            names,
            subjects,
            st.sampled_from([("Role", "r"), ("ClusterRole", "view"), ("ClusterRole", "cluster-admin")]),
        ),
        max_size=8,
    )
)
def test_without_the_flag_nothing_allowed_reaches_outside_the_scope(objects):
    result = check_scope(objects, Scope(frozenset({"app"})), namespaced)
    assert len(result.allowed) + len(result.refused) == len(objects)
    for o in result.allowed:
        if o["kind"] == "Namespace":
            assert o["metadata"]["name"] == "app"
            continue
        assert o["kind"] not in CLUSTER_KINDS
        assert o["metadata"]["namespace"] == "app"
        if o["kind"] == "RoleBinding":
            assert all(s["kind"] == "ServiceAccount" for s in o["subjects"])
            assert all(s.get("namespace") in (None, "", "app") for s in o["subjects"])
            assert o["roleRef"] != {"kind": "ClusterRole", "name": "cluster-admin"}


def test_a_namespace_is_never_created_with_privileged_pod_security_without_the_flag():
    privileged = obj("Namespace", "app", None, api="v1")
    privileged["metadata"]["labels"] = {"pod-security.kubernetes.io/enforce": " Privileged"}
    baseline = obj("Namespace", "app", None, api="v1")
    baseline["metadata"]["labels"] = {"pod-security.kubernetes.io/enforce": "baseline"}

    # a namespace the restore would create: refused with privileged, allowed with another level
    _, refused = check([privileged])
    assert "Pod Security pod-security.kubernetes.io/enforce=privileged" in refused["Namespace/app"]
    assert check([baseline]) == (["Namespace/app"], {})
    # a namespace that exists is never changed by the restore; with the flag, the user chose
    assert check([privileged], Scope(frozenset({"app"}), existing=frozenset({"app"})))[1] == {}
    assert check([privileged], Scope(frozenset({"app"}), cluster_resources=True))[1] == {}
    assert Scope.of("app", ["b"], exists=lambda ns: ns == "b").existing == {"b"}
