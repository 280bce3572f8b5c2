"""Workspace vCPU quotas, Azure ML's model: pure checks of nodes against limits.

Azure ML counts a dedicated node's vCPUs against two quotas at once: its VM family's
("Standard DSv2 Family Cluster Dedicated vCPUs") and the regional total of all dedicated
families ("Total Cluster Dedicated Regional vCPUs"). A low-priority node counts against one
separate quota only ("Total Cluster LowPriority Regional vCPUs"), never the family ones.

Here a limit of None means "no limit", and a family missing from `per_family` has no family
limit: a self-hosted workspace starts unconstrained, unlike Azure where unlisted is 0.
No clock, database or I/O: usage is counted by the caller from its node rows.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

__all__ = [
    "NodeUse",
    "QuotaHeadroom",
    "QuotaLimits",
    "Usage",
    "list_usage",
    "localized_family_name",
    "min_nodes_error",
    "nodes_that_fit",
    "usage_of",
]

# Scope names of the stored quota rows (QuotaRow.scope): a family name, or one of these.
TOTAL_SCOPE = "total"
LOW_PRIORITY_SCOPE = "low_priority"

RAISE_HINT = "raise it with `cible quota request`"

# Azure's names and resource types for the two regional rows of `az ml compute list-usage`
# (REST Usages_List example, Microsoft.MachineLearningServices).
TOTAL_DEDICATED_NAME = "Total Cluster Dedicated Regional vCPUs"
TOTAL_LOW_PRIORITY_NAME = "Total Cluster LowPriority Regional vCPUs"
_TYPE_PREFIX = "Microsoft.MachineLearningServices"
# Azure's value for "no limit applies to this row" (it prints -1 on rows it does not enforce).
# Kept rather than null so the field stays an integer for typed clients, as in Azure.
UNLIMITED = -1


@dataclass(frozen=True)
class QuotaLimits:
    total_vcpus: int | None = None  # all dedicated families together
    low_priority_vcpus: int | None = None
    per_family: Mapping[str, int] = field(default_factory=dict)  # family -> dedicated vCPU limit

    @classmethod
    def from_scopes(cls, scopes: Mapping[str, int]) -> QuotaLimits:
        """From stored rows keyed by scope: "total", "low_priority" or a family name."""
        families = {k: v for k, v in scopes.items() if k not in (TOTAL_SCOPE, LOW_PRIORITY_SCOPE)}
        return cls(scopes.get(TOTAL_SCOPE), scopes.get(LOW_PRIORITY_SCOPE), families)


# The nodes of attached machines: the user's own, so no quota counts them (Azure counts none of
# its attached computes either).
UNMETERED_FAMILY = "attached"


@dataclass(frozen=True)
class NodeUse:
    family: str
    vcpus: int
    low_priority: bool = False


@dataclass(frozen=True)
class Usage:
    per_family: Mapping[str, int]  # dedicated vCPUs in use per family
    total: int  # dedicated vCPUs in use
    low_priority: int


def usage_of(nodes: Iterable[NodeUse]) -> Usage:
    """Sum the vCPUs of the nodes holding quota (the caller passes the live ones)."""
    per_family: dict[str, int] = {}
    total = low = 0
    for node in nodes:
        if node.family == UNMETERED_FAMILY:
            continue
        if node.low_priority:
            low += node.vcpus
        else:
            per_family[node.family] = per_family.get(node.family, 0) + node.vcpus
            total += node.vcpus
    return Usage(per_family, total, low)


@dataclass(frozen=True)
class QuotaHeadroom:
    """The workspace's quotas and what its live nodes use, as one pass sees them: an input of each
    cluster's decide. The pass carries it from cluster to cluster, adding the nodes each applied
    plan launched (`with_nodes`), so the next cluster's decide sees them."""

    limits: QuotaLimits = field(default_factory=QuotaLimits)
    usage: Usage = field(default_factory=lambda: Usage({}, 0, 0))

    def fit(self, *, family: str, vcpus_per_node: int, low_priority: bool, wanted: int) -> tuple[int, str | None]:
        return nodes_that_fit(self.limits, self.usage, family=family, vcpus_per_node=vcpus_per_node,
                              low_priority=low_priority, wanted=wanted)

    def with_nodes(self, node: NodeUse, count: int) -> QuotaHeadroom:
        """The headroom once `count` more such nodes hold quota."""
        if count <= 0:
            return self
        added = usage_of([node] * count)
        per_family = dict(self.usage.per_family)
        for family, vcpus in added.per_family.items():
            per_family[family] = per_family.get(family, 0) + vcpus
        usage = Usage(per_family, self.usage.total + added.total, self.usage.low_priority + added.low_priority)
        return QuotaHeadroom(self.limits, usage)


@dataclass(frozen=True)
class _Check:
    label: str  # "standardDSv2Family dedicated", "total dedicated", "low-priority"
    limit: int | None
    used: int


