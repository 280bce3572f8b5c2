"""The pure parts of a `local` node's limits: what fits, what gets written, where groups go."""

from __future__ import annotations

from pathlib import Path

import pytest

from cible.node import cgroups
from cible.node.limits import LimitError, Shape, check_fits, cpus_for, missing_gpus, remaining, shared_vcpus

HOST = Shape(vcpus=2, memory_gb=23.4)


@pytest.mark.parametrize(
    ("shape", "fits"),
    [
        (Shape(1, 3.5), True),
        (Shape(2, 8), True),
        (Shape(2, 23.4), True),  # exactly the host
        (Shape(4, 14), True),  # Standard_DS3_v2, Azure's default: vCPUs beyond the host's are shared
        (Shape(64, 23.4), True),  # however many
        (Shape(2, 32), False),  # too much memory
        (Shape(16, 64), False),  # too much memory, vCPUs aside
        (Shape(1, 4, gpus=1), False),  # no GPU here
        (Shape(4, 14, gpus=1), False),  # shared vCPUs do not make up for a GPU
    ],
)
def test_check_fits_table(shape: Shape, fits: bool) -> None:
    if fits:
        check_fits(shape, HOST, overcommit=False)
    else:
        with pytest.raises(LimitError):
            check_fits(shape, HOST, overcommit=False)
    check_fits(shape, HOST, overcommit=True)  # overcommit lets anything through


def test_the_message_says_what_and_how_to_fix() -> None:
    with pytest.raises(LimitError) as info:
        check_fits(Shape(16, 64), Shape(2, 23.4), overcommit=False, size="Standard_D16_v3")
    assert info.value.message == (
        "the host has 2 vCPUs and 23.4 GB; Standard_D16_v3 needs 16 vCPUs and 64 GB; "
        "pick a smaller size or pass --overcommit"
    )
    assert str(info.value) == info.value.message


def test_a_missing_gpu_names_gpus() -> None:
    with pytest.raises(LimitError) as info:
        check_fits(Shape(1, 4, gpus=1), HOST, overcommit=False, size="Standard_NC4as_T4_v3")
    assert "0 GPUs" in info.value.message and "1 GPU" in info.value.message
    assert "--overcommit" in info.value.message


def test_remaining_counts_other_nodes() -> None:
    left = remaining(Shape(8, 32, gpus=1), [Shape(2, 8), Shape(4, 16, gpus=1)])
    assert left == Shape(2, 8, gpus=0)
    assert remaining(Shape(2, 4), [Shape(4, 8)]) == Shape(0, 0.0, 0)
    with pytest.raises(LimitError):
        check_fits(Shape(1, 9), left, overcommit=False)
    check_fits(Shape(4, 8), left, overcommit=False)  # vCPUs are shared, memory is not


def test_a_size_with_more_vcpus_than_the_host_is_warned_of_once_with_the_cap() -> None:
    note = shared_vcpus(Shape(4, 14), HOST, size="Standard_DS3_v2")
    assert note == ("Standard_DS3_v2 has 4 vCPUs and this machine 2: each node shares the machine's 2 CPUs "
                    "(its CPU limit is 2, not 4); quotas still count 4 vCPUs a node")
    assert shared_vcpus(Shape(2, 7), HOST) is None and shared_vcpus(Shape(1, 3.5), HOST) is None
    # What the node's group gets: a quota of the host's CPUs, not the size's.
    assert cgroups.plan_v2(14 * 2**30, vcpus=4, host_vcpus=HOST.vcpus)[-1] == ("cpu.max", "200000 100000")
    assert cpus_for("node-a", 4, [0, 1]) == [0, 1]  # the watchdog's equivalent


def test_a_size_with_more_gpus_than_the_host_is_warned_of_with_what_its_nodes_get() -> None:
    assert "its nodes get no GPU here" in missing_gpus(Shape(4, 28, gpus=1), HOST, size="Standard_NC4as_T4_v3")
    two = Shape(2, 23.4, gpus=2)
    assert "each node gets at most the machine's 2" in missing_gpus(Shape(64, 440, gpus=4), two)
    assert missing_gpus(Shape(4, 28, gpus=1), two) is None and missing_gpus(Shape(1, 3.5), HOST) is None


def test_memory_is_gib_rounded_down_to_pages() -> None:
    assert cgroups.memory_bytes(0.25) == 256 * 2**20
    assert cgroups.memory_bytes(64) == 64 * 2**30
    assert cgroups.memory_bytes(1.0000001) % 4096 == 0


