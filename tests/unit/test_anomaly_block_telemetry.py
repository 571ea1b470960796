"""A block volume's copy records new data and its compressibility, and no file counts."""

from __future__ import annotations

import random

from steps.repository import anomaly, block_copy
from steps.repository.archiver import CopyOptions

MiB = 1024 * 1024


def _copy(repo, image, parent):
    result = block_copy.copy_block(repo, CopyOptions(source=str(image), parent=parent), None)
    return result.snapshot_id, repo.find_snapshot(result.snapshot_id).data["changes"]


def test_a_block_copy_records_new_bytes_and_their_compressibility_only(mem_repo, tmp_path):
    rng = random.Random(5)
    image = tmp_path / "device.img"
    rows = b"".join(
        b"%d,customer-%d,paid,%d\n" % (i, rng.randrange(10**6), rng.randrange(10**4)) for i in range(400000)
    )
    image.write_bytes(rows[: 8 * MiB].ljust(8 * MiB, b"\0"))  # a database-like volume
    # GIVEN a first copy of the device
    first, changes = _copy(mem_repo, image, None)
    assert changes["bytes_total"] == 8 * MiB and not any(k.startswith("files_") for k in changes)
    # WHEN 1 MiB of text-like data is written, then 3 MiB of random data
    with open(image, "r+b") as f:
        f.seek(2 * MiB)
        f.write((b"INSERT INTO orders VALUES (42, 'paid');\n" * 30000)[:MiB])
    second, text = _copy(mem_repo, image, first)
    with open(image, "r+b") as f:  # (3 MiB to the end: random data outweighs the text cut anew around it)
        f.seek(5 * MiB)
        f.write(rng.randbytes(3 * MiB))
    _, noise = _copy(mem_repo, image, second)
    # THEN each copy stored that MiB new and the chunks around it, cut anew (where the cuts fall depends on
    # the repository's random chunker key: 1.3-4.6 MiB seen), never the 8 MiB device again
    for changes in (text, noise):
        assert MiB <= changes["new_bytes"] < 7 * MiB and changes["new_bytes_stored"] > 0
    # AND the text's new data compresses well, the random data's far less
    text_changes, noise_changes = anomaly.backup_changes([text]), anomaly.backup_changes([noise])
    # (0.75-0.9: by where the cuts around the change fall, which the repository's random chunker key decides)
    assert text_changes["newDataCompressibility"] > 0.7
    assert noise_changes["newDataCompressibility"] < text_changes["newDataCompressibility"] - 0.3
    # stored new: at least the random 3 MiB, which do not shrink
    assert noise["new_bytes_stored"] >= 3 * MiB
    # AND a backup of block volumes only has no file counts
    assert text_changes["filesTotal"] is None and text_changes["filesChanged"] is None