def _checks(limits: QuotaLimits, usage: Usage, family: str, low_priority: bool) -> list[_Check]:
    # Family before total: when both bind equally, the narrower quota is the one to name.
    if low_priority:
        return [_Check("low-priority", limits.low_priority_vcpus, usage.low_priority)]
    return [
        _Check(f"{family} dedicated", limits.per_family.get(family), usage.per_family.get(family, 0)),
        _Check("total dedicated", limits.total_vcpus, usage.total),
    ]


def _nodes(n: int) -> str:
    return f"{n} node" if n == 1 else f"{n} nodes"


def nodes_that_fit(
    limits: QuotaLimits, usage: Usage, *, family: str, vcpus_per_node: int, low_priority: bool, wanted: int
) -> tuple[int, str | None]:
    """How many of `wanted` new nodes fit in the quotas (0..wanted), and, when fewer than
    wanted, why: the binding quota with its use, limit and what the rest would need."""
    wanted = max(0, wanted)
    if vcpus_per_node <= 0 or family == UNMETERED_FAMILY:  # holds no quota
        return wanted, None
    best, binding = wanted, None
    for check in _checks(limits, usage, family, low_priority):
        if check.limit is None:
            continue
        fit = min(wanted, max(0, check.limit - check.used) // vcpus_per_node)
        if fit < best:
            best, binding = fit, check
    if binding is None:
        return wanted, None
    short = wanted - best
    need = f"{short} more {'node' if short == 1 else 'nodes'} of {vcpus_per_node} vCPUs"
    need += f" {'needs' if short == 1 else 'need'} {short * vcpus_per_node}"
    if best:
        need = f"room for {best} of {wanted}; {need}"
    reason = f"quota: {binding.label} vCPUs: {binding.used} of {binding.limit} in use, {need} ({RAISE_HINT})"
    return best, reason


def min_nodes_error(
    limits: QuotaLimits, usage: Usage, *, family: str, vcpus_per_node: int, low_priority: bool, count: int, what: str
) -> str | None:
    """Why `count` nodes could never run, or None: a limit itself (current use aside) is below
    count × vCPUs. For refusing at create, since waiting would not help. `usage` is unused
    (it is taken for symmetry with nodes_that_fit) because others' nodes come and go."""
    need = count * vcpus_per_node
    if need <= 0 or family == UNMETERED_FAMILY:
        return None
    for check in _checks(limits, usage, family, low_priority):
        if check.limit is not None and need > check.limit:
            return (
                f"{what} needs {need} vCPUs ({_nodes(count)} of {vcpus_per_node}), above the "
                f"{check.label} vCPU quota of {check.limit}, so it could never start ({RAISE_HINT})"
            )
    return None


def localized_family_name(family: str) -> str:
    """Azure's label of a family's row: "standardDSv2Family" -> "Standard DSv2 Family Cluster
    Dedicated vCPUs". Families Azure spells with spaces ("Standard NCASv3_T4 Family") are kept."""
    match = re.fullmatch(r"standard(.+?)Family", family, flags=re.IGNORECASE)
    base = f"Standard {match.group(1)} Family" if match and " " not in family else family
    return f"{base} Cluster Dedicated vCPUs"


def _row(location: str, kind: str, value: str, localized: str, current: int, limit: int | None) -> dict:
    slug = value.replace(" ", "_")
    return {
        "id": f"/subscriptions/local/providers/{_TYPE_PREFIX}/locations/{location}/usages/{slug}",
        "amlWorkspaceLocation": location,
        "type": f"{_TYPE_PREFIX}/{kind}/usages",
        "unit": "Count",
        "currentValue": current,
        "limit": UNLIMITED if limit is None else limit,
        "name": {"value": value, "localizedValue": localized},
    }


def list_usage(limits: QuotaLimits, usage: Usage, families: Iterable[str], *, location: str = "local") -> list[dict]:
    """`az ml compute list-usage` rows in Azure's shape and order: the dedicated total, one row
    per family, then the low-priority total. Families are the given ones (the catalog's, so
    users see every family) plus any with a limit or use that the list lacks, so none hides."""
    names = list(dict.fromkeys(families))
    names += sorted((set(limits.per_family) | set(usage.per_family)) - set(names))
    rows = [_row(location, "dedicatedCores", TOTAL_DEDICATED_NAME, TOTAL_DEDICATED_NAME, usage.total,
                 limits.total_vcpus)]
    for family in names:
        rows.append(_row(location, "vmFamily", family, localized_family_name(family),
                         usage.per_family.get(family, 0), limits.per_family.get(family)))
    rows.append(_row(location, "lowPriorityCores", TOTAL_LOW_PRIORITY_NAME, TOTAL_LOW_PRIORITY_NAME,
                     usage.low_priority, limits.low_priority_vcpus))
    return rows
