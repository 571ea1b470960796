"""Sample data for the quick demo and the local runner's tests: a small directory tree with what a backup
must keep, and a digest of a tree to compare a restore with its source byte for byte."""

from __future__ import annotations

import hashlib
import os
import random
import stat
from pathlib import Path


def make_sample_data(root: Path, seed: int = 7) -> None:
    """A small directory tree with what a backup must keep: text, binary, a symlink, an empty dir,
    a sparse file, several modes."""
    rnd = random.Random(seed)
    (root / "docs").mkdir(parents=True)
    (root / "media").mkdir()
    (root / "empty").mkdir()
    for i in range(40):
        words = " ".join(rnd.choice(["alpha", "beta", "gamma", "delta", "snap", "flow"]) for _ in range(400))
        (root / "docs" / f"note-{i:02d}.txt").write_text(words + "\n")
    (root / "media" / "blob.bin").write_bytes(rnd.randbytes(3 * 1024 * 1024))
    with open(root / "media" / "sparse.img", "wb") as f:
        f.truncate(8 * 1024 * 1024)
        f.seek(4 * 1024 * 1024)
        f.write(b"data in the middle of a hole")
    (root / "docs" / "latest").symlink_to("note-39.txt")
    os.chmod(root / "docs" / "note-00.txt", 0o600)


def tree_digest(root: Path) -> dict[str, tuple]:
    """Relative path → (kind, mode, size, content hash or link target), for a byte-identical check."""
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode))
            else:
                h = hashlib.sha256(p.read_bytes()).hexdigest()
                out[rel] = ("file", stat.S_IMODE(st.st_mode), st.st_size, h)
    return out
