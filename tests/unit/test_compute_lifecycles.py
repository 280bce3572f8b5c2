"""The transition tables of a compute's provisioning state, an instance's power and a quota
request, and the one function that changes each: it checks the move, changes the field and
writes a lifecycle_history row; an illegal move is refused and changes nothing."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from cible.core.errors import InvalidTransitionError
from cible.core.lifecycle import computes, instance_power, quota_requests
from cible.core.lifecycle.computes import ProvisioningState
from cible.core.lifecycle.instance_power import Power
from cible.core.lifecycle.quota_requests import QuotaRequestStatus
from cible.core.models.records import ComputeStatus, InstanceState
from cible.server.services.instance_state import instance_pass
from cible.server.services.lifecycle import move_compute, move_power, move_quota_request
from cible.server.store.db import Store
from cible.server.store.rows import ComputeRow, LifecycleRow, QuotaRequestRow

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)
P, Q = ProvisioningState, QuotaRequestStatus


def add_compute(store: Store, name: str = "ci", kind: str = "computeinstance",
                instance: InstanceState | None = None) -> None:
    spec = {"name": name, "size": "Standard_DS1_v2"}
    with store.session() as session:
        session.add(ComputeRow(name=name, compute_type=kind, spec=spec, provisioning_state=P.SUCCEEDED.value,
                               created_at=T0, updated_at=T0,
                               observed=ComputeStatus(instance=instance or InstanceState(powered_on_at=T0))
                               if kind == "computeinstance" else ComputeStatus()))


def history(store: Store, entity: str) -> list[tuple[str, str | None, str, str | None, datetime]]:
    with store.session() as session:
        rows = session.scalars(select(LifecycleRow).where(LifecycleRow.entity == entity).order_by(LifecycleRow.id))
        return [(r.key, r.from_state, r.to_state, r.reason, r.at) for r in rows]


# -- the tables -------------------------------------------------------------------------------------


@pytest.mark.parametrize("module, enum", [(computes, ProvisioningState), (instance_power, Power),
                                          (quota_requests, QuotaRequestStatus)])
def test_every_state_has_a_row_and_every_move_stays_in_the_table(module, enum):  # noqa: ANN001
    assert set(module.TRANSITIONS) == set(enum)
    for current, targets in module.TRANSITIONS.items():
        assert current not in targets  # staying put is no move
        assert targets <= set(enum)


def test_a_deleting_compute_never_comes_back():
    assert computes.TRANSITIONS[P.DELETING] == frozenset()
    assert P.DELETING in computes.TRANSITIONS[P.SUCCEEDED]
    with pytest.raises(InvalidTransitionError) as info:
        computes.check_transition(P.DELETING, P.SUCCEEDED)
    assert "Deleting" in info.value.message and "Succeeded" in info.value.message
    assert "terminal" in info.value.message


def test_power_moves_as_the_verbs_and_the_passes_use_them():
    assert instance_power.TRANSITIONS[Power.ON] == {Power.OFF, Power.RESTART}
    assert instance_power.TRANSITIONS[Power.OFF] == {Power.ON}  # a stopped instance is not restarted
    assert instance_power.TRANSITIONS[Power.RESTART] == {Power.ON, Power.OFF}
    with pytest.raises(InvalidTransitionError):
        instance_power.check_transition(Power.OFF, Power.RESTART)
    assert instance_power.VERBS == {"start": Power.ON, "stop": Power.OFF, "restart": Power.RESTART}


def test_a_quota_request_is_decided_once():
    assert quota_requests.TRANSITIONS[Q.PENDING] == {Q.APPROVED, Q.DENIED}
    assert quota_requests.TERMINAL == {Q.APPROVED, Q.DENIED}
    for decided in quota_requests.TERMINAL:
        assert quota_requests.TRANSITIONS[decided] == frozenset()
    with pytest.raises(InvalidTransitionError):
        quota_requests.check_transition(Q.DENIED, Q.APPROVED)


# -- the transition functions -------------------------------------------------------------------------


def test_move_compute_changes_the_state_and_writes_its_history(store: Store):
    add_compute(store, "cpu", kind="amlcompute")
    at = T0 + timedelta(minutes=5)
    with store.session() as session:
        row = session.get(ComputeRow, "cpu")
        assert move_compute(session, row, P.DELETING, "deleted", at) is True
        assert row.provisioning_state == "Deleting" and row.updated_at == at
    assert history(store, "compute") == [("cpu", "Succeeded", "Deleting", "deleted", at)]


def test_move_compute_refuses_an_illegal_move_and_changes_nothing(store: Store):
    add_compute(store, "cpu", kind="amlcompute")
    with store.session() as session:
        move_compute(session, session.get(ComputeRow, "cpu"), P.DELETING, "deleted", T0)
    with pytest.raises(InvalidTransitionError):
        with store.session() as session:
            move_compute(session, session.get(ComputeRow, "cpu"), P.SUCCEEDED, "undo", T0)
    with store.session() as session:
        assert session.get(ComputeRow, "cpu").provisioning_state == "Deleting"
    assert [h[2] for h in history(store, "compute")] == ["Deleting"]


def test_moving_to_the_state_it_has_is_no_move(store: Store):
    add_compute(store, "cpu", kind="amlcompute")
    add_compute(store, "ci")
    with store.session() as session:
        assert move_compute(session, session.get(ComputeRow, "cpu"), P.SUCCEEDED, "again", T0) is False
        assert move_power(session, session.get(ComputeRow, "ci"), Power.ON, "again", T0) is False
    assert history(store, "compute") == [] and history(store, "instance_power") == []
    with store.session() as session:
        assert session.get(ComputeRow, "ci").observed.instance.events == []


def test_move_power_off_records_the_reason_an_event_and_its_history(store: Store):
    pending = "stopped by schedule 0, after job j ended"
    add_compute(store, "ci", instance=InstanceState(powered_on_at=T0, pending_stop=pending))
    at = T0 + timedelta(hours=1)
    with store.session() as session:
        assert move_power(session, session.get(ComputeRow, "ci"), Power.OFF, "stop requested by alice", at)
    with store.session() as session:
        instance = session.get(ComputeRow, "ci").observed.instance
    assert (instance.power, instance.power_reason, instance.pending_stop) == ("off", "stop requested by alice", None)
    assert [(e.at, e.kind, e.message) for e in instance.events] == [(at, "Stopped", "stop requested by alice")]
    assert history(store, "instance_power") == [("ci", "on", "off", "stop requested by alice", at)]


def test_move_power_on_starts_the_idle_time_afresh(store: Store):
    add_compute(store, "ci", instance=InstanceState(power="off", powered_on_at=T0, snoozed_until=T0,
                                                    warned_for=T0))
    at = T0 + timedelta(hours=2)
    with store.session() as session:
        move_power(session, session.get(ComputeRow, "ci"), Power.ON, "started by schedule 0", at)
    with store.session() as session:
        instance = session.get(ComputeRow, "ci").observed.instance
    assert (instance.power, instance.powered_on_at, instance.snoozed_until, instance.warned_for) == ("on", at, None,
                                                                                                      None)
    assert [e.kind for e in instance.events] == ["Started"]


def test_move_power_refuses_restarting_a_stopped_instance(store: Store):
    add_compute(store, "ci", instance=InstanceState(power="off"))
    with pytest.raises(InvalidTransitionError) as info:
        with store.session() as session:
            move_power(session, session.get(ComputeRow, "ci"), Power.RESTART, "restart requested", T0)
    assert "instance power cannot go from off to restart" in info.value.message
    with store.session() as session:
        assert session.get(ComputeRow, "ci").observed.instance.power == "off"
    assert history(store, "instance_power") == []


def test_move_quota_request_decides_it_once(store: Store):
    with store.session() as session:
        row = QuotaRequestRow(scope="total", requested_vcpus=8, status=Q.PENDING.value, created_at=T0)
        session.add(row)
        session.flush()
        request_id = row.id
    at = T0 + timedelta(days=1)
    with store.session() as session:
        row = session.get(QuotaRequestRow, request_id)
        assert move_quota_request(session, row, Q.APPROVED, "approved by admin", at)
        assert (row.status, row.decided_at) == ("Approved", at)
    with pytest.raises(InvalidTransitionError):
        with store.session() as session:
            move_quota_request(session, session.get(QuotaRequestRow, request_id), Q.DENIED, "denied", at)
    with store.session() as session:
        assert session.get(QuotaRequestRow, request_id).status == "Approved"
    assert history(store, "quota_request") == [(str(request_id), "Pending", "Approved", "approved by admin", at)]


def test_an_instance_pass_records_its_power_moves_in_the_rows_session(store: Store):
    # A stop requested by a schedule, the instance idle: the pass stops it, with its history row.
    add_compute(store, "ci", instance=InstanceState(powered_on_at=T0, schedule_checked_at=T0))
    with store.session() as session:
        row = session.get(ComputeRow, "ci")
        row.spec = {**row.spec, "schedules": {"compute_start_stop": [
            {"action": "stop", "trigger": {"type": "cron", "expression": "0 18 * * *", "time_zone": "UTC"}}]}}
    at = T0.replace(hour=18, minute=1)
    with store.session() as session:
        instance_pass(session.get(ComputeRow, "ci"), None, None, at)
    [(key, before, after, reason, when)] = history(store, "instance_power")
    assert (key, before, after, when) == ("ci", "on", "off", at)
    assert reason.startswith("stopped by schedule 0")
