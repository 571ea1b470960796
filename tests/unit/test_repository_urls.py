"""One canonical repository URL: every spelling of one repository normalises to one string, and what
cannot name a repository unambiguously is refused in one line naming the URL and what was expected.
The steps (open_store), the policy loader and its check that namespaces do not share a repository,
and the report all go through the same function."""

from __future__ import annotations

import copy

import pytest

from steps.drivers.objectstore import open_store
from steps.drivers.repourl import canonical_repo_url, check_endpoint, parse_repo_url, same_repository
from steps.errors import UsageError
from workflows.policy import load_policies, repository_sharing

SPELLINGS = [
    # (as written, canonical)
    ("s3://backups/shop", "s3://backups/shop"),
    ("s3://backups/shop/", "s3://backups/shop"),
    ("s3://backups//shop", "s3://backups/shop"),
    ("s3://backups/shop//", "s3://backups/shop"),
    ("s3://backups/a//b///c/", "s3://backups/a/b/c"),
    ("S3://backups/shop", "s3://backups/shop"),
    ("s3://backups", "s3://backups"),
    ("s3://backups/", "s3://backups"),
    ("s3://backups//", "s3://backups"),
    ("s3://my.bucket-1/x.y/z-1_2", "s3://my.bucket-1/x.y/z-1_2"),
    ("s3://backups/ünïcode", "s3://backups/ünïcode"),
    ("file:///srv/backups", "file:///srv/backups"),
    ("file:///srv/backups/", "file:///srv/backups"),
    ("file:///srv//backups", "file:///srv/backups"),
    ("file:////srv/backups", "file:///srv/backups"),
    ("file://localhost/srv/backups", "file:///srv/backups"),
    ("file://LOCALHOST/srv/backups", "file:///srv/backups"),
    ("file:/srv/backups", "file:///srv/backups"),
    ("FILE:///srv/backups", "file:///srv/backups"),
    ("mem://unit", "mem://unit"),
    ("mem://unit/", "mem://unit"),
    ("mem://", "mem://default"),
]


@pytest.mark.parametrize(("url", "canonical"), SPELLINGS)
def test_each_spelling_normalises_to_one_canonical_url(url, canonical):
    assert canonical_repo_url(url) == canonical
    assert canonical_repo_url(canonical) == canonical  # idempotent
    assert same_repository(url, canonical)


REFUSED = [
    # (URL, what the one-line message must say)
    (
        "s3://backups/p/../q",
        "--repo: expected a prefix without '.' or '..' segments, got 's3://backups/p/../q'",
    ),
    ("s3://backups/..", "expected a prefix without '.' or '..' segments"),
    ("s3://backups/./shop", "expected a prefix without '.' or '..' segments"),
    ("file:///srv/backups/../etc", "expected a path without '.' or '..' segments"),
    ("s3://backups/shop?versionId=3", "expected a repository URL without a query string or fragment"),
    ("s3://backups/shop#x", "expected a repository URL without a query string or fragment"),
    ("file:///srv/backups?x=1", "expected a repository URL without a query string or fragment"),
    ("s3://backups/%2e%2e/shop", "without whitespace, control characters, '%' or '\\'"),
    ("s3://backups/a b", "without whitespace, control characters, '%' or '\\'"),
    ("s3://backups/a\nb", "without whitespace, control characters, '%' or '\\'"),
    ("s3://backups/a\\b", "without whitespace, control characters, '%' or '\\'"),
    (
        "file://backup-host/srv/backups",
        "expected file:///PATH or file://localhost/PATH (a local directory, no other host)",
    ),
    ("file://srv/backups", "expected file:///PATH or file://localhost/PATH"),
    ("file:srv/backups", "expected file:///PATH with an absolute PATH"),
    ("file:///", "expected file:///PATH naming a directory below /"),
    ("s3:///shop", "expected s3://BUCKET/PREFIX, got 's3:///shop'"),
    ("s3:backups/shop", "expected s3://BUCKET/PREFIX"),
    ("s3://b/p/../q", "bucket name 'b' is not valid"),
    ("s3://Backups/shop", "bucket name 'Backups' is not valid"),
    ("s3://back..ups/shop", "bucket name 'back..ups' is not valid"),
    ("s3://192.168.0.1/shop", "bucket name '192.168.0.1' is not valid"),
    ("s3://backups:9000/shop", "bucket name 'backups:9000' is not valid"),
    ("https://backups/shop", "expected a repository URL s3://BUCKET/PREFIX (file:///PATH or mem://NAME"),
    ("backups/shop", "expected a repository URL s3://BUCKET/PREFIX"),
    ("", "expected a repository URL s3://BUCKET/PREFIX"),
    ("mem://a/b", "expected mem://NAME"),
    ("s3://backups/" + "p/" * 500, "expected a prefix of at most 900 bytes"),
    ("s3://backups/\udcff", "expected a repository URL of valid UTF-8 text"),
]


@pytest.mark.parametrize(("url", "message"), REFUSED)
def test_ambiguous_or_malformed_urls_are_refused_in_one_line(url, message):
    with pytest.raises(UsageError) as err:
        parse_repo_url(url)
    text = str(err.value)
    assert text.startswith("--repo: ")
    assert message in text
    assert "\n" not in text and len(text) < 400


