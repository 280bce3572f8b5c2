"""A node's GPU device files: where a cgroup v1 devices hierarchy is mounted (as on this kind of machine),
a node cannot open the /dev/nvidiaN of a GPU that is not its own, whatever CUDA_VISIBLE_DEVICES says.

No GPU is needed: a character device of NVIDIA's major (195) is made with mknod; opening it fails with
ENXIO (no driver) when the node may, and with EPERM when its group denies it."""

from __future__ import annotations

import errno
import os
import secrets
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from cible.node import cgroups, gpus
from cible.node.limits import NodeLimits, Shape, detect_mechanism, preexec_for

OPEN = "import os, sys\ntry:\n    os.open(sys.argv[1], os.O_RDONLY)\nexcept OSError as e:\n    print(e.errno)\n"


def _devices_mounted() -> bool:
    hierarchies = cgroups.parse_mountinfo(Path("/proc/self/mountinfo").read_text())
    return any(h.version == 1 and "devices" in h.controllers for h in hierarchies)


@pytest.fixture
def device_files(tmp_path: Path) -> dict[int, Path]:
    if os.geteuid() != 0:
        pytest.skip("making a device file needs root")
    made = {}
    for minor in (0, 1):
        path = tmp_path / f"nvidia{minor}"
        try:
            os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(gpus.NVIDIA_MAJOR, minor))
        except PermissionError as exc:
            pytest.skip(f"this file system refuses device files: {exc}")
        made[minor] = path
    try:  # outside any node's group it must fail for want of a driver (ENXIO): the rule's EPERM then shows
        os.close(os.open(made[0], os.O_RDONLY))
    except OSError as exc:
        if exc.errno != errno.ENXIO:
            pytest.skip(f"a device file here cannot show the cgroup's rule (a nodev mount?): {exc}")
    else:
        pytest.skip("a driver answers NVIDIA's major here: the test's device files would be real GPUs")
    return made


def _open_errno(node: NodeLimits, path: Path) -> int:
    join = preexec_for(node)
    try:
        done = subprocess.run([sys.executable, "-c", OPEN, str(path)], capture_output=True, text=True, timeout=30,
                              preexec_fn=join, check=True)  # noqa: PLW1509 - the callable only writes to open fds
    finally:
        join.close()
    return int(done.stdout.strip())


def test_a_node_cannot_open_the_gpus_it_was_not_given(device_files: dict[int, Path],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CIBLE_LIMITS_MECHANISM", raising=False)
    if detect_mechanism() != "cgroup-v1" or not _devices_mounted():
        pytest.skip("no cgroup v1 devices hierarchy here (cgroup v2 holds devices through eBPF, not files)")
    node = NodeLimits(f"test-{secrets.token_hex(4)}", Shape(1, 0.25), mechanism="cgroup-v1", denied_gpus=[0])
    node.create()
    try:
        assert node.devices_held is True
        assert _open_errno(node, device_files[0]) == errno.EPERM  # not its GPU
        assert _open_errno(node, device_files[1]) == errno.ENXIO  # its own: allowed (no driver behind it here)
    finally:
        node.destroy()
    assert not node.exists()


def test_denied_minors_follow_the_gpus_a_node_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(gpus.ENV_FAKE, '[{"uuid": "GPU-a", "minor": 0}, {"uuid": "GPU-b", "minor": 1}]')
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    machine = gpus.discover()
    assert gpus.denied_minors(machine, ["GPU-b"]) == [0]
    assert gpus.denied_minors(machine, []) == [0, 1]  # a CPU size's node
