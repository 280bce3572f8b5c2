"""What an attached host is: probed once at attach over a pinned connection (its Python, CPUs,
memory and GPUs), so that a job's fit is judged from the machine itself, not from a VM size."""

from __future__ import annotations

import asyncio
import json
import shlex
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Coroutine, TypeVar

from cible.backends.ssh.connect import (
    CONNECT_TIMEOUT_S,
    RemoteHostError,
    SshTarget,
    connect,
    fingerprint,
    first_host_key,
    read_client_key,
)

if TYPE_CHECKING:  # imported where used (see connect.py)
    import asyncssh

MIN_PYTHON = (3, 10)  # pyproject's requires-python: the agent and the launcher run on it
T = TypeVar("T")

# Run by the host's own python3: stdlib only, one line of JSON out.
_FACTS = r"""
import json, os, platform, shutil, subprocess, sys
mem_kb = 0
try:
    for line in open("/proc/meminfo"):
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
except OSError:
    pass
gpus = 0
smi = shutil.which("nvidia-smi")
if smi:
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10).stdout
        gpus = sum(1 for line in out.splitlines() if line.startswith("GPU "))
    except (OSError, subprocess.SubprocessError):
        pass
cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
print(json.dumps({"python": sys.executable, "python_version": platform.python_version(),
                  "version_info": list(sys.version_info[:2]), "machine": platform.machine(),
                  "system": platform.system(), "cpus": cpus, "memory_gb": round(mem_kb / 1048576, 2),
                  "gpus": gpus, "home": os.path.expanduser("~")}))
"""


@dataclass(frozen=True)
class Attached:
    """What attach learned: the host key to pin (an OpenSSH line), its fingerprint, the host's facts."""

    host_key: str
    host_key_fingerprint: str
    facts: dict[str, Any]


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` to its end from synchronous code (a request handler's thread, a CLI), also when
    the calling thread already runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


async def host_facts(conn: asyncssh.SSHClientConnection, target: SshTarget, python: str,
                     timeout: float = CONNECT_TIMEOUT_S) -> dict[str, Any]:
    """The host's facts, or a RemoteHostError when it has no usable Python."""
    import asyncssh

    command = f"{shlex.quote(python)} -c {shlex.quote(_FACTS)}"
    try:
        result = await asyncio.wait_for(conn.run(command, check=False), timeout + 10)
    except (asyncssh.Error, OSError, asyncio.TimeoutError) as exc:
        raise RemoteHostError(f"{target.where}: probing the host failed: {exc}",
                              details={"host": target.host, "port": target.port, "reason": "probe"}) from None
    if result.exit_status == 127:
        raise RemoteHostError(
            f"{target.where}: no '{python}' on the host's PATH; cible needs Python ≥ "
            f"{'.'.join(map(str, MIN_PYTHON))} there (nothing else): install it, or name the interpreter with "
            "cible.python in the compute's YAML", details={"host": target.host, "port": target.port,
                                                          "reason": "no_python"})
    try:
        facts = json.loads(str(result.stdout).strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise RemoteHostError(f"{target.where}: '{python}' could not describe the host (exit "
                              f"{result.exit_status}): {str(result.stderr).strip()[-300:]}",
                              details={"host": target.host, "port": target.port, "reason": "probe"}) from None
    if tuple(facts.get("version_info", ())) < MIN_PYTHON:
        raise RemoteHostError(
            f"{target.where}: '{python}' is Python {facts.get('python_version')}; cible needs ≥ "
            f"{'.'.join(map(str, MIN_PYTHON))} (name another interpreter with cible.python)",
            details={"host": target.host, "port": target.port, "reason": "no_python"})
    facts.pop("version_info", None)
    return facts


async def attach(target: SshTarget, *, python: str, expected_fingerprint: str | None) -> Attached:
    """Pin the host's key (trust on first use, or check it against `expected_fingerprint`), then log in
    over the pinned key and probe the host: any failure raises before anything is stored."""
    if target.key_file is not None:
        read_client_key(target)  # a missing or open key is said before any connection is made
    host_key = await first_host_key(target, expected=expected_fingerprint)
    pinned = SshTarget(target.host, target.port, target.username, target.key_file, host_key)
    conn = await connect(pinned)
    async with conn:
        facts = await host_facts(conn, pinned, python)
    return Attached(host_key=host_key, host_key_fingerprint=fingerprint(host_key), facts=facts)
