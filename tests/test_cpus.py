"""The CPU budget from fake cgroup trees: v1, v2, no limit, fractional quotas, affinity."""

from __future__ import annotations

import os

import pytest

from autopar import _config, _cpus

HOST = (64, "affinity")  # a 64-core host, as the affinity mask reports it


def tree(root, files):
    for path, text in files.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    return str(root)


def v2(cpu_max, own="/"):
    return {"proc/self/cgroup": f"0::{own}\n", "sys/fs/cgroup/cpu.max": cpu_max}


def v1(quota, period="100000", mount="cpu,cpuacct"):
    return {
        "proc/self/cgroup": f"4:memory:/\n3:{mount}:/\n",
        f"sys/fs/cgroup/{mount}/cpu.cfs_quota_us": quota,
        f"sys/fs/cgroup/{mount}/cpu.cfs_period_us": period,
    }


def test_a_container_limited_to_two_cpus_on_a_64_core_host_plans_for_two(tmp_path):
    found = _cpus.read(tree(tmp_path, v2("200000 100000\n")), HOST)
    assert found.cpus == 2
    assert "cgroup v2" in found.source and "200000/100000" in found.source
    assert "64" in found.source  # what the quota cut down


@pytest.mark.parametrize(
    ("cpu_max", "expected"),
    [("150000 100000", 2), ("50000 100000", 1), ("1000 100000", 1), ("250000 100000", 3)],
)
def test_a_fractional_quota_rounds_up_and_never_below_one(tmp_path, cpu_max, expected):
    assert _cpus.read(tree(tmp_path, v2(cpu_max)), HOST).cpus == expected


def test_max_means_no_limit(tmp_path):
    found = _cpus.read(tree(tmp_path, v2("max 100000")), HOST)
    assert found == _cpus.CpuBudget(64, "affinity = 64; no cgroup CPU quota")


def test_a_quota_never_raises_the_count_above_affinity(tmp_path):
    found = _cpus.read(tree(tmp_path, v2("800000 100000")), (4, "affinity"))
    assert found.cpus == 4
    assert "allows 8" in found.source


def test_v2_takes_the_least_quota_of_the_own_cgroup_and_its_parents(tmp_path):
    files = {
        **v2("max 100000", own="/app.slice/job"),
        "sys/fs/cgroup/app.slice/cpu.max": "300000 100000",
        "sys/fs/cgroup/app.slice/job/cpu.max": "600000 100000",
    }
    found = _cpus.read(tree(tmp_path, files), HOST)
    assert found.cpus == 3
    assert "/sys/fs/cgroup/app.slice/cpu.max" in found.source


def test_v2_own_path_absent_in_a_container_falls_back_to_the_mount(tmp_path):
    found = _cpus.read(tree(tmp_path, v2("400000 100000", own="/docker/abc")), HOST)
    assert found.cpus == 4


@pytest.mark.parametrize("mount", ["cpu", "cpu,cpuacct"])
def test_v1_quota_and_period(tmp_path, mount):
    found = _cpus.read(tree(tmp_path, v1("150000", mount=mount)), HOST)
    assert found.cpus == 2
    assert "cgroup v1" in found.source and "150000/100000" in found.source


def test_v1_quota_of_minus_one_means_no_limit(tmp_path):
    assert _cpus.read(tree(tmp_path, v1("-1")), HOST).cpus == 64


def test_v2_is_read_before_v1_on_a_hybrid_host(tmp_path):
    files = {**v1("100000"), "sys/fs/cgroup/cpu.max": "300000 100000"}
    found = _cpus.read(tree(tmp_path, files), HOST)
    assert found.cpus == 3 and "v2" in found.source


@pytest.mark.parametrize("text", ["", "garbage", "100000", "a b", "0 100000", "100000 0"])
def test_unreadable_quotas_are_no_limit(tmp_path, text):
    assert _cpus.read(tree(tmp_path, v2(text)), HOST).cpus == 64


def test_no_cgroup_files_at_all(tmp_path):
    assert _cpus.read(str(tmp_path), (3, "affinity")) == _cpus.CpuBudget(
        3, "affinity = 3; no cgroup CPU quota"
    )


def test_affinity_names_its_source_and_is_at_least_one():
    count, source = _cpus.affinity()
    assert count >= 1
    if hasattr(os, "process_cpu_count"):
        assert source == "os.process_cpu_count()"
    elif hasattr(os, "sched_getaffinity"):
        assert count == len(os.sched_getaffinity(0))


def test_cpu_count_is_the_cached_budget(monkeypatch):
    monkeypatch.setattr(_cpus, "_budget", _cpus.CpuBudget(7, "fake"))
    assert _config.cpu_count() == 7


def test_the_budget_is_read_once(monkeypatch):
    reads = []
    monkeypatch.setattr(_cpus, "_budget", None)
    monkeypatch.setattr(_cpus, "read", lambda: reads.append(1) or _cpus.CpuBudget(5, "x"))
    assert _cpus.budget().cpus == 5 and _cpus.budget().cpus == 5
    assert reads == [1]


def test_running_now_reads_the_running_field_of_loadavg(tmp_path):
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc" / "loadavg").write_text("0.52 0.40 0.31 3/412 9876\n")
    assert _cpus.running_now(str(tmp_path)) == 3
    (tmp_path / "proc" / "loadavg").write_text("0.00 0.00 0.00 0/0 0\n")  # a sandbox's
    assert _cpus.running_now(str(tmp_path)) is None
    (tmp_path / "proc" / "loadavg").write_text("garbage\n")
    assert _cpus.running_now(str(tmp_path)) is None
    assert _cpus.running_now(str(tmp_path / "nowhere")) is None
