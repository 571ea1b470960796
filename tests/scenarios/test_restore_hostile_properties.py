"""Property: whatever tree a writer crafts — names valid and hostile, files with or without holes and with
right or wrong sizes, directories, symlinks to the outside, fifos, hard-link groups — a restore as root
changes nothing outside the target, never shows a traceback, exits 0 only for a valid tree (restoring it
exactly), refuses an invalid one with nothing written, and with --skip-damaged restores exactly what is
outside the damage. Sometimes the target already holds symlinks to the outside where the snapshot has
entries (restored with --overwrite always or --delete). The trees are judged by this file's own rules,
not by the project's validator. Restores run in the sandbox of tests/fixtures/hostile.py."""

from __future__ import annotations

import hashlib
import itertools
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

VALID_EXTRA = [
    "...",
    "-rf",
    "--",
    "new\nline",
    "a" * 255,
    "lost+found",
    " ",
    "\udcff\udcfe",
    "é",
    "e\u0301",
    "\u00ff",
]
# "\udcc3\udcbf" is how a crafted tree may spell the bytes of "ÿ" (c3 bf): another name for it


def _hostile_names(outside: str) -> list[str]:
    return [
        ".",
        "..",
        "",
        "a/b",
        "../escape",
        "a\0b",
        f"{outside}/victim",
        "/etc/cron.d/job",
        "n" * 256,
        "\ud800",
        "\udcc3\udcbf",
    ]


def name_problem(name: str) -> bool:
    """True when ``name`` cannot be one directory entry."""
    try:
        raw = os.fsencode(name)
    except UnicodeEncodeError:
        return True
    return raw in (b"", b".", b"..") or b"/" in raw or b"\0" in raw or len(raw) > 255


# -- the generated trees ------------------------------------------------------------------------
# An entry: {"name", "kind": file|dir|symlink|fifo|link, ...}; a file has "segments" (bytes for data,
# an int for a hole), "size_delta" (its recorded size minus the right one) and "bad_holes"; a link is a
# file of hard-link group "group"; a dir has "children" (None: no subtree at all).


@st.composite
def names(draw, outside: str) -> str:
    if draw(st.integers(0, 24)) == 0:
        return draw(st.sampled_from(_hostile_names(outside)))
    return draw(
        st.one_of(
            st.text(
                st.characters(blacklist_characters="/\0", blacklist_categories=("Cs",)),
                min_size=1,
                max_size=6,
            ),
            st.sampled_from(VALID_EXTRA),
            st.binary(min_size=1, max_size=4).map(os.fsdecode),
        ).filter(lambda n: not name_problem(n))
    )


@st.composite
def files(draw) -> dict:
    segments = draw(
        st.lists(st.one_of(st.binary(min_size=1, max_size=40), st.integers(1, 5000)), max_size=4).filter(
            lambda s: not any(isinstance(a, int) and isinstance(b, int) for a, b in itertools.pairwise(s))
        )
    )
    damage = draw(st.integers(0, 19))
    return {
        "kind": "file",
        "segments": segments,
        "size_delta": draw(st.sampled_from([1, 7, 100])) if damage == 0 else 0,
        "bad_holes": draw(st.sampled_from(["unsorted", "overlapping", "past-size"])) if damage == 1 else None,
    }


@st.composite
def entries(draw, outside: str, depth: int, min_size: int = 0) -> list[dict]:
    """The entries of one directory (and, for directories among them, theirs, ``depth`` levels down):
    mostly distinct names, sometimes not."""
    targets = [outside, f"{outside}/victim", "../..", "../../outside/victim", "x", "/etc"]
    count = draw(st.integers(min_size, 5))
    distinct = draw(st.integers(0, 3)) > 0
    out: list[dict] = []
    seen: set[str] = set()
    while len(out) < count:
        name = draw(names(outside))
        if distinct and on_disk(name) in seen:
            continue
        seen.add(on_disk(name))
        kind = draw(
            st.sampled_from(["file", "file", "symlink", "fifo", "link", *(["dir"] * 2 * (depth > 0))])
        )
        if kind == "file":
            entry = draw(files())
        elif kind == "symlink":
            entry = {"kind": "symlink", "target": draw(st.sampled_from(targets))}
        elif kind == "link":
            entry = {"kind": "link", "group": draw(st.integers(0, 1))}
        elif kind == "dir":
            entry = {"kind": "dir", "children": draw(st.none() | entries(outside, depth - 1))}
        else:
            entry = {"kind": "fifo"}
        out.append({"name": name, **entry})
    return out


