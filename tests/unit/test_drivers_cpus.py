"""CPUs available to the process: affinity narrowed by the cgroup CPU quota (v2 and v1 layouts)."""

from pathlib import Path

import pytest

from steps.drivers.cpus import FORMULAS, available_cpus, cgroup_cpu_limit, default_threads


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _v2(tmp_path: Path, cpu_max: dict[str, str], rel: str = "/kubepods/pod1/c1") -> tuple[Path, Path]:
    root = tmp_path / "cgroup"
    for sub, text in cpu_max.items():
        _write(root / sub / "cpu.max", text + "\n")
    proc = tmp_path / "proc-cgroup"
    _write(proc, f"0::{rel}\n")
    return root, proc


def test_v2_quota_of_the_own_cgroup_limits_the_cpus(tmp_path):
    root, proc = _v2(tmp_path, {"kubepods/pod1/c1": "150000 100000", "": "max 100000"})
    assert cgroup_cpu_limit(root, proc) == 1.5
    assert available_cpus(root, proc, affinity=64) == 2  # 1.5 CPUs rounded up


def test_v2_the_tightest_quota_above_the_cgroup_wins(tmp_path):
    root, proc = _v2(tmp_path, {"kubepods/pod1/c1": "max 100000", "kubepods/pod1": "50000 100000"})
    assert cgroup_cpu_limit(root, proc) == 0.5
    assert available_cpus(root, proc, affinity=8) == 1


def test_v2_without_quota_the_affinity_mask_counts(tmp_path):
    root, proc = _v2(tmp_path, {"kubepods/pod1/c1": "max 100000"})
    assert cgroup_cpu_limit(root, proc) is None
    assert available_cpus(root, proc, affinity=3) == 3


def test_affinity_narrower_than_the_quota_counts(tmp_path):
    root, proc = _v2(tmp_path, {"kubepods/pod1/c1": "800000 100000"})
    assert available_cpus(root, proc, affinity=2) == 2


@pytest.mark.parametrize("text", ["", "garbage", "100000", "-1 100000", "0 100000", "abc 100000", "1 0"])
def test_v2_unreadable_or_meaningless_cpu_max_is_no_limit(tmp_path, text):
    root, proc = _v2(tmp_path, {"kubepods/pod1/c1": text})
    assert cgroup_cpu_limit(root, proc) is None


@pytest.mark.parametrize("mount", ["cpu,cpuacct", "cpu"])
def test_v1_cfs_quota_and_period(tmp_path, mount):
    root = tmp_path / "cgroup"
    _write(root / mount / "docker" / "abc" / "cpu.cfs_quota_us", "250000\n")
    _write(root / mount / "docker" / "abc" / "cpu.cfs_period_us", "100000\n")
    proc = tmp_path / "proc-cgroup"
    _write(proc, f"12:memory:/docker/abc\n4:{mount}:/docker/abc\n1:name=systemd:/docker/abc\n")
    assert cgroup_cpu_limit(root, proc) == 2.5
    assert available_cpus(root, proc, affinity=16) == 3


def test_v1_unlimited_quota_is_no_limit(tmp_path):
    root = tmp_path / "cgroup"
    _write(root / "cpu,cpuacct" / "cpu.cfs_quota_us", "-1\n")
    _write(root / "cpu,cpuacct" / "cpu.cfs_period_us", "100000\n")
    proc = tmp_path / "proc-cgroup"
    _write(proc, "4:cpu,cpuacct:/\n")
    assert cgroup_cpu_limit(root, proc) is None


def test_missing_files_mean_no_limit(tmp_path):
    assert cgroup_cpu_limit(tmp_path / "none", tmp_path / "none-either") is None
    assert available_cpus(tmp_path / "none", tmp_path / "none-either", affinity=5) == 5


def test_a_relative_path_cannot_leave_the_cgroup_root(tmp_path):
    root, proc = _v2(tmp_path, {"": "200000 100000"}, rel="/../../etc")
    _write(tmp_path / "etc" / "cpu.max", "10000 100000\n")  # outside the root: never read
    assert cgroup_cpu_limit(root, proc) == 2.0


def test_default_threads_follow_the_formulas_within_their_bounds():
    for purpose, (per_cpu, low, high) in FORMULAS.items():
        assert default_threads(purpose, cpus=1) == max(low, min(high, -(-per_cpu // 1)))
        assert default_threads(purpose, cpus=1000) == high
        assert low <= default_threads(purpose) <= high
    assert default_threads("restore_connections", cpus=2) == 2
    assert default_threads("restore_connections", cpus=1) == 2
    assert default_threads("uploaders", cpus=1) == 2
    assert default_threads("file_workers", cpus=2) == 2