def test_v1_plan_sets_memory_and_a_capped_quota() -> None:
    plan = cgroups.plan_v1(256 * 2**20, vcpus=1, host_vcpus=2)
    memory = [(n, v) for n, v in plan["memory"] if not n.endswith("?")]
    assert memory == [("memory.limit_in_bytes", str(256 * 2**20))]
    # memsw is opened before the memory limit moves and set to it afterwards (no escape into swap)
    assert plan["memory"][0] == ("memory.memsw.limit_in_bytes?", "-1")
    assert plan["memory"][-1] == ("memory.memsw.limit_in_bytes?", str(256 * 2**20))
    assert plan["cpu"] == [("cpu.cfs_period_us", "100000"), ("cpu.cfs_quota_us", "100000")]
    # 16 vCPUs on a 2-CPU host (overcommit): the quota stops at the host's CPUs
    assert cgroups.plan_v1(2**30, vcpus=16, host_vcpus=2)["cpu"][-1] == ("cpu.cfs_quota_us", "200000")


def test_v2_plan() -> None:
    assert cgroups.plan_v2(2**30, vcpus=2, host_vcpus=8) == [
        ("memory.max", str(2**30)),
        ("memory.swap.max?", "0"),
        ("cpu.max", "200000 100000"),
    ]
    assert cgroups.plan_v2(2**30, vcpus=4, host_vcpus=2)[-1] == ("cpu.max", "200000 100000")


MOUNTINFO = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:40 /docker/abc /sys/fs/cgroup/pids rw,nosuid - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""

PROC_CGROUP = """\
9:name=systemd:/
8:pids:/docker/abc
4:memory:/process_api/a52
2:cpuacct:/
1:cpu:/
0::/
"""


def test_parse_mountinfo_finds_the_hierarchies() -> None:
    found = {h.mount.name: h for h in cgroups.parse_mountinfo(MOUNTINFO)}
    assert set(found) == {"cpu", "cpuacct", "memory", "pids", "systemd", "unified"}
    assert found["memory"].controllers == {"memory"}
    assert found["systemd"].controllers == frozenset()
    assert found["unified"].version == 2
    assert found["pids"].root == "/docker/abc"


def test_parse_proc_cgroup() -> None:
    own = cgroups.parse_proc_cgroup(PROC_CGROUP)
    assert own["memory"] == "/process_api/a52"
    assert own["cpu"] == "/" and own[""] == "/"


def test_v1_groups_go_under_the_callers_own_group() -> None:
    group = cgroups.V1Group("node/1", cgroups.parse_mountinfo(MOUNTINFO), cgroups.parse_proc_cgroup(PROC_CGROUP))
    assert group.dirs == {
        "memory": Path("/sys/fs/cgroup/memory/process_api/a52/cible/node_1"),
        "cpu": Path("/sys/fs/cgroup/cpu/cible/node_1"),
        "cpuacct": Path("/sys/fs/cgroup/cpuacct/cible/node_1"),
    }


def test_a_caller_inside_a_node_group_does_not_nest_nodes() -> None:
    assert cgroups.own_base("/process_api/a52/cible/node-1") == "/process_api/a52"
    assert cgroups.own_base("/") == "/"
    assert cgroups.own_base("/user.slice/session-1.scope") == "/user.slice/session-1.scope"


def test_combined_cpu_cpuacct_mount_is_one_directory() -> None:
    info = (
        "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n"
        "35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
    )
    group = cgroups.V1Group("n", cgroups.parse_mountinfo(info), {"cpu": "/", "cpuacct": "/", "memory": "/"})
    assert group.dirs["cpu"] == group.dirs["cpuacct"]
    assert len(group.paths()) == 2


def test_v2_group_goes_inside_then_beside_the_callers_group() -> None:
    info = "41 31 0:38 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n"
    group = cgroups.V2Group("n", cgroups.parse_mountinfo(info), {"": "/system.slice/agent.service"})
    assert group.candidates == [
        Path("/sys/fs/cgroup/system.slice/agent.service/cible"),
        Path("/sys/fs/cgroup/system.slice/cible"),
    ]
    at_root = cgroups.V2Group("n", cgroups.parse_mountinfo(info), {"": "/"})
    assert at_root.candidates == [Path("/sys/fs/cgroup/cible")]


def test_safe_names() -> None:
    assert cgroups.safe_name("cpu-cluster/node-0") == "cpu-cluster_node-0"
    assert cgroups.safe_name("..") == "node"


def test_watchdog_cpus_are_a_stable_window_of_the_available_ones() -> None:
    cpus = cpus_for("node-a", 2, [0, 1, 2, 3])
    assert len(cpus) == 2 and set(cpus) <= {0, 1, 2, 3}
    assert cpus == cpus_for("node-a", 2, [3, 2, 1, 0])
    assert cpus_for("node-a", 16, [0, 1]) == [0, 1]  # never more than there are
    windows = {tuple(cpus_for(f"node-{i}", 1, list(range(4)))) for i in range(16)}
    assert len(windows) > 1  # nodes spread over the CPUs
