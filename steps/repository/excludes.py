"""The exclude rule of a copy and a restore: ``--exclude`` patterns (``fnmatch``, case-sensitive)
matched against an entry's path relative to the source (``a/b/c``) and against its name alone.

Provides :func:`excluded`. Called by the copy's walk (:mod:`.archiver`), its prescan (:mod:`.scan`),
its cache warmer (:mod:`.scan_warmer`) and the restore (:mod:`.restorer`): one rule, so that what each
of them skips is the same.
"""

from __future__ import annotations

from fnmatch import fnmatchcase


def excluded(rel: str, name: str, patterns) -> bool:
    """Whether the entry ``name`` at ``rel`` (its path below the root, ``/``-separated) is excluded."""
    return any(fnmatchcase(rel, p) or fnmatchcase(name, p) for p in patterns)
