"""The one function per entity that changes its state: a compute's provisioning state, an
instance's power, a quota request's status. Each checks the move against the entity's table
(cible.core.lifecycle), changes the field and writes a `lifecycle_history` row (the audit log).

Jobs have `set_status` (services/jobs.py) and nodes the cluster reconciler's moves; nothing
else assigns these fields (tests/unit/test_status_assignments.py holds to it).

Moving to the state an entity already has is no move: nothing is written and False returned.
An illegal move raises InvalidTransitionError (a 409 with the allowed moves).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from cible.core.lifecycle import computes, endpoints, instance_power, quota_requests
from cible.core.lifecycle.computes import ProvisioningState
from cible.core.lifecycle.instance_power import EVENT_KIND, Power
from cible.core.lifecycle.quota_requests import QuotaRequestStatus
from cible.core.models.records import MAX_EVENTS, InstanceEvent, InstanceState
from cible.server.store.rows import ComputeRow, LifecycleRow, OnlineDeploymentRow, OnlineEndpointRow, QuotaRequestRow

COMPUTE, INSTANCE_POWER, QUOTA_REQUEST = "compute", "instance_power", "quota_request"  # LifecycleRow.entity
ENDPOINT, DEPLOYMENT = "online_endpoint", "online_deployment"


def move_compute(session: Session, row: ComputeRow, state: ProvisioningState | str, reason: str | None,
                 now: datetime, by: str | None = None) -> bool:
    """Change a compute's provisioning state (e.g. Succeeded -> Deleting as it drains)."""
    target = ProvisioningState(state)
    if row.provisioning_state == target.value:
        return False
    computes.check_transition(row.provisioning_state, target)
    _history(session, COMPUTE, row.name, row.provisioning_state, target.value, reason, now, by)
    row.provisioning_state = target.value
    row.updated_at = now
    return True


def move_endpoint(session: Session, row: OnlineEndpointRow | OnlineDeploymentRow,
                  state: endpoints.ProvisioningState | str, reason: str | None, now: datetime) -> bool:
    """Change an online endpoint's or deployment's provisioning state (Creating -> Succeeded as its
    replicas get ready, -> Updating on a new spec, -> Deleting)."""
    target = endpoints.ProvisioningState(state)
    if row.provisioning_state == target.value:
        return False
    deployment = isinstance(row, OnlineDeploymentRow)
    what = "deployment provisioning state" if deployment else "endpoint provisioning state"
    endpoints.check_transition(row.provisioning_state, target, what)
    key = f"{row.endpoint}/{row.name}" if deployment else row.name
    _history(session, DEPLOYMENT if deployment else ENDPOINT, key + (" (local)" if row.local else ""),
             row.provisioning_state, target.value, reason, now)
    row.provisioning_state = target.value
    row.updated_at = now
    return True


def move_power(session: Session, row: ComputeRow, power: Power | str, reason: str, now: datetime,
               by: str | None = None) -> bool:
    """Change a compute instance's power, with the event `compute show` lists. Powering on starts
    its idle time afresh (a snooze or warning of before is void); any move voids a pending
    scheduled stop."""
    target = Power(power)
    instance = row.observed.instance or InstanceState()
    if instance.power == target.value:
        return False
    instance_power.check_transition(instance.power, target)
    _history(session, INSTANCE_POWER, row.name, Power(instance.power).value, target.value, reason, now, by)
    powered_on = {"powered_on_at": now, "snoozed_until": None, "warned_for": None} if target == Power.ON else {}
    moved = instance.model_copy(update={"power": target, "power_reason": reason, "pending_stop": None,
                                        "events": with_event(instance, now, EVENT_KIND[target], reason), **powered_on})
    row.observed = row.observed.model_copy(update={"instance": moved})
    return True


def move_quota_request(session: Session, row: QuotaRequestRow, status: QuotaRequestStatus | str,
                       reason: str | None, now: datetime, by: str | None = None) -> bool:
    """Approve or deny a quota request (the caller sets who decided and raises the quota)."""
    target = QuotaRequestStatus(status)
    if row.status == target.value:
        return False
    quota_requests.check_transition(row.status, target)
    _history(session, QUOTA_REQUEST, str(row.id), row.status, target.value, reason, now, by)
    row.status = target.value
    if target in quota_requests.TERMINAL:
        row.decided_at = now
    return True


def with_event(instance: InstanceState, now: datetime, kind: str, message: str) -> list[InstanceEvent]:
    """The instance's events with one more (its latest MAX_EVENTS are kept)."""
    return [*instance.events, InstanceEvent(at=now, kind=kind, message=message)][-MAX_EVENTS:]


def _history(session: Session, entity: str, key: str, from_state: str | None, to_state: str, reason: str | None,
             now: datetime, by: str | None = None) -> None:
    """One move in the audit log; `by` the user who made it (None: cible's own move, as a pass's)."""
    session.add(LifecycleRow(entity=entity, key=key, from_state=from_state, to_state=to_state, reason=reason, at=now,
                             by=by))
