"""Sizing an online deployment from a measurement: the seed's advice made a rule.

Azure's advice for choosing an online deployment's instance type is to load the model, watch its
memory under a realistic load, and take a size with at least half as much again (150 % of the
peak): the model's memory grows with concurrent requests, and the node needs room for the
scoring server, the OS and a bad day. The replica count then follows from the requests/s one
replica sustained and the requests/s wanted.

Pure: the measurement, the candidate sizes and `today` (which decides what is retired) come from
the caller. Units: memory in bytes here, the catalog's `memory_gb` is GiB (2**30 bytes).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date

from cible.core.catalog import VmSize
from cible.core.errors import InvalidRequestError, InvalidSpecError

__all__ = ["HEADROOM", "Recommendation", "recommend", "replicas_for"]

HEADROOM = 1.5  # a size's memory must be at least this many times the measured peak
GIB = float(1 << 30)
MIB = float(1 << 20)


@dataclass(frozen=True)
class Recommendation:
    """The chosen size and replica count, and the numbers that led there."""

    size: VmSize
    peak_memory_bytes: int
    needed_memory_bytes: int  # HEADROOM × the peak: the least memory a size may have
    candidates: int  # current sizes that were considered (after the GPU and retirement filters)
    fitting: int  # of those, how many have enough memory
    measured_rps: float  # requests/s one replica sustained
    target_rps: float | None
    instance_count: int | None  # replicas for target_rps (None when no target was given)
    explanation: str

    @property
    def memory_gb(self) -> float:
        return self.size.memory_gb


def replicas_for(target_rps: float, measured_rps: float) -> int:
    """ceil(target / measured), at least 1: the replicas that together answer `target_rps`."""
    if not target_rps > 0 or not math.isfinite(target_rps):
        raise InvalidRequestError(f"target_rps: give a positive number of requests per second, not {target_rps!r}",
                                  details={"field": "target_rps"})
    if not measured_rps > 0:
        raise InvalidRequestError(
            "target_rps: no request succeeded during the measurement, so the requests/s of one replica is "
            "unknown and no replica count follows from it; check the request (`cible online-endpoint invoke "
            "--request-file ...`) and measure again", details={"field": "target_rps", "measured_rps": measured_rps})
    return max(1, math.ceil(target_rps / measured_rps))


def recommend(peak_memory_bytes: int, measured_rps_per_replica: float, target_rps: float | None,
              sizes: Iterable[VmSize], today: date, *, min_gpus: int = 0,
              current: str | None = None) -> Recommendation:
    """The smallest current size whose memory is at least HEADROOM × `peak_memory_bytes`, and the
    replica count for `target_rps` (None without a target).

    Smallest means least memory, then fewest vCPUs, then cheapest; a size of the deployment's
    current family (`current`, its instance_type) wins a remaining tie, then the name. Current:
    not retired on `today`, and not an isolated size (a whole host, priced as one) unless only
    isolated sizes are large enough. `min_gpus` > 0 keeps sizes with at least that many GPUs (a
    GPU deployment stays on GPUs); 0 keeps CPU sizes only (a CPU model needs no GPU's price).
    InvalidSpecError when no size is large enough; InvalidRequestError for impossible inputs."""
    if not peak_memory_bytes > 0:
        raise InvalidRequestError(f"peak_memory_bytes: a replica uses some memory; {peak_memory_bytes!r} is not a "
                                  "measurement", details={"field": "peak_memory_bytes"})
    instance_count = None if target_rps is None else replicas_for(target_rps, measured_rps_per_replica)
    needed = math.ceil(peak_memory_bytes * HEADROOM)
    pool = [s for s in sizes if not s.is_retired(today) and (s.gpus >= min_gpus if min_gpus > 0 else s.gpus == 0)]
    kind = f"with at least {min_gpus} GPU{'s' if min_gpus > 1 else ''}" if min_gpus > 0 else "without GPUs"
    if not pool:
        raise InvalidSpecError(f"no current VM size {kind} is in the catalog on {today.isoformat()}; see "
                               "`cible compute list-sizes`", details={"min_gpus": min_gpus})
    fitting = [s for s in pool if s.memory_gb * GIB >= needed]
    if not fitting:
        largest = max(pool, key=lambda s: (s.memory_gb, -s.price_per_hour))
        raise InvalidSpecError(
            f"no current VM size {kind} has {_gb(needed)} of memory (150 % of the measured peak of "
            f"{_mb(peak_memory_bytes)}); the largest is {largest.describe()}. Make the model smaller, or load "
            "it once per replica and share it between requests",
            details={"needed_memory_bytes": needed, "peak_memory_bytes": peak_memory_bytes,
                     "largest": largest.name, "largest_memory_gb": largest.memory_gb})
    shared = [s for s in fitting if not s.isolated]
    family = _family(current, pool)
    chosen = min(shared or fitting, key=lambda s: (s.memory_gb, s.vcpus, s.price_per_hour, s.family != family,
                                                  s.name.lower()))
    return Recommendation(
        size=chosen, peak_memory_bytes=int(peak_memory_bytes), needed_memory_bytes=needed, candidates=len(pool),
        fitting=len(fitting), measured_rps=float(measured_rps_per_replica), target_rps=target_rps,
        instance_count=instance_count,
        explanation=_explain(chosen, peak_memory_bytes, needed, len(pool), len(fitting), not shared,
                             measured_rps_per_replica, target_rps, instance_count, current, pool, kind))


def _family(current: str | None, pool: list[VmSize]) -> str | None:
    if not current:
        return None
    for size in pool:
        if size.name.lower() == current.strip().lower():
            return size.family
    return None


def _explain(chosen: VmSize, peak: int, needed: int, candidates: int, fitting: int, only_isolated: bool,
             rps: float, target: float | None, count: int | None, current: str | None, pool: list[VmSize],
             kind: str) -> str:
    parts = [f"150 % of the peak memory of {_mb(peak)} is {_mb(needed)}: {chosen.describe()} is the smallest "
             f"current size {kind} with that much (least memory, then vCPUs, then price; {fitting} of "
             f"{candidates} current sizes are large enough)."]
    if only_isolated:
        parts.append("Only isolated sizes (a whole host each) are that large.")
    if current:
        now = next((s for s in pool if s.name.lower() == current.strip().lower()), None)
        if now is None:
            parts.append(f"The deployment's instance_type {current} is not a current size {kind}.")
        elif now.name == chosen.name:
            parts.append(f"The deployment already runs on {now.name}.")
        else:
            verdict = "too small for this peak" if now.memory_gb * GIB < needed else "larger than it needs"
            parts.append(f"The deployment runs on {now.describe()} now: {verdict}.")
    if count is not None and target is not None:
        parts.append(f"One replica answered {rps:g} requests/s; {target:g} requests/s need ceil({target:g} / "
                     f"{rps:g}) = {count} replica{'s' if count != 1 else ''} (instance_count).")
    else:
        parts.append(f"One replica answered {rps:g} requests/s (give a target requests/s for a replica count).")
    return " ".join(parts)


def _mb(value: float) -> str:
    return f"{value / MIB:.1f} MB"


def _gb(value: float) -> str:
    return f"{value / GIB:.2f} GB"
