"""A `local` node's size held on real processes: memory kills, CPU quota or affinity, clean-up.

Run under each mechanism that works here: the one `detect_mechanism` picks (a cgroup
version where this machine lets us write one) and the watchdog, forced.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import textwrap

import psutil
import pytest

from cible.node.limits import (
    MECHANISMS,
    LimitError,
    NodeLimits,
    Shape,
    detect_mechanism,
    host_capacity,
    preexec_for,
    why_watchdog,
)
from cible.testing import wait_until

CI = os.environ.get("CI") == "true"
MB = 2**20

ALLOCATE = textwrap.dedent("""
    import sys, time
    size = int(sys.argv[1]) * 2**20
    if len(sys.argv) > 2:
        sys.stdin.readline()  # wait for the go, so the test can move us first
    b = bytearray(size)
    for i in range(0, size, 4096):
        b[i] = 1
    print("allocated", flush=True)
    # A real job holds what it allocated while it works: hold it a while (the watchdog samples every 0.2 s).
    deadline = time.monotonic() + float(sys.argv[3] if len(sys.argv) > 3 else 0)
    while time.monotonic() < deadline:
        time.sleep(0.05)
""")

BUSY = textwrap.dedent("""
    import sys, time
    deadline = time.monotonic() + float(sys.argv[1])
    x = 0
    while time.monotonic() < deadline:
        x += 1
