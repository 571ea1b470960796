"""Label selectors, object identity, the capture file layout, Pod Security rules and snapshot times."""

from __future__ import annotations

import pytest

from steps.errors import PermanentError, UsageError
from steps.manifests import bundle
from steps.manifests.objects import (
    Ref,
    label_selector_matches,
    parse_selector,
    pod_spec,
    ref,
    selector_matches,
    selector_to_string,
)
from steps.manifests.podsecurity import violations

LABELS = {"app": "db", "tier": "data", "env": "prod"}


@pytest.mark.parametrize(
    ("selector", "matches"),
    [
        ("", True),
        ("app=db", True),
        ("app==db", True),
        ("app=web", False),
        ("app!=web", True),
        ("app!=db", False),
        ("missing!=x", True),
        ("app=db,tier=data", True),
        ("app=db,tier=cache", False),
        ("env in (prod, staging)", True),
        ("env in (dev)", False),
        ("env notin (dev,test)", True),
        ("env notin (prod)", False),
        ("tier", True),
        ("owner", False),
        ("!owner", True),
        ("!app", False),
        ("app=db, env in (prod), !owner", True),
    ],
)
def test_selector_table(selector, matches):
    assert selector_matches(parse_selector(selector), LABELS) is matches


@pytest.mark.parametrize("bad", ["app=(db", "a b", "in (x)", "app=db,,"])
def test_bad_selector_is_a_one_line_error(bad):
    with pytest.raises(UsageError) as err:
        parse_selector(bad)
    assert str(err.value).startswith("--selector: cannot parse")


@pytest.mark.parametrize(
    ("selector", "matches"),
    [
        (None, True),
        ({}, True),
        ({"matchLabels": {"app": "db"}}, True),
        ({"matchLabels": {"app": "db", "x": "y"}}, False),
        ({"matchExpressions": [{"key": "env", "operator": "In", "values": ["prod"]}]}, True),
        ({"matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["prod"]}]}, False),
        ({"matchExpressions": [{"key": "tier", "operator": "Exists"}]}, True),
        ({"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]}, False),
    ],
)
def test_structured_selector(selector, matches):
    assert label_selector_matches(selector, LABELS) is matches


def test_structured_selector_as_query_string():
    s = {
        "matchLabels": {"b": "2", "a": "1"},
        "matchExpressions": [
            {"key": "c", "operator": "In", "values": ["x", "y"]},
            {"key": "d", "operator": "DoesNotExist"},
        ],
    }
    text = selector_to_string(s)
    assert text == "a=1,b=2,c in (x,y),!d"
    assert selector_matches(parse_selector(text), {"a": "1", "b": "2", "c": "y"})


def test_ref_and_its_string():
    r = ref({"apiVersion": "example.com/v1", "kind": "Db", "metadata": {"name": "x", "namespace": "n"}})
    assert r == Ref("example.com", "Db", "n", "x") and str(r) == "Db.example.com/x"
    assert str(Ref("apps", "StatefulSet", "n", "db")) == "StatefulSet/db"


@pytest.mark.parametrize(
    ("obj", "has_spec"),
    [
        (
            {
                "apiVersion": "batch/v1",
                "kind": "CronJob",
                "spec": {"jobTemplate": {"spec": {"template": {"spec": {"a": 1}}}}},
            },
            True,
        ),
        ({"apiVersion": "v1", "kind": "Pod", "spec": {"a": 1}}, True),
        ({"apiVersion": "apps/v1", "kind": "Deployment", "spec": {}}, False),
        ({"apiVersion": "v1", "kind": "ConfigMap"}, False),
    ],
)
def test_pod_spec_of_workloads(obj, has_spec):
    assert (pod_spec(obj) == {"a": 1}) is has_spec


# -- capture files ---------------------------------------------------------------------------------


def test_bundle_round_trip():
    objs = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}},
        {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {"name": "db", "namespace": "shop"},
            "spec": {"replicas": 1},
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "s", "namespace": "shop"},
            "data": {"k": "dmFsdWU="},
        },
    ]
    files = bundle.to_files(objs, {"namespace": "shop", "backup_id": "b1"})
    assert sorted(files) == [
        "capture.json",
        "objects/_cluster/Namespace/shop.yaml",
        "objects/shop/Secret/s.yaml",
        "objects/shop/StatefulSet.apps/db.yaml",
    ]
    back = bundle.from_files(files)
    assert back.objects == objs and back.namespace == "shop" and back.info["backup_id"] == "b1"


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda f: f.pop("capture.json"), "capture.json is missing"),
        (lambda f: f.__setitem__("capture.json", b"{"), "not valid JSON"),
        (
            lambda f: f.__setitem__("capture.json", b'{"format": "snapflow-manifests", "version": 9}'),
            "version 9",
        ),
        (lambda f: f.pop("objects/n/ConfigMap/c.yaml"), "listed in capture.json but missing"),
    ],
)
def test_damaged_bundle_is_refused(mutate, message):
    files = bundle.to_files(
        [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "n"}}],
        {"namespace": "n"},
    )
    mutate(files)
    with pytest.raises(PermanentError, match=message):
        bundle.from_files(files)


# -- Pod Security ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "level", "problem"),
    [
        ({"hostNetwork": True, "containers": []}, "baseline", "hostNetwork=true"),
        ({"volumes": [{"name": "h", "hostPath": {"path": "/"}}], "containers": []}, "baseline", "hostPath"),
        ({"containers": [{"name": "c", "securityContext": {"privileged": True}}]}, "baseline", "privileged"),
        (
            {"containers": [{"name": "c", "securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}}]},
            "baseline",
            "SYS_ADMIN",
        ),
        (
            {
                "containers": [
                    {
                        "name": "c",
                        "securityContext": {
                            "capabilities": {"add": ["CHOWN"], "drop": ["ALL"]},
                            "allowPrivilegeEscalation": False,
                            "runAsNonRoot": True,
                            "seccompProfile": {"type": "RuntimeDefault"},
                        },
                    }
                ]
            },
            "restricted",
            "only NET_BIND_SERVICE",
        ),
        ({"containers": [{"name": "c"}]}, "restricted", "runAsNonRoot must be true"),
        (
            {"securityContext": {"runAsNonRoot": True, "runAsUser": 0}, "containers": [{"name": "c"}]},
            "restricted",
            "runAsUser 0",
        ),
        ({"volumes": [{"name": "g", "gitRepo": {}}], "containers": []}, "restricted", "type gitRepo"),
    ],
)
def test_pod_security_violations(spec, level, problem):
    found = violations(spec, level)
    assert any(problem in v for v in found), found
    assert violations(spec, "privileged") == []


# -- snapshot times --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (1_700_000_000_123_456_789, 1_700_000_000.123456789),
        ("1700000000123456789", 1_700_000_000.123456789),
        ("2023-11-14T22:13:20Z", 1_700_000_000.0),
        ("2023-11-14T22:13:20.25Z", 1_700_000_000.25),
        ("2023-11-14T22:13:20.123456789+00:00", 1_700_000_000.123456789),
        (None, None),
        ("", None),
        ("yesterday", None),
    ],
)
def test_snapshot_times(value, seconds):
    from steps.drivers.snapshot_csi import parse_time

    got = parse_time(value)
    if seconds is None:
        assert got is None
    else:
        assert got == pytest.approx(seconds, abs=1e-6)
