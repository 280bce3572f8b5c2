"""A compute's provisioning state (Azure's `provisioning_state` names) and its transition table.

cible makes a compute at once (its nodes are the cluster reconciler's to start), so a row is
written Succeeded; Deleting is a compute draining its nodes before its row goes (a deleted
cluster with nodes, a serverless pool whose job ended). Creating, Updating and Failed are
Azure's other names, kept so a provider that provisions slowly has somewhere to go.

Nothing assigns a compute's provisioning state directly: `move_compute`
(cible.server.services.lifecycle) checks the move here and writes a history row.
"""

from __future__ import annotations

from enum import Enum

from cible.core.lifecycle.table import check_move


class ProvisioningState(str, Enum):
    CREATING = "Creating"
    UPDATING = "Updating"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    DELETING = "Deleting"


P = ProvisioningState

TRANSITIONS: dict[ProvisioningState, frozenset[ProvisioningState]] = {
    P.CREATING: frozenset({P.SUCCEEDED, P.FAILED, P.DELETING}),
    P.UPDATING: frozenset({P.SUCCEEDED, P.FAILED, P.DELETING}),
    P.SUCCEEDED: frozenset({P.UPDATING, P.FAILED, P.DELETING}),
    P.FAILED: frozenset({P.UPDATING, P.SUCCEEDED, P.DELETING}),
    # No way back: a draining compute takes no new jobs, and its row goes once its nodes are gone.
    P.DELETING: frozenset(),
}
TERMINAL = frozenset({P.DELETING})


def check_transition(current: ProvisioningState | str, target: ProvisioningState | str) -> None:
    check_move(TRANSITIONS, ProvisioningState(current), ProvisioningState(target), "compute provisioning state")