# -- judging a tree -----------------------------------------------------------------------------
def _file_size(spec: dict) -> int:
    return sum(len(s) if isinstance(s, bytes) else s for s in spec["segments"])


def _content(spec: dict) -> bytes:
    return b"".join(s if isinstance(s, bytes) else bytes(s) for s in spec["segments"])


def on_disk(name: str) -> str:
    """The name as the restore creates it, read back (one spelling per file-system name)."""
    try:
        return os.fsdecode(os.fsencode(name))
    except UnicodeEncodeError:  # no file-system name at all
        return name


def tree_invalid(children: list[dict], groups: dict) -> bool:
    """Whether the tree itself breaks the rules (a name, a duplicate on disk, holes), not its subtrees."""
    seen = set()
    for e in children:
        if name_problem(e["name"]) or on_disk(e["name"]) in seen:
            return True
        seen.add(on_disk(e["name"]))
        if e["kind"] == "file" and e["bad_holes"] is not None:
            return True
    return False


def file_damaged(e: dict, groups: dict) -> bool:
    spec = groups[e["group"]] if e["kind"] == "link" else e
    return spec["size_delta"] != 0


def expect(
    children: list[dict] | None, groups: dict, prefix: str = "", links: dict | None = None
) -> tuple[dict, set, bool]:
    """({path: (type, sha256 / symlink target / None)} restored with --skip-damaged, paths that may or
    may not be there (damaged directories themselves), whether anything is damaged); ``links`` collects
    {group: [paths restored]}."""
    links = {} if links is None else links
    if children is None:
        return {}, set(), False
    if tree_invalid(children, groups):
        return {}, set(), True
    out, maybe, damaged = {}, set(), False
    for e in children:
        path = f"{prefix}/{on_disk(e['name'])}" if prefix else on_disk(e["name"])
        kind = e["kind"]
        if kind in ("file", "link"):
            if file_damaged(e, groups):
                damaged = True
                continue
            spec = groups[e["group"]] if kind == "link" else e
            out[path] = ("file", hashlib.sha256(_content(spec)).hexdigest())
            if kind == "link":
                links.setdefault(e["group"], []).append(path)
        elif kind == "dir":
            sub, sub_maybe, sub_damaged = expect(e["children"], groups, path, links)
            if sub_damaged and not sub and tree_invalid(e["children"] or [], groups):
                maybe.add(path)
            else:
                out[path] = ("dir", None)
            out.update(sub)
            maybe |= sub_maybe
            damaged |= sub_damaged
        elif kind == "symlink":
            out[path] = ("symlink", e["target"])
        else:
            out[path] = ("fifo", None)
    return out, maybe, damaged


def _shape(target: dict[str, dict]) -> dict:
    out = {}
    for rel, e in target.items():
        if rel == ".":
            continue
        extra = e.get("sha256") if e["type"] == "file" else e.get("target")
        out[rel] = (e["type"], extra)
    return out


# -- crafting -------------------------------------------------------------------------------------
def _file_node(c, name: str, spec: dict, **fields) -> dict:
    content, holes, pos = [], [], 0
    for seg in spec["segments"]:
        if isinstance(seg, bytes):
            content.append(c.blob(seg))
            pos += len(seg)
        else:
            holes.append([pos, seg])
            pos += seg
    size = pos + spec["size_delta"]  # (a wrong size only ever adds: the holes stay inside it)
    if spec["bad_holes"] == "unsorted":
        holes = [[pos + 10, 5], [pos, 5]]
        size = pos + 15
    elif spec["bad_holes"] == "overlapping":
        holes = [[pos, 10], [pos + 5, 10]]
        size = pos + 15
    elif spec["bad_holes"] == "past-size":
        holes = [[pos, 10]]
        size = pos + 5
    return c._node("file", name, {"size": size, "content": content, "holes": holes, **fields})


