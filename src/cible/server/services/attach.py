"""Attaching a machine over SSH (`type: virtualmachine`): before anything is stored, the host key
is pinned (trusted on first use, or checked against the fingerprint the user gives), cible logs in
with the compute's key over that pinned key, and the host is probed. A host that cannot be used
as asked is refused with the reason; nothing of it is stored.

What is stored is public: the host key, its fingerprint, the host's facts, and the *path* of the
private key on the server's machine (read at each login, never copied)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping

from sqlalchemy import select

from cible.backends.ssh.connect import SshTarget
from cible.backends.ssh.hosts import AttachedHost
from cible.backends.ssh.probe import attach, run_sync
from cible.core.models.computes import AmlCompute, HostFacts, VirtualMachineCompute
from cible.server.services.compute_spec import ATTACHED_PROVIDER, compute_spec
from cible.server.store.db import Store
from cible.server.store.rows import ComputeRow

log = logging.getLogger(__name__)
AGENT_DIR = ".cible-agent"  # under the login user's home on the host: the one folder cible writes there


def ssh_target(vm: VirtualMachineCompute, *, pinned: bool = True) -> SshTarget:
    """Where and as whom cible logs in to `vm`; with its pinned host key unless `pinned` is False."""
    agent = vm.cible is not None and vm.cible.use_ssh_agent
    return SshTarget(host=vm.host, port=vm.ssh_port, username=vm.ssh_settings.admin_username or "",
                     key_file=None if agent else vm.ssh_settings.ssh_private_key_file,
                     host_key=vm.host_key if pinned else None)


def attach_machine(vm: VirtualMachineCompute, *, expected_fingerprint: str | None = None) -> VirtualMachineCompute:
    """`vm` with its host key pinned and its facts probed (RemoteHostError when the host cannot be
    used). `expected_fingerprint` (else the YAML's cible.expected_host_key_fingerprint) is checked
    instead of trusting the offered key on first use."""
    settings = vm.cible
    expected = expected_fingerprint or (settings.expected_host_key_fingerprint if settings else None)
    python = settings.python if settings else "python3"
    found = run_sync(attach(ssh_target(vm, pinned=False), python=python, expected_fingerprint=expected))
    how = "checked against the expected fingerprint" if expected else "trusted on first use"
    log.info("compute %s: host key %s of %s:%s %s and pinned", vm.name, found.host_key_fingerprint, vm.host,
             vm.ssh_port, how)
    return vm.model_copy(update={"host_key": found.host_key, "host_key_fingerprint": found.host_key_fingerprint,
                                 "host_facts": HostFacts(**found.facts)})


def attached_host(vm: VirtualMachineCompute) -> AttachedHost:
    """The attached machine as the `ssh` node provider uses it (its pinned key, its folder)."""
    facts = vm.host_facts.model_dump() if vm.host_facts else {}
    home = facts.get("home") or "~"
    settings = vm.cible
    return AttachedHost(name=vm.name, target=ssh_target(vm), python=settings.python if settings else "python3",
                        agent_dir=f"{home.rstrip('/')}/{AGENT_DIR}", tunnel=settings.tunnel if settings else "auto",
                        facts=facts)


class AttachedMachines:
    """What the `ssh` node provider is told of the store: the attached machines, and the machines
    each compute's nodes may use. Read at most once a second (the provider asks on every pass)."""

    TTL_S = 1.0

    def __init__(self, store: Store) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._at = float("-inf")
        self._machines: dict[str, AttachedHost] = {}
        self._hosts: dict[str, tuple[str, ...]] = {}

    def _read(self) -> None:
        with self._lock:
            if time.monotonic() - self._at < self.TTL_S:
                return
            machines: dict[str, AttachedHost] = {}
            hosts: dict[str, tuple[str, ...]] = {}
            with self.store.session() as session:
                rows = session.scalars(select(ComputeRow).where(ComputeRow.compute_type.in_(
                    ("virtualmachine", "amlcompute")))).all()
                for row in rows:
                    try:
                        spec = compute_spec(row)
                    except Exception:  # noqa: BLE001 (one unreadable compute fails alone)
                        log.warning("compute %s cannot be read; left out of the attached machines", row.name)
                        continue
                    if isinstance(spec, VirtualMachineCompute) and spec.host_key:
                        machines[row.name] = attached_host(spec)
                        hosts[row.name] = (row.name,)
                    elif isinstance(spec, AmlCompute) and spec.cible and spec.cible.provider == ATTACHED_PROVIDER:
                        hosts[row.name] = tuple(spec.cible.hosts or ())
            self._machines, self._hosts, self._at = machines, hosts, time.monotonic()

    def forget(self) -> None:
        """A compute changed (attached, its host key replaced, a cluster's hosts): read again at the next
        use, so a job submitted right after an attach does not find the machine missing."""
        with self._lock:
            self._at = float("-inf")

    def machines(self) -> Mapping[str, AttachedHost]:
        self._read()
        return self._machines

    def hosts_of(self, compute: str) -> tuple[str, ...]:
        self._read()
        return self._hosts.get(compute, ())
