"""Names a real Linux directory can hold — newlines, control characters, non-UTF-8 bytes, leading dashes,
255-byte names, ``...``, two spellings of "é" side by side — survive a real ``copy`` and ``restore`` byte
for byte, with modes, owners, times, symlink targets and hard links. The restore runs as root in the
sandbox of tests/fixtures/hostile.py: the rules that refuse hostile names refuse none of these."""

from __future__ import annotations

import os

from tests.fixtures.hostile import describe, run_cli

NAMES: list[bytes] = [
    b"new\nline",
    b"tab\there",
    b"carriage\rreturn",
    b"\x1b[31mansi escape",
    b"del\x7f",
    b"latin1-\xe9t\xe9",
    b"\xff\xfe",
    b"\x80",
    b"mixed-\xc3\xa9-\xe9",
    b"-rf",
    b"--help",
    b"-",
    b"--",
    b"a" * 255,
    b"\xe9" * 255,
    "é".encode() * 127,
    b"...",
    b"....",
    b".hidden",
    b"..hidden",
    b" leading space",
    b"trailing space ",
    b"back\\slash",
    b"*?[glob]",
    b"~tilde",
    b"$(echo pwned)",
    b"'quote\"",
    "emoji 🙂".encode(),
    "e\u0301 (decomposed)".encode(),
    "\u00e9 (composed)".encode(),
    b"lost+found",
]


def _build(root: bytes) -> None:
    os.mkdir(root)
    for i, name in enumerate(NAMES):
        with open(os.path.join(root, name), "wb") as f:
            f.write(name + b"\n" + bytes([i]) * i)
        os.chmod(os.path.join(root, name), 0o600 + (i % 8) * 0o10)
    for name in (b"...", b"new\ndir", b"\xe9" * 255, b"-d"):
        d = os.path.join(root, b"dirs", name)
        os.makedirs(d)
        with open(os.path.join(d, b"--inner\n"), "wb") as f:
            f.write(b"inner of " + name)
        os.symlink(b"../" + name + b"/--inner\n", os.path.join(d, b"link\xff"))
    deep = os.path.join(root, b"deep")
    for level in range(8):
        deep = os.path.join(deep, bytes([0x41 + level]) * 255)
    os.makedirs(deep)
    with open(os.path.join(deep, b"bottom"), "wb") as f:
        f.write(b"at the bottom of 2 KiB of path\n")
    os.link(os.path.join(root, b"new\nline"), os.path.join(root, b"dirs", b"hard\nlink"))
    os.symlink(b"new\nline", os.path.join(root, b"symlink\nto newline"))
    os.symlink(b"\xff\xfe", os.path.join(root, b"symlink-to-\xff"))
    os.symlink(b"-rf", os.path.join(root, b"-symlink"))
    os.mkfifo(os.path.join(root, b"fifo\n"))
    if os.geteuid() == 0:  # other owners (CI runs as root)
        os.chown(os.path.join(root, b"-rf"), 1234, 5678)
        os.chown(os.path.join(root, b"symlink\nto newline"), 4321, 8765, follow_symlinks=False)
    old = 1_500_000_000_123_456_789
    for dirpath, dirs, files in os.walk(root, topdown=False):
        for name in dirs + files:
            os.utime(os.path.join(dirpath, name), ns=(old, old), follow_symlinks=False)
    os.utime(root, ns=(old, old))


def _comparable(described: dict[str, dict]) -> dict[str, dict]:
    """A description without inode numbers and link counts, hard-link groups named by their first path."""
    groups: dict[int, str] = {}
    out = {}
    for rel in sorted(described):
        e = dict(described[rel])
        ino, nlink = e.pop("ino", None), e.pop("nlink", 1)
        if e["type"] == "file" and nlink > 1:
            e["hard_link_group"] = groups.setdefault(ino, rel)
        out[rel] = e
    return out


def test_names_a_directory_can_hold_survive_copy_and_restore_byte_for_byte(hostile_repo, tmp_path):
    # GIVEN a directory whose names hold newlines, control characters, non-UTF-8 bytes, leading dashes,
    # 255 bytes, only dots, and two spellings of one letter; with symlinks, hard links, a fifo, owners
    source = os.path.join(os.fsencode(tmp_path), b"source")
    _build(source)
    expected = _comparable(describe(source, inodes=True))
    assert len(expected) > len(NAMES) + 20

    # WHEN it is copied into the repository and restored into an empty target
    res = run_cli("copy", "--repo", hostile_repo.url, "--source", os.fsdecode(source))
    assert res.returncode == 0, res.stderr
    snapshot = res.stdout.split()[-1]
    report = hostile_repo.sandbox.run(["--snapshot", snapshot], fresh=True)

    # THEN every name, type, mode, owner, time, content, symlink target and hard link is back, exactly
    run = report.last
    assert run.rc == 0, run.show()
    # the repository is read-only in the sandbox: the restore's audit record cannot be stored (a warning);
    # nothing else may warn
    warnings = [ln for ln in run.stderr.splitlines() if "warning" in ln]
    assert [w for w in warnings if "audit: the record of restore was not stored" not in w] == [], run.show()
    restored = _comparable(report.last.target)
    missing = sorted(set(expected) - set(restored))
    extra = sorted(set(restored) - set(expected))
    assert not missing and not extra, f"missing {missing}, extra {extra}"
    different = {rel: (expected[rel], restored[rel]) for rel in expected if expected[rel] != restored[rel]}
    assert not different, different
    assert not report.outside_changes(run), report.outside_changes(run)
