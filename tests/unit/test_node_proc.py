"""cible.node.proc against real processes, and against psutil where records must agree: the node
side's stdlib-only view of /proc (a child, its child, a zombie, a pid gone)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator

import psutil
import pytest

from cible.node import proc
from cible.testing import wait_until

GONE_PID = 2**31 - 1  # above any pid_max: never a process


@pytest.fixture
def family() -> Iterator[tuple[subprocess.Popen, int]]:
    """A child (python) that started a grandchild (sleep) and waits: (the child, the grandchild's pid)."""
    child = subprocess.Popen(
        [sys.executable, "-c", ("import subprocess, time; p = subprocess.Popen(['sleep', '60']); "
                                "print(p.pid, flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True)
    grandchild = int(child.stdout.readline())
    try:
        yield child, grandchild
    finally:
        for pid in (grandchild, child.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        child.wait()
        child.stdout.close()


def test_create_time_is_psutils_for_the_same_process(family):
    child, grandchild = family
    for pid in (os.getpid(), child.pid, grandchild):
        assert proc.Process(pid).create_time() == pytest.approx(psutil.Process(pid).create_time(), abs=1e-6)
        assert proc.create_time(pid) == pytest.approx(psutil.Process(pid).create_time(), abs=1e-6)
    assert proc.create_time(GONE_PID) is None


def test_children_one_level_and_recursive(family):
    child, grandchild = family
    me = proc.Process(os.getpid())
    assert proc.Process(child.pid).children() == [proc.Process(grandchild)]
    direct = {p.pid for p in me.children()}
    every = {p.pid for p in me.children(recursive=True)}
    assert child.pid in direct and grandchild not in direct
    assert {child.pid, grandchild} <= every
    assert every == {p.pid for p in psutil.Process(os.getpid()).children(recursive=True)}


def test_a_process_that_ended_is_no_such_process_and_is_never_signalled(family):
    child, grandchild = family
    held = proc.Process(grandchild)
    assert held.is_running() and held.status() in ("sleeping", "running")
    held.kill()
    # the child never reaps its sleep: a zombie of another parent, which has ended all the same
    wait_until(lambda: held.status() == proc.STATUS_ZOMBIE, 10, message="the grandchild to be a zombie")
    assert proc.pid_exists(grandchild) and not proc.alive(grandchild)
    gone, alive = proc.wait_procs([held], timeout=5)
    assert gone == [held] and alive == [] and held.returncode is None  # not ours to reap
    child.kill()
    child.wait()
    wait_until(lambda: not proc.pid_exists(grandchild), 10, message="init to reap the zombie")
    assert not held.is_running()
    with pytest.raises(proc.NoSuchProcess):
        held.send_signal(signal.SIGTERM)
    with pytest.raises(proc.NoSuchProcess):
        held.status()
    with pytest.raises(proc.NoSuchProcess):
        proc.Process(GONE_PID)


def test_waiting_for_our_own_child_reaps_it_and_gives_its_code():
    child = subprocess.Popen(["sleep", "60"])
    held = proc.Process(child.pid)
    with pytest.raises(proc.TimeoutExpired):
        held.wait(timeout=0.1)
    held.terminate()
    assert held.wait(timeout=10) == -signal.SIGTERM
    assert not proc.pid_exists(child.pid)  # reaped here, as psutil does: no zombie is left
    child.wait()  # Popen copes with a child reaped by someone else


def test_a_zombie_child_is_seen_as_one_until_reaped():
    child = subprocess.Popen(["true"])
    held = proc.Process(child.pid)
    wait_until(lambda: held.status() == proc.STATUS_ZOMBIE, 10, message="`true` to end")
    assert psutil.Process(child.pid).status() == psutil.STATUS_ZOMBIE
    assert held.is_running() and not proc.alive(child.pid)  # psutil's is_running, our `alive`
    gone, _ = proc.wait_procs([held], timeout=5)
    assert gone == [held] and held.returncode == 0
    child.wait()


def test_alive_checks_the_recorded_start():
    me = os.getpid()
    started = proc.create_time(me)
    assert proc.alive(me) and proc.alive(me, started) and proc.alive(me, started + 0.5)
    assert not proc.alive(me, started - 5)  # a pid reused since the record was written
    assert not proc.alive(GONE_PID)


def test_pid_exists_counts_processes_not_threads():
    stop = threading.Event()
    ids: list[int] = []
    thread = threading.Thread(target=lambda: (ids.append(threading.get_native_id()), stop.wait(10)))
    thread.start()
    try:
        wait_until(lambda: ids, 5)
        assert proc.pid_exists(os.getpid()) and not proc.pid_exists(ids[0])
        assert psutil.pid_exists(ids[0]) is False
    finally:
        stop.set()
        thread.join()
    assert not proc.pid_exists(GONE_PID) and not proc.pid_exists(0) and not proc.pid_exists(-1)


def test_iteration_memory_cpu_and_the_machine_match_psutil():
    me = proc.Process(os.getpid())
    assert me in list(proc.process_iter()) and os.getpid() in proc.pids()
    assert me.ppid() == os.getppid()
    rss = psutil.Process().memory_info().rss
    assert abs(me.memory_info().rss - rss) < 16 * 2**20
    times = me.cpu_times()
    assert times.user > 0 and times.system >= 0
    assert proc.cpu_count() == psutil.cpu_count()
    assert proc.total_memory() == psutil.virtual_memory().total
    assert abs(proc.boot_time() - psutil.boot_time()) <= 1
