"""spec.access on the fake API server with RBAC enforced and the guardrails' Rego as its admission step
(tests/fakes/kube_gatekeeper.py): each role's rendered ServiceAccount does what the role should through
the real Kubernetes client, and nothing else — no role creates a Workflow that uses a Snapflow
ServiceAccount, reads the repository's Secret or execs into a pod, and a restore goes only where the
policy allows it for that role.

The requests are made with the ServiceAccounts' own tokens, as Argo Server makes them for an SSO user it
mapped to that account (docs/user/access.md).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.fakes.kube_gatekeeper import GatekeeperAdmission
from tests.fixtures.kube import running_fake_kube
from workflows.access import RBAC_RULE, RBAC_RULE_PRECEDENCE, TOKEN_SECRET_TYPE
from workflows.guardrails.settings import DEFAULTS, parameters
from workflows.render import render_files

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "self-service-access.yaml"
OTHER = ROOT / "examples" / "postgresql-statefulset.yaml"  # another policy in the same namespace
ARGO = "argoproj.io"
V = "v1alpha1"


def account(placement: str, role: str) -> tuple[str, str]:
    return ("argo" if placement == "argo" else "shop", f"snapflow.shop.catalog-db-{role}")


def rendered(tmp_path: Path, placement: str) -> list[dict]:
    policy = yaml.safe_load(EXAMPLE.read_text())
    if placement == "delegated":
        policy["spec"]["argoServer"]["delegateRbacToNamespace"] = True
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(policy))
    return [o.obj for o in render_files([path, OTHER]).ordered()]


def workflow(name: str, template: str, **spec) -> dict:
    body = {
        "apiVersion": f"{ARGO}/{V}",
        "kind": "Workflow",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {"workflowTemplateRef": {"name": template}, **spec},
    }
    return body


def restore(name: str, target: str) -> dict:
    return workflow(
        name,
        "restore-app-catalog-db",
        arguments={"parameters": [{"name": "target-namespace", "value": target}]},
    )


def status_of(call) -> tuple[int, str]:
    try:
        call()
    except ApiException as err:
        return err.status, str(err.body)
    return 200, ""


def can(
    api_client, verb: str, resource: str, namespace: str, *, group: str = "", sub: str = "", name: str = ""
) -> bool:
    review = client.AuthorizationV1Api(api_client).create_self_subject_access_review(
        {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {
                "resourceAttributes": {
                    "verb": verb,
                    "group": group,
                    "resource": resource,
                    "subresource": sub,
                    "namespace": namespace,
                    "name": name,
                }
            },
        }
    )
    return bool(review.status.allowed)


@pytest.mark.parametrize("placement", ["argo", "delegated"])
def test_each_role_does_what_it_should_and_no_more(tmp_path, placement):
    objects = rendered(tmp_path, placement)
    with running_fake_kube(tmp_path / "kube") as server:
        # GIVEN the rendered manifests of two policies of namespace shop (one with spec.access) applied by
        # an administrator, the repository's Secret and an app pod, then RBAC enforced and Gatekeeper
        # reviewing writes with the guardrails rendered for the same objects
        for ns in ("argo", "shop", "shop-staging", "elsewhere"):
            server.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        for obj in objects:
            server.create(obj)
        server.create(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "snapflow-repository", "namespace": "shop"},
                "stringData": {"password": "not-for-users"},
            }
        )
        server.create(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "catalog-db-0", "namespace": "shop"},
                "spec": {"containers": [{"name": "postgres", "image": "postgres"}]},
            }
        )
        server.enforce_rbac = True
        gate = GatekeeperAdmission(server, parameters(DEFAULTS, objects)).install()

        # every role's ServiceAccount carries Argo's annotations and has its token Secret beside it
        apis = {}
        for role in ("viewer", "operator", "restorer"):
            ns, name = account(placement, role)
            sa = server.get("serviceaccounts", name, ns)
            assert sa is not None, (role, ns)
            assert RBAC_RULE in sa["metadata"]["annotations"]
            assert sa["metadata"]["annotations"][RBAC_RULE_PRECEDENCE] in {"1", "2", "3"}
            token = server.get("secrets", f"{name}.service-account-token", ns)
            assert token["type"] == TOKEN_SECRET_TYPE
            assert token["metadata"]["annotations"]["kubernetes.io/service-account.name"] == name
            apis[role] = server.api_client(server.service_account_token(ns, name))
        try:
            for role, api in apis.items():
                custom = client.CustomObjectsApi(api)
                core = client.CoreV1Api(api)
                # WHEN each role reads what the Argo UI shows: runs, schedules, templates, step pods, logs
                # THEN it may, for this policy's templates only
                custom.list_namespaced_custom_object(ARGO, V, "shop", "workflows")
                custom.list_namespaced_custom_object(ARGO, V, "shop", "cronworkflows")
                custom.get_namespaced_custom_object(ARGO, V, "shop", "workflowtemplates", "backup-catalog-db")
                assert can(api, "get", "pods", "shop", sub="log", name="catalog-db-0"), role
                code, _ = status_of(
                    lambda c=custom: c.get_namespaced_custom_object(
                        ARGO, V, "shop", "workflowtemplates", "backup-orders-db"
                    )
                )
                assert code == 403, role
                # ... and never reads the repository's Secret, execs into a pod, changes a template or
                # deletes a run, nor creates a pod itself
                code, body = status_of(lambda c=core: c.read_namespaced_secret("snapflow-repository", "shop"))
                assert code == 403 and "not-for-users" not in body, role
                code, _ = status_of(
                    lambda c=core: c.connect_post_namespaced_pod_exec(
                        "catalog-db-0", "shop", command=["sh"], stdout=True
                    )
                )
                assert code == 403, role
                assert not can(api, "create", "pods", "shop", sub="exec", name="catalog-db-0"), role
                assert not can(
                    api, "patch", "workflowtemplates", "shop", group=ARGO, name="backup-catalog-db"
                )
                assert not can(api, "delete", "workflows", "shop", group=ARGO), role
                assert not can(api, "create", "pods", "shop"), role
                assert not can(api, "list", "secrets", "shop"), role

            # WHEN the viewer submits a backup THEN RBAC refuses it
            viewer = client.CustomObjectsApi(apis["viewer"])
            code, body = status_of(
                lambda: viewer.create_namespaced_custom_object(
                    ARGO, V, "shop", "workflows", workflow("viewer-run", "backup-catalog-db")
                )
            )
            assert code == 403 and 'cannot create resource \\"workflows\\"' in body.replace('\\\\"', '\\"')

            operator = client.CustomObjectsApi(apis["operator"])
            # WHEN the operator runs a backup now and restores into the app's own namespace THEN both
            # are created (Gatekeeper reviewed them and found nothing)
            reviews = gate.reviews
            operator.create_namespaced_custom_object(
                ARGO, V, "shop", "workflows", workflow("backup-now", "backup-catalog-db")
            )
            operator.create_namespaced_custom_object(
                ARGO, V, "shop", "workflows", restore("restore-here", "shop")
            )
            assert gate.reviews == reviews + 2 and not gate.denials
            # WHEN it restores into the restorers' namespace THEN guardrail (c) refuses it
            code, body = status_of(
                lambda: operator.create_namespaced_custom_object(
                    ARGO, V, "shop", "workflows", restore("restore-there", "shop-staging")
                )
            )
            assert code == 403 and "snapflow-restore-targets" in body and "shop-staging" in body
            # WHEN it hand-makes a Workflow running as the backup's ServiceAccount (which RBAC lets it
            # create), or runs the backup template with the copy's account THEN guardrail (b) refuses both
            hand_made = {
                "apiVersion": f"{ARGO}/{V}",
                "kind": "Workflow",
                "metadata": {"name": "hand-made", "namespace": "shop"},
                "spec": {
                    "entrypoint": "main",
                    "serviceAccountName": "snapflow-catalog-db-copy",
                    "templates": [{"name": "main", "container": {"image": "busybox", "command": ["cat"]}}],
                },
            }
            code, body = status_of(
                lambda: operator.create_namespaced_custom_object(ARGO, V, "shop", "workflows", hand_made)
            )
            assert code == 403 and "snapflow-service-accounts" in body and "snapflow-catalog-db-copy" in body
            override = workflow(
                "override", "backup-catalog-db", serviceAccountName="snapflow-catalog-db-capture"
            )
            code, body = status_of(
                lambda: operator.create_namespaced_custom_object(ARGO, V, "shop", "workflows", override)
            )
            assert code == 403 and "snapflow-service-accounts" in body
            assert server.get("workflows", "hand-made", "shop") is None
            assert server.get("workflows", "override", "shop") is None

            restorer = client.CustomObjectsApi(apis["restorer"])
            # WHEN the restorer restores into its listed namespace THEN it may; elsewhere it may not
            restorer.create_namespaced_custom_object(
                ARGO, V, "shop", "workflows", restore("restore-staging", "shop-staging")
            )
            code, body = status_of(
                lambda: restorer.create_namespaced_custom_object(
                    ARGO, V, "shop", "workflows", restore("restore-elsewhere", "elsewhere")
                )
            )
            assert code == 403 and "elsewhere" in body
            code, body = status_of(
                lambda: restorer.create_namespaced_custom_object(ARGO, V, "shop", "workflows", hand_made)
            )
            assert code == 403 and "snapflow-service-accounts" in body

            # AND the platform team (system:masters, exempt from the guardrails) still may
            admin = server.api_client()
            try:
                client.CustomObjectsApi(admin).create_namespaced_custom_object(
                    ARGO, V, "shop", "workflows", hand_made
                )
            finally:
                admin.close()
            assert server.get("workflows", "hand-made", "shop") is not None
        finally:
            for api in apis.values():
                api.close()
            gate.uninstall()

        # AND restore-app's identity may create the app's objects in the listed namespace (its
        # ClusterRole is bound there), and not in any other
        admin = server.api_client()
        try:
            sar = client.AuthorizationV1Api(admin)
            user = "system:serviceaccount:shop:snapflow-catalog-db-restore"

            def restore_app_can(namespace: str) -> bool:
                attrs = {
                    "verb": "create",
                    "group": "apps",
                    "resource": "statefulsets",
                    "namespace": namespace,
                }
                body = {"spec": {"user": user, "resourceAttributes": attrs}}
                return bool(sar.create_subject_access_review(body).status.allowed)

            assert restore_app_can("shop-staging") and restore_app_can("shop")
            assert not restore_app_can("elsewhere")
        finally:
            admin.close()
