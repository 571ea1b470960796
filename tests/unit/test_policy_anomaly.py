"""``spec.anomaly.lockLastGood``: checked by lint in one line, and handed to finalize as
``--lock-last-good`` (absent, finalize's command line is what it was)."""

from __future__ import annotations

import pytest

from workflows.policy import PolicyError, load_policies
from workflows.render import render_files


def _finalize_args(path) -> list[str]:
    objects = [o.obj for o in render_files([path]).objects]
    (backup,) = [
        o for o in objects if o["kind"] == "WorkflowTemplate" and o["metadata"]["name"].startswith("backup-")
    ]
    (finalize,) = [t for t in backup["spec"]["templates"] if t["name"] == "finalize"]
    return finalize["container"]["args"]


def test_lock_last_good_reaches_finalize(minimal_policy, write_policy):
    minimal_policy["spec"]["anomaly"] = {"lockLastGood": "30d"}
    args = _finalize_args(write_policy(minimal_policy))
    assert args[args.index("--lock-last-good") + 1] == "30d"


def test_without_it_finalize_locks_nothing(minimal_policy, write_policy):
    assert "--lock-last-good" not in _finalize_args(write_policy(minimal_policy))


@pytest.mark.parametrize("value", ["30", "0d", "soon", "-1d"])
def test_a_bad_duration_is_one_line_naming_the_field(minimal_policy, write_policy, value):
    minimal_policy["spec"]["anomaly"] = {"lockLastGood": value}
    path = write_policy(minimal_policy)
    with pytest.raises(PolicyError) as err:
        load_policies([path])
    assert err.value.problems == [
        f"{path}: spec.anomaly.lockLastGood: expected a positive duration like 30d, 12h, 90m or 2w,"
        f" got {value!r}"
    ]


def test_an_unknown_anomaly_field_is_refused(minimal_policy, write_policy):
    minimal_policy["spec"]["anomaly"] = {"lockLastGoodFor": "30d"}
    path = write_policy(minimal_policy)
    with pytest.raises(PolicyError) as err:
        load_policies([path])
    assert err.value.problems == [
        f"{path}: spec.anomaly.lockLastGoodFor: unknown field (expected one of: lockLastGood)"
    ]
