"""Online endpoints and deployments: their provisioning state (Azure's names) and their replicas'
states, each with its transition table.

Provisioning (an endpoint's or a deployment's `provisioning_state`):
- Creating: written at create; Succeeded once the deployment's replicas are ready (an endpoint has
  nothing to wait for: it is Succeeded at once, as on Azure a few seconds later).
- Updating: a new spec (model, code, instance count) is being rolled out, one replica at a time.
- Failed: replicas keep failing (a broken `init()`: the reason says why); a later update, or a
  replica that gets ready after all, leaves it.
- Canceled: an operation given up before it finished (a create or update the user stopped);
  it stays until the next update or a delete.
- Deleting: replicas are stopping before the row goes; no way back.

Replicas (one scoring-server process each, run as a job of type `replica`):
- Starting: launched, not yet answering its readiness probe.
- Ready: in traffic.  Unready: out of traffic (readiness probe failing), still running.
- Failed: its process ended on its own, or it said it cannot serve (`init()` raised), or it never
  got ready in time; what is left of it is stopped and it is replaced (with a back-off).
- Stopping: asked to stop (scaled away, retired by a rolling update, restarted by its liveness
  probe). Stopped: gone; the row is kept for the history and left out of listings.

Nothing assigns these states directly: the endpoint reconciler applies the moves that
`cible.core.planning.replicas.decide_replicas` plans, each through `check_replica_transition`.
"""

from __future__ import annotations

from enum import Enum

from cible.core.lifecycle.table import check_move


class ProvisioningState(str, Enum):
    CREATING = "Creating"
    UPDATING = "Updating"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELED = "Canceled"
    DELETING = "Deleting"


P = ProvisioningState

TRANSITIONS: dict[ProvisioningState, frozenset[ProvisioningState]] = {
    # Creating → Updating: a deployment whose first replicas are not ready yet is changed (fixed) by the user.
    P.CREATING: frozenset({P.UPDATING, P.SUCCEEDED, P.FAILED, P.CANCELED, P.DELETING}),
    P.UPDATING: frozenset({P.SUCCEEDED, P.FAILED, P.CANCELED, P.DELETING}),
    P.SUCCEEDED: frozenset({P.UPDATING, P.FAILED, P.DELETING}),
    # Failed → Succeeded: replicas that crashed for a while (a node lost, a dependency down) and
    # then got ready without a new spec.
    P.FAILED: frozenset({P.UPDATING, P.SUCCEEDED, P.DELETING}),
    P.CANCELED: frozenset({P.UPDATING, P.DELETING}),
    P.DELETING: frozenset(),
}
TERMINAL = frozenset({P.DELETING})
# States in which the entity takes no new operation until the current one ends (Azure answers 409).
BUSY = frozenset({P.CREATING, P.UPDATING, P.DELETING})


class ReplicaState(str, Enum):
    STARTING = "Starting"
    READY = "Ready"
    UNREADY = "Unready"
    FAILED = "Failed"
    STOPPING = "Stopping"
    STOPPED = "Stopped"


R = ReplicaState

# Replicas that run (or are about to) and count toward a deployment's replicas.
LIVE_REPLICAS = frozenset({R.STARTING, R.READY, R.UNREADY})

REPLICA_TRANSITIONS: dict[ReplicaState, frozenset[ReplicaState]] = {
    R.STARTING: frozenset({R.READY, R.FAILED, R.STOPPING}),
    R.READY: frozenset({R.UNREADY, R.FAILED, R.STOPPING}),
    R.UNREADY: frozenset({R.READY, R.FAILED, R.STOPPING}),
    # A failed replica is never revived: it is replaced. Stopped once its process is gone.
    R.FAILED: frozenset({R.STOPPED}),
    R.STOPPING: frozenset({R.STOPPED}),
    R.STOPPED: frozenset(),
}


def check_transition(current: ProvisioningState | str, target: ProvisioningState | str,
                     what: str = "provisioning state") -> None:
    """`what`: how the message names it ("endpoint provisioning state", "deployment provisioning state")."""
    check_move(TRANSITIONS, ProvisioningState(current), ProvisioningState(target), what)


def can_transition(current: ProvisioningState | str, target: ProvisioningState | str) -> bool:
    return ProvisioningState(target) in TRANSITIONS[ProvisioningState(current)]


def check_replica_transition(current: ReplicaState | str, target: ReplicaState | str) -> None:
    check_move(REPLICA_TRANSITIONS, ReplicaState(current), ReplicaState(target), "replica state")


def can_replica_transition(current: ReplicaState | str, target: ReplicaState | str) -> bool:
    return ReplicaState(target) in REPLICA_TRANSITIONS[ReplicaState(current)]


def is_live(state: ReplicaState | str) -> bool:
    return ReplicaState(state) in LIVE_REPLICAS