""")


def _cgroup_mechanism() -> str:
    mechanism = detect_mechanism()
    if mechanism == "watchdog":
        reason = f"no writable cgroup here (euid {os.geteuid()}): {why_watchdog()}"
        if CI:
            pytest.fail(f"CI runs as root with writable cgroups, yet {reason}")
        pytest.skip(reason)
    return mechanism


@pytest.fixture(params=["cgroup", "watchdog"])
def mechanism(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.delenv("CIBLE_LIMITS_MECHANISM", raising=False)
    return _cgroup_mechanism() if request.param == "cgroup" else "watchdog"


@pytest.fixture
def make_node(mechanism: str):
    made: list[NodeLimits] = []

    def make(vcpus: int = 1, memory_gb: float = 0.25) -> NodeLimits:
        node = NodeLimits(f"test-{secrets.token_hex(4)}", Shape(vcpus, memory_gb), mechanism=mechanism)
        node.create()
        made.append(node)
        return node

    yield make
    for node in made:
        node.destroy()


def _spawn(node: NodeLimits, *args: str, stdin=None) -> subprocess.Popen:
    join = preexec_for(node)
    try:
        # preexec_fn is what is under test; the callable only writes to fds opened before the fork
        argv = [sys.executable, *args]
        proc = subprocess.Popen(argv, stdin=stdin, stdout=subprocess.PIPE, text=True, preexec_fn=join)  # noqa: PLW1509
    finally:
        join.close()
    node.add(proc.pid)
    return proc


def test_detect_mechanism_works_here() -> None:
    mechanism = detect_mechanism()
    assert mechanism in MECHANISMS
    if CI:
        assert mechanism != "watchdog", f"CI must hold nodes with cgroups: {why_watchdog()}"
    node = NodeLimits(f"test-{secrets.token_hex(4)}", Shape(1, 0.25), mechanism=mechanism)
    node.create()
    try:
        assert node.exists()
        assert node.usage()["memory_limit_bytes"] == 256 * MB
    finally:
        node.destroy()
    assert not node.exists()


def test_host_capacity_is_this_machine() -> None:
    host = host_capacity()
    assert 1 <= host.vcpus <= (psutil.cpu_count() or 1)
    assert 0 < host.memory_gb <= psutil.virtual_memory().total / 2**30 + 1e-6


def test_a_size_the_host_cannot_hold_fails_unless_overcommitting(mechanism: str) -> None:
    host = host_capacity()
    big = Shape(host.vcpus * 8, host.memory_gb * 4)
    with pytest.raises(LimitError, match="pass --overcommit"):
        NodeLimits("test-too-big", big, mechanism=mechanism, size="Standard_Huge").create()
    node = NodeLimits(f"test-{secrets.token_hex(4)}", big, mechanism=mechanism, overcommit=True)
    node.create()
    try:
        usage = node.usage()
        assert usage["memory_limit_bytes"] >= int(big.memory_gb * 2**30) - 4096
        assert usage["cpu_limit"] <= host.vcpus  # a quota above the host's CPUs would limit nothing
    finally:
        node.destroy()


def test_more_vcpus_than_the_host_are_shared_without_overcommit(make_node) -> None:
    host = host_capacity()
    node = make_node(vcpus=host.vcpus * 2, memory_gb=0.25)  # as Standard_DS3_v2 (4 vCPUs) on a 2-core machine
    usage = node.usage()
    assert usage["cpu_limit"] == host.vcpus  # the quota (or the watchdog's CPU set) stops at the host's CPUs
    if node.mechanism != "watchdog":  # what the kernel holds it to: the group's own quota file
        cpu = next(d for d in node.paths() if (d / "cpu.max").exists() or (d / "cpu.cfs_quota_us").exists())
        if (cpu / "cpu.max").exists():
            quota, period = (cpu / "cpu.max").read_text().split()
        else:
            quota, period = (cpu / "cpu.cfs_quota_us").read_text(), (cpu / "cpu.cfs_period_us").read_text()
        assert int(quota) == host.vcpus * int(period), (cpu, quota, period)


def test_a_job_that_needs_more_memory_than_the_size_is_oom_killed(make_node) -> None:
    node = make_node(memory_gb=0.25)
    before = node.oom_count()
    proc = _spawn(node, "-c", ALLOCATE, "600", "", "30")  # 600 MB on a 256 MB node
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == -9, f"exit {proc.returncode}, printed {out!r}"
    assert node.oom_killed(since=before)
    assert node.usage()["memory_peak_bytes"] <= 256 * MB or node.mechanism == "watchdog"


def test_a_job_within_the_size_completes(make_node) -> None:
    node = make_node(memory_gb=0.25)
    before = node.oom_count()
    proc = _spawn(node, "-c", ALLOCATE, "100", "", "0.5")  # 100 MB on a 256 MB node, held past a few samples
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert "allocated" in out
    assert not node.oom_killed(since=before)


def test_a_running_process_added_later_and_its_children_are_held(make_node) -> None:
    node = make_node(memory_gb=0.25)
    before = node.oom_count()
    # The parent joins by add() alone (no preexec), then starts a child that allocates 600 MB.
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent("""
            import subprocess, sys
            sys.stdin.readline()
            child = subprocess.run([sys.executable, "-c", sys.argv[1], "600", "", "30"])
            print("child exit", child.returncode, flush=True)
        """),
            ALLOCATE,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        node.add(parent.pid)
        out, _ = parent.communicate("go\n", timeout=60)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
    # The kernel kills the biggest process in the group (the child); the watchdog kills the whole tree.
    assert node.oom_killed(since=before), out
    assert "child exit -9" in out or parent.returncode == -9, out


def test_one_vcpu_gets_about_one_cpu_of_time(make_node) -> None:
    node = make_node(vcpus=1, memory_gb=0.5)
    # Two busy processes for ~1 s of wall time each: unlimited on 2+ CPUs they would get ~2 CPU-seconds.
    driver = textwrap.dedent("""
        import resource, subprocess, sys, time
        start = time.monotonic()
        procs = [subprocess.Popen([sys.executable, "-c", sys.argv[1], "1.0"]) for _ in range(2)]
        for p in procs:
            p.wait()
        wall = time.monotonic() - start
        r = resource.getrusage(resource.RUSAGE_CHILDREN)
        print(wall, r.ru_utime + r.ru_stime, flush=True)
    """)
    proc = _spawn(node, "-c", driver, BUSY)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    wall, cpu = (float(x) for x in out.split())
    # One vCPU over `wall` seconds is at most `wall` CPU-seconds; allow for start-up and accounting slack.
    assert cpu <= 1.3 * wall + 0.1, f"{cpu:.2f} CPU-seconds in {wall:.2f} s on a 1-vCPU node"
    assert cpu >= 0.1, f"the busy loops hardly ran: {cpu:.2f} CPU-seconds"
    usage = node.usage()
    assert usage["cpu_limit"] == 1.0
    if node.mechanism == "watchdog":
        assert len(usage["cpus"]) == 1
    else:
        assert usage["cpu_seconds"] >= cpu * 0.8  # the group's own accounting saw the same work


def test_usage_reports_memory_and_cpu(make_node) -> None:
    node = make_node(memory_gb=0.5)
    proc = _spawn(node, "-c", ALLOCATE, "100", "wait", "30", stdin=subprocess.PIPE)
    try:
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "allocated"
        usage = wait_until(
            lambda: (u := node.usage())["memory_bytes"] >= 100 * MB and u,
            timeout=10,
            message="the node's memory use to show the 100 MB",
        )
        assert usage["memory_bytes"] < 500 * MB
        assert usage["cpu_seconds"] > 0
        assert proc.pid in node.pids()
    finally:
        proc.kill()
        proc.wait()


def test_destroy_kills_what_is_left_and_removes_the_groups(make_node) -> None:
    node = make_node()
    # A leftover with a grandchild of its own, in a new session so only the limits know of it.
    proc = _spawn(
        node,
        "-c",
        textwrap.dedent("""
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        print(child.pid, flush=True)
        time.sleep(60)
    """),
    )
    grandchild = int(proc.stdout.readline())
    wait_until(lambda: {proc.pid, grandchild} <= set(node.pids()), timeout=5, message="both to be held")
    dirs = node.paths()
    assert all(d.is_dir() for d in dirs) and (node.mechanism == "watchdog") == (not dirs)
    node.destroy()
    assert proc.wait(timeout=10) == -9
    wait_until(
        lambda: not psutil.pid_exists(grandchild) or psutil.Process(grandchild).status() == psutil.STATUS_ZOMBIE,
        timeout=10,
        message="the grandchild to be killed",
    )
    for d in dirs:
        assert not d.exists(), f"{d} is left behind"
    assert not node.exists()
    node.destroy()  # idempotent
    with pytest.raises(LimitError, match="destroyed"):
        node.add(os.getpid())


def test_add_after_destroy_refuses_and_create_again_works(make_node) -> None:
    node = make_node()
    node.destroy()
    node.create()
    assert node.exists()
    proc = _spawn(node, "-c", "print('ok')")
    assert proc.communicate(timeout=30)[0].strip() == "ok"
    before = node.oom_count()
    proc = _spawn(node, "-c", ALLOCATE, "600", "", "30")  # still held after the second create
    proc.communicate(timeout=60)
    assert proc.returncode == -9 and node.oom_count() == before + 1


def test_forced_mechanism_through_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CIBLE_LIMITS_MECHANISM", "watchdog")
    assert detect_mechanism() == "watchdog"
    monkeypatch.setenv("CIBLE_LIMITS_MECHANISM", "bogus")
    with pytest.raises(LimitError, match="not one of"):
        detect_mechanism()
