"""A writer racing the restore inside the target — a compromised pod still writing to the volume — swaps
the entries the restore creates for symlinks or hard links to files outside the target while it runs.
Whatever it does, the restore writes, truncates and chmods nothing outside the target: entries are
reached through directory descriptors without following symlinks, and a file is written only while it is
the file the restore created. Restores run as root in the sandbox of tests/fixtures/hostile.py, the
racer in the same sandbox, touching only the target; the restore may fail (on one line) or succeed."""

from __future__ import annotations

import os
import sys

import pytest

# Swaps every entry it finds below the target, again and again, for a symlink or a hard link to a
# file or directory outside (argv: target, victim file, victim directory, what to swap).
RACER = r"""
import os, sys, time
target, victim, victim_dir, how = sys.argv[1:5]
n, end = 0, time.monotonic() + 60
while time.monotonic() < end:
    for dirpath, dirs, files in os.walk(target):
        names = dirs if how == "dirs-to-symlinks" else files
        for name in names:
            if name.startswith(".swap"):
                continue
            path, tmp = os.path.join(dirpath, name), os.path.join(dirpath, f".swap{n}")
            n += 1
            try:
                if how == "files-to-hard-links":
                    os.link(victim, tmp)
                elif how == "files-to-symlinks":
                    os.symlink(victim, tmp)
                else:
                    os.rename(path, tmp)
                    os.symlink(victim_dir, path)
                    continue
                os.rename(tmp, path)
            except OSError:
                pass
"""


@pytest.fixture(scope="module")
def crafted(hostile_repo):
    """Many directories of files written in several pieces (each piece its own blob), and of small ones."""
    with hostile_repo.crafter() as c:
        dirs = []
        for d in range(40):
            files = [
                c.file(f"big-{f}", chunks=[os.urandom(16 * 1024) for _ in range(4)], mode=0o600)
                for f in range(3)
            ]
            files += [c.file(f"small-{f}", os.urandom(100)) for f in range(3)]
            files += [c.file("linked-a", b"one inode\n", nlink=2, inode=90000 + d)]
            files += [c.file("linked-b", b"one inode\n", nlink=2, inode=90000 + d)]
            dirs.append(c.dir(f"d{d:02d}", [c.dir("inner", files[:2]), *files]))
        return c.snapshot(dirs, "race")


HOW = ["files-to-hard-links", "files-to-symlinks", "dirs-to-symlinks"]


@pytest.mark.parametrize("how", HOW)  # a race: a run may miss it
def test_a_writer_racing_in_the_target_cannot_make_the_restore_write_outside(hostile_repo, crafted, how):
    sandbox = hostile_repo.sandbox
    racer = [
        sys.executable,
        "-c",
        RACER,
        str(sandbox.target),
        str(sandbox.victim),
        str(sandbox.outside / "victim-dir"),
        how,
    ]

    # GIVEN a writer that keeps swapping the entries in the target for links to files outside
    # WHEN a snapshot of many directories and multi-piece files is restored meanwhile
    report = sandbox.drive([{"args": ["--snapshot", str(crafted)], "alongside": racer, "timeout": 60}])

    # THEN nothing outside the target changed (however the restore itself ended), never a traceback
    run = report.last
    assert "Traceback" not in run.output, run.show()
    assert run.rc is not None and (run.rc == 0 or len(run.error_lines) == 1), run.show()
    assert not report.outside_changes(run), f"{report.outside_changes(run)}\n{run.show()}"