def test_credentials_in_a_url_are_never_echoed():
    with pytest.raises(UsageError) as err:
        parse_repo_url("s3://AKIAEXAMPLE:hunter2@backups/shop", "spec.repository.url")
    assert str(err.value).startswith("spec.repository.url: bucket name '***@backups' is not valid")
    assert "hunter2" not in str(err.value) and "AKIAEXAMPLE" not in str(err.value)


@pytest.mark.parametrize(
    ("endpoint", "canonical"),
    [
        ("http://127.0.0.1:8333", "http://127.0.0.1:8333"),
        ("http://127.0.0.1:8333/", "http://127.0.0.1:8333"),
        ("HTTPS://MinIO.Example:9000", "https://minio.example:9000"),
        ("https://[::1]:9000", "https://[::1]:9000"),
    ],
)
def test_endpoints_are_normalised(endpoint, canonical):
    assert check_endpoint(endpoint) == canonical


@pytest.mark.parametrize(
    ("endpoint", "message"),
    [
        ("http://[::1", "Invalid IPv6 URL"),
        ("http://127.0.0.1:99999", "Port out of range"),
        ("minio:9000", "expected an http:// or https:// URL"),
        ("https://key:secret@minio:9000", "without credentials"),
        ("https://minio:9000/bucket", "without a path, query or fragment"),
    ],
)
def test_bad_endpoints_are_refused_in_one_line(endpoint, message):
    with pytest.raises(UsageError) as err:
        check_endpoint(endpoint)
    assert str(err.value).startswith("--endpoint: expected an http:// or https:// URL")
    assert message in str(err.value)
    assert "secret" not in str(err.value)


def test_two_spellings_open_the_same_store(tmp_path):
    a = open_store("s3://backups//shop/", endpoint="http://127.0.0.1:1")
    b = open_store("s3://backups/shop", endpoint="http://127.0.0.1:1/")
    assert a.url == b.url == "s3://backups/shop"
    assert (a.bucket, a.prefix) == (b.bucket, b.prefix) == ("backups", "shop/")
    c = open_store(f"file://localhost{tmp_path}//repo/")
    d = open_store(f"file://{tmp_path}/repo")
    assert c.url == d.url == f"file://{tmp_path}/repo"
    assert c.root == d.root


def _policy(minimal_policy, namespace: str, url: str) -> dict:
    doc = copy.deepcopy(minimal_policy)
    doc["metadata"]["namespace"] = namespace
    doc["spec"]["repository"]["url"] = url
    return doc


def test_policies_hold_the_canonical_url(minimal_policy, write_policy):
    doc = _policy(minimal_policy, "shop", "s3://backups//shop/")
    doc["spec"]["repository"]["endpoint"] = "https://MinIO.example:9000/"
    (item,) = load_policies([write_policy(doc)])
    assert item.policy.spec.repository.url == "s3://backups/shop"
    assert item.policy.spec.repository.endpoint == "https://minio.example:9000"


def test_a_bad_policy_url_is_one_line_naming_the_field(minimal_policy, write_policy):
    from workflows.policy import PolicyError

    path = write_policy(_policy(minimal_policy, "shop", "s3://backups/shop/../billing"))
    with pytest.raises(PolicyError) as err:
        load_policies([path])
    assert err.value.problems == [
        f"{path}: spec.repository.url: expected a prefix without '.' or '..' segments, "
        "got 's3://backups/shop/../billing'"
    ]


def test_sharing_check_sees_two_spellings_of_one_repository(minimal_policy, write_policy):
    # GIVEN two namespaces whose policies spell one repository differently
    docs = [
        _policy(minimal_policy, "shop", "s3://backups//shop"),
        _policy(minimal_policy, "billing", "s3://backups/shop/"),
    ]
    # WHEN their sharing is checked THEN both are refused, naming the canonical URL
    problems, _ = repository_sharing(load_policies([write_policy(docs)]))
    assert len(problems) == 2
    assert all("spec.repository.shared: expected true to share s3://backups/shop with" in p for p in problems)


def test_lint_refuses_two_namespaces_sharing_one_repository_spelled_differently(
    minimal_policy, write_policy, capsys
):
    from workflows.cli import main

    path = write_policy(
        [
            _policy(minimal_policy, "shop", "s3://backups//shop"),
            _policy(minimal_policy, "billing", "s3://backups/shop"),
        ]
    )
    assert main(["lint", str(path)]) == 2
    err = capsys.readouterr().err
    assert "spec.repository.shared: expected true to share s3://backups/shop with namespace(s) billing" in err
    assert "Traceback" not in err


def test_the_report_names_the_canonical_url(tmp_path, monkeypatch):
    from steps.repository.repo import Repository
    from workflows.report import collect

    monkeypatch.setenv("SNAPFLOW_PASSWORD", "pw")
    monkeypatch.setenv("SNAPFLOW_KDF_TEST_N", "1024")
    Repository.init(open_store(f"file://{tmp_path}/repo"), "pw")
    report = collect(f"file://localhost{tmp_path}//repo/", now=0)
    assert report.repository == f"file://{tmp_path}/repo"