def craft(c, children: list[dict], groups: dict, members: dict) -> list[dict]:
    nodes = []
    for e in children:
        kind = e["kind"]
        if kind == "file":
            nodes.append(_file_node(c, e["name"], e))
        elif kind == "link":
            g = e["group"]
            nodes.append(_file_node(c, e["name"], groups[g], inode=77000 + g, nlink=max(2, members[g])))
        elif kind == "dir":
            sub = None if e["children"] is None else craft(c, e["children"], groups, members)
            nodes.append(c.dir(e["name"], sub))
        elif kind == "symlink":
            nodes.append(c.symlink(e["name"], e["target"]))
        else:
            nodes.append(c.fifo(e["name"]))
    return nodes


def _count_links(children: list[dict] | None, members: dict) -> None:
    for e in children or ():
        if e["kind"] == "link":
            members[e["group"]] = members.get(e["group"], 0) + 1
        elif e["kind"] == "dir":
            _count_links(e["children"], members)


# -- the property ---------------------------------------------------------------------------------
@settings(
    max_examples=50,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
@given(data=st.data())
def test_a_crafted_tree_never_changes_anything_outside_the_target(hostile_repo, data):
    outside = str(hostile_repo.sandbox.outside)
    # GIVEN a crafted tree, hard-link groups of valid files, and maybe symlinks to the outside in the
    # target where the snapshot has entries
    root = data.draw(entries(outside, depth=3, min_size=2), label="tree")
    groups = {
        g: {
            "kind": "file",
            "segments": [data.draw(st.binary(min_size=1, max_size=30))],
            "size_delta": 0,
            "bad_holes": None,
        }
        for g in (0, 1)
    }
    skip = data.draw(st.booleans(), label="--skip-damaged")
    prepared = not skip and data.draw(st.booleans(), label="target holds symlinks")
    setup, mode = [], []
    if prepared:
        names_there = sorted({e["name"] for e in root if not name_problem(e["name"])} | {"extra"})
        for i, name in enumerate(names_there):
            setup.append(["symlink", name, [outside, f"{outside}/victim", f"{outside}/victim-dir"][i % 3]])
        mode = data.draw(st.sampled_from([["--overwrite", "always"], ["--delete"]]), label="mode")
    members: dict[int, int] = {}
    _count_links(root, members)
    with hostile_repo.crafter() as c:
        snap = c.snapshot(craft(c, root, groups, members), "property")

    # WHEN it is restored
    args = ["--snapshot", str(snap), *mode, *(["--skip-damaged"] if skip else [])]
    report = hostile_repo.sandbox.run(args)

    # THEN nothing outside the target changed, never a traceback, and the exit code says whether the
    # tree was valid: 0 with exactly its entries, else 1 with nothing written, or 3 (--skip-damaged)
    # with exactly what lies outside the damage
    run = report.last
    assert not report.outside_changes(run), report.outside_changes(run)
    assert "Traceback" not in run.output, run.show()
    links: dict[int, list[str]] = {}
    restorable, maybe, damaged = expect(root, groups, links=links)
    got = _shape(run.target)
    if not damaged:
        assert run.rc == 0, run.show()
        leftovers = {} if not prepared or "--delete" in mode else _shape(report.target_before)
        expected = {
            **{k: v for k, v in leftovers.items() if k not in {p.split("/")[0] for p in restorable}},
            **restorable,
        }
        assert got == expected, run.show()
    elif not skip:
        assert run.rc == 1 and len(run.error_lines) == 1, run.show()
        assert run.target == report.target_before, run.show()
    else:
        assert run.rc == 3 and len(run.error_lines) == 1, run.show()
        assert {k: v for k, v in got.items() if k not in maybe} == restorable, run.show()
    if run.rc in (0, 3):  # the restored names of one hard-link group are one file
        for paths in links.values():
            assert len({run.target[p]["ino"] for p in paths}) == 1, run.show()
