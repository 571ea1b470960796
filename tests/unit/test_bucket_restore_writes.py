"""A bucket restore's writes: keys that are the folder of others go first, alone, and every object
written is confirmed in the target; one the target lost is written again, and one it keeps losing
fails the restore, named."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest

from steps.errors import PermanentError
from steps.repository.bucket_tree import PlannedWrite, apply_restore


class LosingTarget:
    """An in-memory bucket that drops the first ``drop`` writes of the keys in ``lose``."""

    where = "s3://target"

    def __init__(self, lose=(), drop=1):
        self.objects: dict[str, bytes] = {}
        self.order: list[str] = []
        self.lose = {k: drop for k in lose}
        self.lock = threading.Lock()
        self.listings = 0

    def list(self, versions=False):
        with self.lock:
            self.listings += 1
            return [SimpleNamespace(key=k, size=len(v)) for k, v in sorted(self.objects.items())]

    def stat(self, key):
        with self.lock:
            v = self.objects.get(key)
            return SimpleNamespace(key=key, size=len(v)) if v is not None else None

    def write(self, key, stream, size, content_type, metadata, part_size):
        data = stream.read()
        with self.lock:
            self.order.append(key)
            if self.lose.get(key, 0) > 0:
                self.lose[key] -= 1
                return
            self.objects[key] = data


def plan(*keys):
    return [PlannedWrite("create", k, {"s3": {"key": k}, "size": 0}) for k in keys]


def test_a_key_that_is_the_folder_of_others_is_written_first():
    target = LosingTarget()
    keys = ["a b", "a/b", "dir/inner", "x", "a", "dir/", "c"]
    assert apply_restore(None, target, plan(*keys), writers=4) == len(keys)
    assert set(target.order[:2]) == {"a", "dir/"}
    assert sorted(target.objects) == sorted(keys)


def test_an_object_the_target_lost_is_written_again():
    target = LosingTarget(lose=["a/b"])
    assert apply_restore(None, target, plan("a", "a/b", "c"), writers=2) == 3
    assert target.order.count("a/b") == 2
    assert sorted(target.objects) == ["a", "a/b", "c"]


def test_an_object_the_target_keeps_losing_fails_the_restore_by_name():
    target = LosingTarget(lose=["c"], drop=2)
    with pytest.raises(
        PermanentError, match=r"s3://target: 1 object\(s\) written are not in the bucket.*'c'"
    ):
        apply_restore(None, target, plan("a", "c"), writers=2)


def test_many_objects_are_confirmed_by_one_listing_and_a_lost_update_is_written_again(monkeypatch):
    monkeypatch.setattr("steps.repository.bucket_tree.CONFIRM_BY_HEAD", 2)
    target = LosingTarget(lose=["b"])
    target.objects["b"] = b"an older, longer object"  # the update of b is lost: the old one stays
    assert apply_restore(None, target, plan("a", "b", "c"), writers=2) == 3
    assert target.listings == 1 and target.order.count("b") == 2 and target.objects["b"] == b""
