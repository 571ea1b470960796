"""Repository URLs: the one parser and normaliser every caller uses.

A repository is named by one of::

    s3://BUCKET[/PREFIX]        an S3 bucket and a key prefix inside it
    file:///PATH                a local directory (also file://localhost/PATH and file:/PATH)
    mem://NAME                  an in-process store (tests)

:func:`parse_repo_url` checks a URL and returns a :class:`RepoURL` whose ``url`` is the canonical
spelling; two spellings of one repository give the same canonical URL, so callers compare those
(``open_store``, the policy loader and its check that namespaces do not share a repository, the
report). The rules:

- the scheme is case-insensitive; the canonical URL spells it in lower case;
- empty path segments are dropped (``s3://backups//shop/`` is ``s3://backups/shop``, as
  ``/srv//backups/`` is ``/srv/backups``), and so is a trailing ``/``;
- ``.`` and ``..`` segments are refused: a prefix names a place, it does not walk to one;
- query strings and fragments (``?``, ``#``), percent signs (nothing is percent-decoded, so ``%41``
  and ``A`` would name different keys), backslashes, whitespace and control characters are refused;
- an S3 bucket is 3-63 lower-case letters, digits, ``.`` and ``-``, starting and ending with a letter
  or digit, without ``..`` and not shaped like an IP address; no user, password or port in it;
- ``file://HOST/PATH`` is refused unless HOST is empty or ``localhost``; PATH must be absolute and
  not ``/`` itself.

:func:`check_endpoint` does the same for an S3 endpoint (``https://HOST:PORT``, nothing else).

Errors are :class:`steps.errors.UsageError`, one line naming the field, what was expected and the URL
(with anything before an ``@`` in the host hidden, in case it held credentials). This module imports
nothing heavy: the policy loader uses it too.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass

from steps.errors import UsageError

SCHEMES = ("s3", "file", "mem")
EXPECTED = "s3://BUCKET/PREFIX (file:///PATH or mem://NAME for local runs)"

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_IPV4 = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")
_MEM_NAME = re.compile(r"^[A-Za-z0-9._-]*$")
_FORBIDDEN = re.compile(r"[\s\x00-\x1f\x7f%\\]")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):(.*)$", re.DOTALL)
MAX_PREFIX_BYTES = 900  # S3 keys are at most 1024 bytes; the repository's own keys need ~80 of them


@dataclass(frozen=True)
class RepoURL:
    """A checked repository URL: ``scheme`` s3|file|mem, ``bucket`` (s3) or store name (mem), and
    ``path``: the S3 prefix without leading or trailing ``/`` (empty: the whole bucket), or the
    absolute directory of a file repository."""

    scheme: str
    bucket: str = ""
    path: str = ""

    @property
    def url(self) -> str:
        return format_repo_url(self.scheme, self.bucket, self.path)

    def __str__(self) -> str:
        return self.url


def format_repo_url(scheme: str, bucket: str = "", path: str = "") -> str:
    """The canonical spelling of already-normalised parts (what :attr:`RepoURL.url` returns)."""
    if scheme == "s3":
        return f"s3://{bucket}/{path}" if path else f"s3://{bucket}"
    if scheme == "file":
        return f"file://{path}"
    return f"mem://{bucket}"


def redact(url: str) -> str:
    """``url`` with anything before an ``@`` in its host part hidden (it may be a secret), and cut to a
    length that fits on one line."""
    text = str(url)
    m = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*://)([^/?#]*@)(.*)$", text, re.DOTALL)
    if m:
        text = f"{m.group(1)}***@{m.group(3)}"
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= 200 else text[:200] + "..."


def _fail(field: str, expected: str, url: str) -> UsageError:
    prefix = f"{field}: " if field else ""
    return UsageError(f"{prefix}expected {expected}, got {redact(url)!r}")


def _segments(path: str, field: str, url: str, what: str) -> list[str]:
    parts = [p for p in path.split("/") if p]
    if any(p in (".", "..") for p in parts):
        raise _fail(field, f"a {what} without '.' or '..' segments", url)
    return parts


def parse_repo_url(url: str, field: str = "--repo") -> RepoURL:
    """Check ``url`` and return its parts; raises UsageError naming ``field`` (e.g. ``--repo`` or
    ``spec.repository.url``; empty for no field name) and what was expected."""
    if not isinstance(url, str) or not url:
        raise _fail(field, f"a repository URL {EXPECTED}", str(url or ""))
    try:
        url.encode("utf-8")
    except UnicodeEncodeError:
        raise _fail(field, "a repository URL of valid UTF-8 text", url) from None
    m = _SCHEME.match(url)
    scheme = m.group(1).lower() if m else ""
    if scheme not in SCHEMES:
        raise _fail(field, f"a repository URL {EXPECTED}", url)
    if "?" in url or "#" in url:
        raise _fail(field, "a repository URL without a query string or fragment ('?', '#')", url)
    bad = _FORBIDDEN.search(url)
    if bad:
        raise _fail(
            field,
            "a repository URL without whitespace, control characters, '%' or '\\' "
            "(nothing is percent-decoded)",
            url,
        )
    rest = m.group(2)

    if scheme == "s3":
        if not rest.startswith("//"):
            raise _fail(field, "s3://BUCKET/PREFIX", url)
        bucket, _, path = rest[2:].partition("/")
        if not bucket:
            raise _fail(field, "s3://BUCKET/PREFIX", url)
        if not _BUCKET.match(bucket) or ".." in bucket or _IPV4.match(bucket):
            prefix = f"{field}: " if field else ""
            shown = "***" + bucket[bucket.rindex("@") :] if "@" in bucket else bucket
            raise UsageError(
                f"{prefix}bucket name {shown!r} is not valid (expected 3-63 lowercase letters, digits, "
                f"'.' or '-'; no user, password or port), in {redact(url)!r}"
            )
        prefix_path = "/".join(_segments(path, field, url, "prefix"))
        if len(prefix_path.encode("utf-8")) > MAX_PREFIX_BYTES:
            raise _fail(field, f"a prefix of at most {MAX_PREFIX_BYTES} bytes", url)
        return RepoURL("s3", bucket, prefix_path)

    if scheme == "file":
        if rest.startswith("//"):
            host, slash, path = rest[2:].partition("/")
            if host.lower() not in ("", "localhost"):
                raise _fail(
                    field, "file:///PATH or file://localhost/PATH (a local directory, no other host)", url
                )
            path = slash + path
        else:
            path = rest
        if not path.startswith("/"):
            raise _fail(field, "file:///PATH with an absolute PATH", url)
        parts = _segments(path, field, url, "path")
        if not parts:
            raise _fail(field, "file:///PATH naming a directory below /", url)
        return RepoURL("file", "", "/" + "/".join(parts))

    # mem: in-process stores for tests
    name = rest[2:] if rest.startswith("//") else rest
    if "/" in name.rstrip("/") or not _MEM_NAME.match(name.rstrip("/")):
        raise _fail(field, "mem://NAME (letters, digits, '.', '_' or '-')", url)
    return RepoURL("mem", name.rstrip("/") or "default", "")


def canonical_repo_url(url: str, field: str = "--repo") -> str:
    """The canonical spelling of ``url`` (see the module's rules); UsageError when it is not valid."""
    return parse_repo_url(url, field).url


def same_repository(a: str, b: str) -> bool:
    """True when two URLs name one repository (both must be valid)."""
    return canonical_repo_url(a) == canonical_repo_url(b)


def check_endpoint(endpoint: str, field: str = "--endpoint") -> str:
    """``endpoint`` checked (http:// or https://, a host, an optional port, nothing else) and normalised:
    scheme and host in lower case, no trailing ``/``. UsageError naming ``field`` otherwise."""
    shown = redact(endpoint)
    expected = f"{field}: " if field else ""
    expected += "expected an http:// or https:// URL like https://HOST:PORT"
    try:
        parsed = urllib.parse.urlsplit(endpoint)
        port = parsed.port
        host = parsed.hostname
    except ValueError as err:
        raise UsageError(f"{expected}, got {shown!r} ({err})") from None
    if parsed.scheme.lower() not in ("http", "https") or not host:
        raise UsageError(f"{expected}, got {shown!r}")
    if parsed.username is not None or parsed.password is not None:
        raise UsageError(f"{expected} without credentials (they come from the environment), got {shown!r}")
    if parsed.path.strip("/") or parsed.query or parsed.fragment or any(c.isspace() for c in endpoint):
        raise UsageError(f"{expected} without a path, query or fragment, got {shown!r}")
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc += f":{port}"
    return f"{parsed.scheme.lower()}://{netloc.lower()}"
