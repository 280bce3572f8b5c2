"""The `slurm` node provider: a cible cluster (`type: amlcompute`, `cible: {provider: slurm, slurm:
hpc}`) whose nodes are Slurm jobs on the Slurm compute `hpc`, each running cible's agent for as
long as the cluster keeps the node. Slurm then only hands out machines; cible's cluster reconciler
places jobs, scales between min and max nodes and scales idle nodes down, as on any provider.

This is the other way of using a Slurm cluster: a `type: slurm` compute makes each job one Slurm
job, submitted as its user (runner.py); a cluster on Slurm holds nodes as the identity the cluster
was created with (its creator's credential on the Slurm compute), for the workspace's jobs, with
cible's dispatch on warm nodes. A node is `sbatch` of a script (one task, the size's CPUs, memory
and GPUs, the Slurm compute's partition, QOS and account, no time limit of cible's) that starts
the agent with its node token read from a 0600 file, removed as the agent starts. Its files travel
over HTTP, as an attached machine's do. Launch is idempotent by node id: each launched node has a
record in the workspace (`<nodes_root>/<node id>/slurm.json`: where and which Slurm job), read
again after a restart. A node is listed while its Slurm job is pending or running, with its
Slurm node's address once it runs; terminate is `scancel`.
"""

from __future__ import annotations

import json
import logging
import shlex
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cible.backends.base.contract import CLOSE, POLL_ERRORS, NodeRequest, ProviderBase, ProviderNode, ProviderStatus
from cible.backends.slurm import commands
from cible.backends.slurm.access import SlurmAccess, memory_mb, open_exec, token_and_submit, user_folder
from cible.backends.slurm.exec import SlurmExec
from cible.backends.slurm.script import render
from cible.backends.ssh.bundle import Bundle
from cible.backends.ssh.hosts import quote_path
from cible.core.safepaths import under

log = logging.getLogger("cible.server")
LIVE_STATES = frozenset({"PENDING", "CONFIGURING", "RUNNING", "RESIZING", "SUSPENDED"})
LIST_TTL_S = 1.0  # squeue is asked at most this often


