"""The Slurm runner and the slurm node provider as the server builds them: what they read of the
store (a compute's spec, a job's submitter or a cluster's creator and their credential), the
pilots' reports and token, the node code they ship."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

from sqlalchemy import select

from cible.backends.slurm.access import SlurmAccess, memory_mb
from cible.backends.slurm.runner import SlurmRunner, SlurmSize
from cible.backends.ssh.bundle import Bundle, build_bundle
from cible.core import catalog
from cible.core.errors import InvalidRequestError, NotFoundError
from cible.core.lifecycle.jobs import JobStatus
from cible.core.models.computes import SlurmCompute
from cible.server.clusters.hub import AgentHub
from cible.server.clusters.runs import merge_reports, read_reports
from cible.server.services.compute_spec import compute_spec
from cible.server.services.credentials import no_credential_message, stored_credential
from cible.server.store.db import Store
from cible.server.store.rows import ComputeRow, JobRow
from cible.server.tokens import Tokens
from cible.workspace import WorkspacePaths

SLURM = "slurm"


def slurm_compute_names(store: Store) -> set[str]:
    with store.session() as session:
        return set(session.scalars(select(ComputeRow.name).where(ComputeRow.compute_type == SLURM)))


def slurm_access(store: Store, compute: str, owner: str) -> SlurmAccess:
    """How to reach Slurm compute `compute` as cible user `owner` (their credential over a login host)."""
    with store.session() as session:
        row = session.get(ComputeRow, compute)
        if row is None or row.compute_type != SLURM:
            raise NotFoundError(f"Slurm compute '{compute}' does not exist any more", details={"name": compute})
        spec = compute_spec(row)
        assert isinstance(spec, SlurmCompute)
        if spec.login is None:
            return SlurmAccess(spec, None, owner)
        credential = stored_credential(session, compute, owner or None)
    if credential is None:
        raise InvalidRequestError(no_credential_message(compute, owner or None), details={"field": "compute"})
    return SlurmAccess(spec, credential.target(spec), owner)


def cluster_access(store: Store, cluster: str) -> SlurmAccess:
    """The slurm provider's way to the Slurm compute a cluster (`cible: {provider: slurm, slurm: …}`)
    draws its nodes from: as the cluster's creator."""
    with store.session() as session:
        row = session.get(ComputeRow, cluster)
        spec = compute_spec(row) if row is not None else None
        slurm = getattr(getattr(spec, "cible", None), "slurm", None)
        if row is None or slurm is None:
            raise NotFoundError(f"cluster '{cluster}' names no Slurm compute (cible.slurm)", details={"name": cluster})
        owner = row.created_by or ""
    return slurm_access(store, slurm, owner)


def every_compute(store: Store) -> list[SlurmAccess]:
    """Every Slurm compute, reached as the user who attached it (their credential is recorded)."""
    with store.session() as session:
        rows = session.execute(select(ComputeRow.name, ComputeRow.created_by).where(
            ComputeRow.compute_type == SLURM)).all()
    found = []
    for name, creator in rows:
        try:
            found.append(slurm_access(store, name, creator or ""))
        except (NotFoundError, InvalidRequestError):
            continue  # deleted meanwhile, or its attacher's credential removed
    return found


def node_bundle(paths: WorkspacePaths) -> Callable[[], Bundle]:
    """The node code, built once per server start (the runner's and the provider's alike)."""
    return lru_cache(maxsize=1)(lambda: build_bundle(paths.home / "cache" / "bundles"))


def slurm_runner(store: Store, paths: WorkspacePaths, tokens: Tokens, hub: AgentHub, url: str | None,
                 bundle: Callable[[], Bundle]) -> SlurmRunner:
    def access(compute: str, owner: str) -> SlurmAccess:
        return slurm_access(store, compute, owner)

    def owner_of(job_name: str) -> str:
        with store.session() as session:
            return session.scalar(select(JobRow.created_by).where(JobRow.name == job_name)) or ""

    def submission_of(job_name: str) -> str:
        with store.session() as session:
            row = session.get(JobRow, job_name)
            return str(row.run.plan.get("token_salt", "")) if row is not None else ""

    def canceling(job_name: str) -> bool:
        with store.session() as session:
            status = session.scalar(select(JobRow.status).where(JobRow.name == job_name))
        return status in (JobStatus.CANCEL_REQUESTED.value, JobStatus.CANCELED.value)

    def size_of(instance_type: str) -> SlurmSize:
        size = catalog.get_size(instance_type)
        return SlurmSize(cpus=size.vcpus, memory_mb=memory_mb(size.memory_gb), gpus=size.gpus)

    return SlurmRunner(reports=lambda job, attempt, nodes: read_reports(paths, job, attempt, nodes),
                       merge=merge_reports, access=access, owner_of=owner_of, canceling=canceling,
                       pilot_token=lambda job, attempt: tokens.pilot(job, attempt, submission_of(job)), size_of=size_of, bundle=bundle, server_url=url,
                       notify_nodes=hub.notify, log_dir=lambda job: Path(paths.run_dir(job)))
