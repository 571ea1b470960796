"""Owner ID maps: ``FROM:TO[:COUNT]`` ranges, as in user-namespace ID maps. restore-app's transforms
remap pod security contexts with them, and the restore remaps the owners of the restored files with
the same ranges. Pure data, like :mod:`steps.plan`: every layer may read it.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from steps.errors import UsageError

# The largest user or group ID a file can have: IDs are 32 bits, and 4294967295 is (uid_t)-1, which
# chown reads as "leave unchanged".
MAX_ID = 2**32 - 2


@dataclass(frozen=True)
class IdRange:
    """IDs ``source .. source+count-1`` become ``target .. target+count-1``."""

    source: int
    target: int
    count: int = 1

    def map(self, value: int) -> int | None:
        if self.source <= value < self.source + self.count:
            return self.target + (value - self.source)
        return None

    def __str__(self) -> str:
        return f"{self.source}:{self.target}:{self.count}"

    @classmethod
    def parse(cls, text: str, where: str) -> IdRange:
        parts = str(text).split(":")
        try:
            if len(parts) not in (2, 3):
                raise ValueError
            nums = [int(p) for p in parts]
        except ValueError:
            raise UsageError(f"{where}: expected FROM:TO or FROM:TO:COUNT (integers), got {text!r}") from None
        if any(n < 0 for n in nums) or (len(nums) == 3 and nums[2] < 1):
            raise UsageError(f"{where}: IDs must be >= 0 and COUNT >= 1, got {text!r}")
        last = nums[2] - 1 if len(nums) == 3 else 0
        if max(nums[0], nums[1]) + last > MAX_ID:
            raise UsageError(f"{where}: IDs must be at most {MAX_ID} (32 bits), got {text!r}")
        return cls(*nums)


def check_id_ranges(ranges: tuple[IdRange, ...] | list[IdRange], where: str) -> None:
    """Refuse overlapping source ranges (an ID would have two images)."""
    spans = sorted((r.source, r.source + r.count) for r in ranges)
    for (a0, a1), (b0, _) in itertools.pairwise(spans):
        if b0 < a1:
            raise UsageError(f"{where}: ranges starting at {a0} and {b0} overlap")


def parse_id_map(values: list[str] | None, flag: str) -> tuple[IdRange, ...]:
    """Repeated ``FROM:TO[:COUNT]`` flag values (``--uid-map``), checked, as ranges."""
    ranges = tuple(IdRange.parse(v, flag) for v in values or ())
    check_id_ranges(ranges, flag)
    return ranges
