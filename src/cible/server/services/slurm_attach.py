"""Attaching a Slurm cluster (`type: slurm`): before anything is stored, cible checks that it can
use the cluster as asked, and refuses with the reason when it cannot.

- With a login host (`login`): its host key is pinned as an attached machine's is (trusted on first
  use, or checked against the fingerprint the user gives), cible logs in over that pinned key and
  checks the Python the pilots run on (`cible.python`, ≥ 3.10).
- Without one: the server's own machine is the login node, and its Slurm commands are used.

Either way `sinfo` must answer (with `cible.environment`: SLURM_CONF, PATH…): the cluster's
partitions are stored, and a default `partition` that is not one of them is refused.
"""

from __future__ import annotations

import logging

from cible.backends.slurm.exec import LocalExec, SlurmExec, SshExec
from cible.backends.ssh.connect import RemoteHostError, SshTarget
from cible.backends.ssh.probe import attach, run_sync
from cible.core.errors import InvalidRequestError
from cible.core.models.computes import SlurmCompute

log = logging.getLogger(__name__)
SINFO = "sinfo -h -o %R"  # one partition name a line (%P would mark the default one with '*')
SINFO_TIMEOUT_S = 20.0


def slurm_target(spec: SlurmCompute, *, pinned: bool = True, username: str | None = None,
                 key_file: str | None = None, use_ssh_agent: bool | None = None) -> SshTarget:
    """Where and as whom cible logs in to `spec`'s login host: as the compute's own ssh_settings, or
    as a user's credential when `username` is given (with its key file, or the server's ssh-agent).
    With the pinned host key unless `pinned` is False (attaching)."""
    if spec.login is None or spec.ssh_settings is None:
        raise ValueError(f"compute {spec.name} has no login host")
    if username is None:
        username = spec.ssh_settings.admin_username or ""
        use_ssh_agent = spec.cible is not None and spec.cible.use_ssh_agent
        key_file = spec.ssh_settings.ssh_private_key_file
    return SshTarget(host=spec.host or "", port=spec.ssh_port, username=username,
                     key_file=None if use_ssh_agent else key_file, host_key=spec.host_key if pinned else None)


def slurm_exec(spec: SlurmCompute, target: SshTarget | None = None) -> SlurmExec:
    """How cible runs `spec`'s Slurm commands: this machine's, or the login host's over `target`
    (default: the compute's own login, pinned key)."""
    environment = spec.cible.environment if spec.cible else {}
    if spec.login is None:
        return LocalExec(environment)
    return SshExec(spec.name, target or slurm_target(spec), environment)


def partitions_of(runner: SlurmExec) -> list[str]:
    """The cluster's partitions as `sinfo` lists them, or a RemoteHostError saying why there are none."""
    done = runner.run(SINFO, timeout=SINFO_TIMEOUT_S)
    said = (done.stderr.strip() or done.stdout.strip())[-500:]
    if done.status == 127:
        raise RemoteHostError(f"{runner.where}: sinfo not found: give cible.environment.PATH (the folder of the "
                              f"cluster's Slurm commands) or install Slurm's client commands there ({said})",
                              details={"reason": "no_slurm", "where": runner.where})
    if done.status != 0:
        raise RemoteHostError(f"{runner.where}: no Slurm here: sinfo said: {said or f'exit {done.status}'} (a "
                              "cluster whose configuration is not in /etc/slurm needs cible.environment.SLURM_CONF)",
                              details={"reason": "no_slurm", "where": runner.where})
    names = list(dict.fromkeys(line.strip() for line in done.stdout.splitlines() if line.strip()))
    if not names:
        raise RemoteHostError(f"{runner.where}: no Slurm here: sinfo lists no partition",
                              details={"reason": "no_slurm", "where": runner.where})
    return names


def attach_slurm(spec: SlurmCompute, *, expected_fingerprint: str | None = None) -> SlurmCompute:
    """`spec` with its login host's key pinned (when it has one) and its partitions found; raises
    (RemoteHostError, InvalidRequestError) when the cluster cannot be used as asked. The login
    host's key is checked against `expected_fingerprint` (else cible.expected_host_key_fingerprint)
    instead of being trusted on first use."""
    settings = spec.cible
    update: dict[str, object] = {}
    if spec.login is not None:
        expected = expected_fingerprint or (settings.expected_host_key_fingerprint if settings else None)
        python = settings.python if settings else "python3"
        found = run_sync(attach(slurm_target(spec, pinned=False), python=python, expected_fingerprint=expected))
        how = "checked against the expected fingerprint" if expected else "trusted on first use"
        log.info("compute %s: host key %s of login host %s:%s %s and pinned", spec.name, found.host_key_fingerprint,
                 spec.host, spec.ssh_port, how)
        update.update(host_key=found.host_key, host_key_fingerprint=found.host_key_fingerprint)
        spec = spec.model_copy(update=update)
    runner = slurm_exec(spec)
    try:
        partitions = partitions_of(runner)
    finally:
        runner.close()
    if spec.partition is not None and spec.partition not in partitions:
        raise InvalidRequestError(f"partition: '{spec.partition}' is not a partition of this Slurm cluster "
                                  f"(partitions: {', '.join(partitions)})", details={"field": "partition"})
    return spec.model_copy(update={"partitions": partitions})
