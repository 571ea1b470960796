"""The fake API server's ServiceAccount tokens: TokenRequest (audience-bound, with an expiry) and
TokenReview, through the real kubernetes client."""

from __future__ import annotations

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException


@pytest.fixture
def core(kube_server, kube_client):
    kube_server.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "app"}})
    kube_server.create(
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "mover", "namespace": "app"}}
    )
    return client.CoreV1Api(kube_client)


def _token_request(audiences, seconds=600):
    return {"spec": {"audiences": audiences, "expirationSeconds": seconds}}


def test_a_token_for_an_audience_is_reviewed_for_that_audience_only(core, kube_client):
    answer = core.create_namespaced_service_account_token(
        "mover", "app", _token_request(["metadata.example"])
    )
    token = answer.status.token
    assert answer.status.expiration_timestamp is not None
    auth = client.AuthenticationV1Api(kube_client)
    ok = auth.create_token_review({"spec": {"token": token, "audiences": ["metadata.example"]}})
    assert ok.status.authenticated and ok.status.user.username == "system:serviceaccount:app:mover"
    assert ok.status.audiences == ["metadata.example"]
    other = auth.create_token_review({"spec": {"token": token, "audiences": ["elsewhere"]}})
    assert not other.status.authenticated
    forged = auth.create_token_review({"spec": {"token": token + "x", "audiences": ["metadata.example"]}})
    assert not forged.status.authenticated and forged.status.error == "invalid bearer token"


def test_a_token_bound_to_another_audience_does_not_authenticate_to_the_api_server(core, kube_server):
    token = core.create_namespaced_service_account_token(
        "mover", "app", _token_request(["metadata.example"])
    ).status.token
    api = kube_server.api_client(token=token)
    try:
        with pytest.raises(ApiException) as caught:
            client.CoreV1Api(api).list_namespace()
        assert caught.value.status == 401
    finally:
        api.close()


def test_short_lifetimes_and_unknown_service_accounts_are_refused(core):
    with pytest.raises(ApiException) as short:
        core.create_namespaced_service_account_token("mover", "app", _token_request(["a"], seconds=60))
    assert short.value.status == 422 and "less than 10 minutes" in short.value.body
    with pytest.raises(ApiException) as unknown:
        core.create_namespaced_service_account_token("nobody", "app", _token_request(["a"]))
    assert unknown.value.status == 404