class SlurmNodeProvider(ProviderBase):
    name = "slurm"
    capabilities = frozenset({CLOSE, POLL_ERRORS})

    def __init__(self, nodes_root: Path, url: str | None, node_token: Callable[[str], str], *,
                 access_of: Callable[[str], SlurmAccess], bundle: Callable[[], Bundle],
                 computes: Callable[[], list[SlurmAccess]] = list) -> None:
        self.nodes_root = nodes_root
        self.url = url
        self.node_token = node_token
        self.access_of = access_of  # a cluster's name -> how to reach the Slurm compute it draws from
        self.bundle = bundle
        self.computes = computes  # every Slurm compute of the workspace (cannot_hold asks their sinfo)
        self._execs: dict[tuple[str, str], tuple[SlurmAccess, SlurmExec]] = {}
        self._addresses: dict[str, str] = {}  # Slurm node name -> its NodeAddr
        self._listed: tuple[float, dict[str, ProviderNode]] | None = None
        self._error: str | None = None
        self._errors: dict[str, str] = {}  # node id -> why its Slurm job could not be submitted
        self._lock = threading.Lock()

    # -- the verbs -------------------------------------------------------------------------------
    def launch(self, requests: list[NodeRequest]) -> None:
        for request in requests:
            if self._record(request.node_id) is not None:
                continue  # launched already: launch is idempotent by node id
            try:
                self._launch(request)
            except Exception as exc:  # noqa: BLE001  (one node's failure is its own: poll_errors says it)
                log.warning("node %s: its Slurm job could not be submitted: %s", request.node_id, exc)
                with self._lock:
                    self._errors[request.node_id] = str(exc)
        self._listed = None

    def _launch(self, request: NodeRequest) -> None:
        access = self.access_of(request.compute)
        runner = self._exec(access)
        settings = access.compute.cible
        _, agent_dir = user_folder(runner, settings)
        root = f"{agent_dir}/nodes/{request.node_id}"
        folder = runner.ensure_bundle(self.bundle(), agent_dir)
        url = ((settings.server_url if settings and settings.server_url else self.url) or "").rstrip("/")
        python = settings.python if settings else "python3"
        env = settings.environment if settings else {}
        agent = [python, "-m", "cible.agent", *request.agent_args(None, url), "--root", root]
        lines = [
            *(f"export {name}={shlex.quote(value)}" for name, value in sorted(env.items())),
            f"export PYTHONPATH={shlex.quote(folder)}",
            # Where the other nodes reach this one (MASTER_ADDR): its Slurm node's address.
            'addr=$(scontrol show node -o "$SLURMD_NODENAME" | tr " " "\\n" | sed -n "s/^NodeAddr=//p")',
            # The token goes to the agent on stdin; its file is gone before the agent runs.
            f"exec 3< {shlex.quote(root)}/token && rm -f {shlex.quote(root)}/token",
            f'exec {shlex.join(agent)} --advertise-address "${{addr:-$SLURMD_NODENAME}}" <&3',
        ]
        script = render(request.node_id, 0, lines, cpus_per_task=max(1, request.vcpus),
                        memory_mb=None if request.overcommit else memory_mb(request.memory_gb), gpus=request.gpus,
                        partition=access.compute.partition, qos=access.compute.qos, account=access.compute.account,
                        output_dir=root)
        done = runner.run(token_and_submit(root, "node.sbatch", env),
                          stdin=f"{self.node_token(request.node_id)}\n{script}".encode())
        if done.status != 0:
            runner.run(f"rm -rf {quote_path(root)}")
            raise RuntimeError(f"sbatch refused node {request.node_id} on {runner.where}: "
                               f"{commands.submit_refusal(done.stderr) or done.stderr.strip()[-300:]}")
        job_id = commands.parse_sbatch(done.stdout).job_id
        self._write_record(request.node_id, {"compute": request.compute, "slurm_job_id": job_id, "root": root})
        log.info("node %s of %s: Slurm job %s on %s", request.node_id, request.compute, job_id,
                 access.compute.name)

    def terminate(self, node_ids: list[str]) -> None:
        """scancel each node's Slurm job and remove its folder there (a job cancelled while pending
        never ran the script that removes its token). Raises, once every node was tried, when any
        could not be cancelled: the reconciler tries those again."""
        failed = []
        for node_id in node_ids:
            record = self._record(node_id)
            if record is None:
                continue
            try:
                runner = self._exec(self.access_of(record["compute"]))
                done = runner.run(shlex.join(commands.scancel_argv([record["slurm_job_id"]])))
                if done.status != 0 and "Invalid job id" not in done.stderr:
                    raise RuntimeError(done.stderr.strip()[-300:] or f"exit {done.status}")
                runner.run(f"rm -rf {quote_path(record['root'])}")
            except Exception as exc:  # noqa: BLE001  (the others are still tried)
                failed.append(f"{node_id}: {exc}")
        self._listed = None
        if failed:
            raise RuntimeError(f"scancel failed for {len(failed)} node(s): {'; '.join(failed)}")

    def list_nodes(self) -> dict[str, ProviderNode] | None:
        """The nodes whose Slurm job is pending or running; None when Slurm cannot be asked. A node
        whose Slurm job ended (scancel, its time limit, a failure) is not listed and its record goes."""
        listed = self._listed
        if listed is not None and time.monotonic() - listed[0] < LIST_TTL_S:
            return listed[1]
        by_compute: dict[str, dict[str, str]] = {}
        for node_id, record in self._records().items():
            by_compute.setdefault(record["compute"], {})[record["slurm_job_id"]] = node_id
        nodes: dict[str, ProviderNode] = {}
        errors = []
        for compute, jobs in by_compute.items():
            try:
                nodes.update(self._list(compute, jobs))
            except Exception as exc:  # noqa: BLE001  (one cluster's Slurm that cannot be asked fails alone)
                errors.append(f"cluster {compute}: {exc}")
                # What was last seen of its nodes stands: none is taken for lost for want of an answer.
                nodes.update({node_id: node for node_id, node in (listed[1] if listed else {}).items()
                              if node_id in jobs.values()})
        self._error = "; ".join(errors) or None
        if errors:
            log.warning("the slurm provider cannot list some nodes: %s", self._error)
        self._listed = (time.monotonic(), nodes)
        return nodes

    def _list(self, compute: str, jobs: dict[str, str]) -> dict[str, ProviderNode]:
        """The live nodes among `jobs` (Slurm job id -> node id) of one cluster; those Slurm ended are forgotten."""
        runner = self._exec(self.access_of(compute))
        done = runner.run(shlex.join(commands.squeue_hosts_argv(jobs)))
        if done.status != 0 and "Invalid job id" not in done.stderr:
            raise RuntimeError(f"squeue on {runner.where} failed: {done.stderr.strip()[-300:]}")
        seen = commands.parse_squeue_hosts(done.stdout) if done.status == 0 else {}
        nodes = {}
        for job_id, node_id in jobs.items():
            state, host = seen.get(job_id, ("", ""))
            if state in LIVE_STATES:
                address = self._address(runner, host) if state == "RUNNING" and host else None
                nodes[node_id] = ProviderNode(node_id, alive=True, address=address)
            else:
                self._forget(node_id)
        return nodes

    def cannot_hold(self, size: str, vcpus: int, memory_gb: float, gpus: int, overcommit: bool) -> str | None:
        """A node of this size needs a Slurm node with its CPUs, memory (unless overcommitted: then
        no --mem is asked) and GPUs, on one of the workspace's Slurm computes (a cluster names its
        own later, as a cluster of attached machines names its hosts)."""
        computes = self.computes()
        if not computes:
            return "no Slurm compute is attached (cible compute attach --type slurm …)"
        seen = []
        for access in computes:
            try:
                done = self._exec(access).run(shlex.join(commands.SINFO_SIZES_ARGV))
                if done.status != 0:
                    raise RuntimeError(done.stderr.strip()[-200:] or f"exit {done.status}")
            except Exception as exc:  # noqa: BLE001  (one compute that cannot be asked does not decide)
                seen.append(f"{access.compute.name}: not asked ({exc})")
                continue
            for cpus, mem_mb, node_gpus in commands.parse_sinfo_sizes(done.stdout):
                if cpus >= vcpus and node_gpus >= gpus and (overcommit or mem_mb >= memory_gb * 1024):
                    return None
            seen.append(f"{access.compute.name}: " + (", ".join(
                f"{c} CPUs {m / 1024:g} GB {g} GPU" for c, m, g in commands.parse_sinfo_sizes(done.stdout))
                or "no node"))
        return f"no Slurm node holds {size} ({vcpus} CPUs, {memory_gb:g} GB, {gpus} GPU): {'; '.join(seen)}"

    def status(self) -> ProviderStatus:
        return ProviderStatus(name=self.name, available=True, reachable=self._error is None, error=self._error,
                              hint="a cluster whose nodes are Slurm jobs: cible compute attach --type slurm --name "
                                   "hpc …, then cible: {provider: slurm, slurm: hpc} in the cluster's YAML")

    def poll_errors(self) -> dict[str, str]:
        with self._lock:
            errors, self._errors = self._errors, {}
        return errors

    def close(self) -> None:
        with self._lock:
            execs, self._execs = list(self._execs.values()), {}
        for _, runner in execs:
            runner.close()

    # -- where and what ---------------------------------------------------------------------------
    def _exec(self, access: SlurmAccess) -> SlurmExec:
        key = (access.compute.name, access.owner)
        with self._lock:
            known = self._execs.get(key)
            if known is not None and known[0] == access:
                return known[1]
            old, self._execs[key] = self._execs.get(key), (access, open_exec(access))
            runner = self._execs[key][1]
        if old is not None:
            old[1].close()
        return runner

    def _address(self, runner: SlurmExec, host: str) -> str | None:
        if host not in self._addresses:
            done = runner.run(shlex.join(commands.scontrol_node_argv(host)))
            found = commands.node_address(done.stdout) if done.status == 0 else None
            if found is None:
                return None
            self._addresses[host] = found
        return self._addresses[host]

    def _record_path(self, node_id: str) -> Path:
        return under(self.nodes_root, node_id, field="node_id") / "slurm.json"

    def _record(self, node_id: str) -> dict[str, Any] | None:
        """The node's record, or None (none, or one this release cannot read: that node alone is left out)."""
        try:
            record = json.loads(self._record_path(node_id).read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(record, dict) or not all(isinstance(record.get(k), str) for k in ("compute", "slurm_job_id",
                                                                                            "root")):
            return None
        return record

    def _records(self) -> dict[str, dict[str, Any]]:
        found = {}
        for path in self.nodes_root.glob("*/slurm.json") if self.nodes_root.is_dir() else []:
            record = self._record(path.parent.name)
            if record is not None:
                found[path.parent.name] = record
        return found

    def _write_record(self, node_id: str, record: dict[str, Any]) -> None:
        path = self._record_path(node_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(record))
        temporary.replace(path)

    def _forget(self, node_id: str) -> None:
        path = self._record_path(node_id)
        path.unlink(missing_ok=True)
        try:
            path.parent.rmdir()  # the node's folder in the workspace, when nothing else is in it
        except OSError:
            pass
