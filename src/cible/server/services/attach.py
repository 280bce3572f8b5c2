"""Attaching a machine over SSH (`type: virtualmachine`): before anything is stored, the host key
is pinned (trusted on first use, or checked against the fingerprint the user gives), cible logs in
with the compute's key over that pinned key, and the host is probed. A host that cannot be used
as asked is refused with the reason; nothing of it is stored.

What is stored is public: the host key, its fingerprint, the host's facts, and the *path* of the
private key on the server's machine (read at each login, never copied)."""

from __future__ import annotations

import logging

from cible.backends.ssh.connect import SshTarget
from cible.backends.ssh.probe import attach, run_sync
from cible.core.models.computes import HostFacts, VirtualMachineCompute

log = logging.getLogger(__name__)


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
