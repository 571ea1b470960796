"""Re-homing images: the one rule that moves an image reference from one registry (or registry path)
to another, shared by ``registry-restore --rehome OLD=NEW`` (which pushes the images there) and
restore-app's image transform (``--image-registry OLD=NEW``, ``imageRegistryMap`` in a transforms file:
which makes the restored workloads pull them from there).

A rule ``OLD=NEW`` names a ``HOST[/PATH]`` prefix and its replacement. It applies to an image's name
(``HOST/REPOSITORY``, without tag and digest) when OLD is the whole name or a prefix of it on a ``/``
boundary (``harbor.a/shop`` matches ``harbor.a/shop/api`` and ``harbor.a/shop``, never
``harbor.a/shopping``); the longest matching OLD wins, whatever the order the rules were given in. The
tag and digest are kept: ``harbor.a/shop/api:v1@sha256:...`` with ``harbor.a/shop=harbor.b/dr`` is
``harbor.b/dr/api:v1@sha256:...``, the same image. Names are compared as the kubelet reads them:
``postgres:16`` is ``docker.io/library/postgres:16`` (a first segment is a host when it holds a ``.``
or a ``:`` or is ``localhost``); an image no rule matches is left exactly as written.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from steps.errors import UsageError, printable


def normalize_image(image: str) -> str:
    """The fully qualified form of an image reference: ``postgres:16`` → ``docker.io/library/postgres:16``."""
    first, sep, _rest = image.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return image
    if not sep:
        return f"docker.io/library/{image}"
    return f"docker.io/{image}"


def split_image(image: str) -> tuple[str, str]:
    """``(HOST/REPOSITORY, ":TAG@DIGEST")`` of a reference (either part of the suffix may be absent)."""
    name, at, digest = image.partition("@")
    suffix = f"@{digest}" if at else ""
    head, slash, last = name.rpartition("/")
    if ":" in last:
        last, _, tag = last.partition(":")
        suffix = f":{tag}{suffix}"
    return f"{head}{slash}{last}", suffix


def rehome_name(name: str, rules: Mapping[str, str]) -> str | None:
    """``name`` (``HOST/PATH``) moved by the longest rule whose OLD is it or a ``/``-prefix of it; None
    when no rule matches."""
    best = None
    for old in rules:
        prefix = old.rstrip("/")
        if (name == prefix or name.startswith(prefix + "/")) and (best is None or len(prefix) > len(best)):
            best = prefix
    if best is None:
        return None
    return rules[best if best in rules else best + "/"].rstrip("/") + name[len(best) :]


def rehome_image(image: str, rules: Mapping[str, str]) -> str:
    """An image reference re-homed by ``rules``, its tag and digest kept; unchanged when none matches."""
    if not rules or not isinstance(image, str):
        return image
    name, suffix = split_image(normalize_image(image))
    moved = rehome_name(name, {old.rstrip("/"): new for old, new in rules.items()})
    return image if moved is None else moved + suffix


def parse_rehome(values: Iterable[str], where: str) -> dict[str, str]:
    """``["OLD=NEW", ...]`` → ``{OLD: NEW}`` (trailing ``/`` dropped); one line naming ``where`` for a
    pair that does not parse or an OLD given twice with different NEWs."""
    rules: dict[str, str] = {}
    for raw in values:
        old, sep, new = raw.partition("=")
        old, new = old.strip().rstrip("/"), new.strip().rstrip("/")
        if not sep or not old or not new:
            raise UsageError(
                f"{where}: expected OLD=NEW, each HOST[/PATH] (e.g. harbor.a/proj=harbor.b/proj), got {printable(raw)!r}"
            )
        if rules.get(old, new) != new:
            raise UsageError(f"{where}: {old} is moved twice, to {rules[old]} and to {new}")
        rules[old] = new
    return rules
