"""How computes name one another: a cluster of attached machines names them in `cible.hosts`, a
cluster on Slurm its Slurm compute in `cible.slurm`. Checked at create; at delete, a compute that
another names, or that has jobs running, stays."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from cible.core.errors import ConflictError, InvalidRequestError
from cible.server.store.rows import ComputeRow, JobRow, job_is_live


def check_hosts(session: Session, entity) -> None:  # noqa: ANN001
    """A cluster of attached machines names machines attached to this workspace."""
    hosts = getattr(entity.cible, "hosts", None) or []
    kinds = dict(session.execute(select(ComputeRow.name, ComputeRow.compute_type).where(
        ComputeRow.name.in_(hosts))).all())
    wrong = [f"'{h}' ({'is a ' + kinds[h] if h in kinds else 'does not exist'})" for h in hosts
             if kinds.get(h) != "virtualmachine"]
    if wrong:
        raise InvalidRequestError(f"cible.hosts: {', '.join(wrong)}; name machines attached with `cible compute "
                                  "attach --type virtualmachine`", details={"field": "cible.hosts"})


def check_slurm(session: Session, entity) -> None:  # noqa: ANN001
    """A cluster on Slurm names the Slurm compute its nodes are Slurm jobs of."""
    settings = entity.cible
    named = getattr(settings, "slurm", None)
    if getattr(settings, "provider", None) != "slurm":
        if named is not None:
            raise InvalidRequestError("cible.slurm: only for cible.provider: slurm", details={"field": "cible.slurm"})
        return
    kind = session.scalar(select(ComputeRow.compute_type).where(ComputeRow.name == named)) if named else None
    if kind != "slurm":
        what = "is missing" if named is None else f"'{named}' {'is a ' + kind if kind else 'does not exist'}"
        raise InvalidRequestError(f"cible.slurm: {what}; name a Slurm compute attached with `cible compute attach "
                                  "--type slurm`", details={"field": "cible.slurm"})


def refuse_if_a_cluster_uses(session: Session, attached: str) -> None:
    """An attached machine named in a cluster's cible.hosts (a Slurm compute named in its cible.slurm)
    stays while that cluster names it: the cluster's nodes there may be running jobs."""
    users, fields = [], set()
    for name, spec in session.execute(select(ComputeRow.name, ComputeRow.spec).where(
            ComputeRow.compute_type == "amlcompute")).all():
        settings = (spec or {}).get("cible") or {}
        for field, named in (("cible.hosts", settings.get("hosts") or []), ("cible.slurm", [settings.get("slurm")])):
            if attached in named:
                users.append(name)
                fields.add(field)
    if users:
        raise ConflictError(f"compute '{attached}' is used by cluster(s) {', '.join(sorted(set(users)))} "
                            f"({', '.join(sorted(fields))}); delete those clusters first",
                            details={"clusters": sorted(set(users))})


def refuse_if_jobs_run_on(session: Session, compute: str, *targets: str) -> None:
    """A Slurm cluster stays while jobs on it have not ended: they are Slurm jobs that only its
    record lets cible follow and cancel (a Kubernetes compute while jobs on its pools, `targets`)."""
    live = session.scalars(select(JobRow.name).where(
        JobRow.target.in_([compute, *targets]), job_is_live()).limit(6)).all()
    if live:
        shown = ", ".join(live[:5]) + (", …" if len(live) > 5 else "")
        raise ConflictError(f"compute '{compute}' has jobs that have not ended ({shown}); cancel them (or wait for "
                            "their end) before detaching it", details={"jobs": list(live[:5])})
