"""Compute instances: start, stop, restart, snooze, a terminal on the node, and what
`cible compute show` says of one (state, idleness, events, disk, owner).

The user's commands only change the instance's power (see services/instance_state.py); the
cluster reconciler brings its node up or down on its next pass, woken at once.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from cible.core.clock import Clock
from cible.core.errors import ConflictError, ForbiddenError, InvalidRequestError, NotFoundError
from cible.core.lifecycle.computes import ProvisioningState
from cible.core.lifecycle.instance_power import VERBS, Power
from cible.core.lifecycle.nodes import LIVE, NodeState
from cible.core.models.computes import ComputeInstance
from cible.core.models.records import NodeInfo
from cible.core.planning.instances import display_state, idleness
from cible.core.planning.schedules import next_firing
from cible.server.services.compute_spec import instance_spec
from cible.server.services.instance_state import instance_of, instance_view, snooze
from cible.server.services.lifecycle import move_power
from cible.server.store.db import Store
from cible.server.store.rows import ComputeRow, NodeRow
from cible.workspace import WorkspacePaths

DISK_WARNING_PERCENT = 90.0


class InstanceService:
    def __init__(self, store: Store, clock: Clock, paths: WorkspacePaths, on_change: Callable[[], None]) -> None:
        self.store = store
        self.clock = clock
        self.paths = paths
        self.on_change = on_change  # wakes the cluster reconciler

    # `as_admin` False: `user` may act on their own instance only (require_instance_user).
    def start(self, name: str, user: str | None = None, as_admin: bool = True) -> dict[str, Any]:
        return self._power(name, "start", user, as_admin)

    def stop(self, name: str, user: str | None = None, as_admin: bool = True) -> dict[str, Any]:
        return self._power(name, "stop", user, as_admin)

    def restart(self, name: str, user: str | None = None, as_admin: bool = True) -> dict[str, Any]:
        return self._power(name, "restart", user, as_admin)

    def _power(self, name: str, verb: str, user: str | None, as_admin: bool) -> dict[str, Any]:
        power = VERBS[verb]

        def request(session: Session) -> None:  # run again from a fresh read if the reconciler wrote the row
            row = self._instance(session, name, user, as_admin)
            now_power = Power(instance_of(row).power)
            # The user's words for the moves the table refuses (or that are no move at all).
            if power == Power.ON and now_power == Power.ON:
                raise ConflictError(f"compute instance {name} is already on ({_state(session, row)})")
            if power == Power.OFF and now_power == Power.OFF:
                raise ConflictError(f"compute instance {name} is already stopped or stopping")
            if power == Power.RESTART and now_power != Power.ON:
                raise ConflictError(f"compute instance {name} is not running; start it (`cible compute start {name}`)")
            if power != Power.ON:
                node = _live_node(session, name)
                if node is not None and node.job_name:
                    raise ConflictError(
                        f"job {node.job_name} is running on compute instance {name}; a {verb} would cut it short. "
                        f"Cancel it (`cible job cancel -n {node.job_name}`) or {verb} once it ends")
            move_power(session, row, power, f"{verb} requested by {user or 'a user'}", self.clock.now(), by=user)

        self.store.transact(request)
        self.on_change()
        return {"name": name, "power": power.value, "requested": verb}

    def snooze(self, name: str, minutes: float, user: str | None = None, as_admin: bool = True) -> dict[str, Any]:
        """Postpone the idle shutdown by `minutes` from when it would have happened."""
        if not 0 < minutes <= 24 * 60:  # written so that NaN (every comparison false) is refused too
            raise InvalidRequestError("minutes: snooze for more than 0 minutes and at most 24 hours",
                                      details={"field": "minutes"})
        now = self.clock.now()

        def postpone(session: Session) -> datetime:  # run again from a fresh read if the reconciler wrote the row
            row = self._instance(session, name, user, as_admin)
            if instance_of(row).power != Power.ON.value:
                raise ConflictError(f"compute instance {name} is not running; there is no shutdown to snooze")
            stops_at = idleness(instance_view(row, _live_node(session, name)), now).stops_at  # as show says
            base = max(now, stops_at) if stops_at else now
            until = base + timedelta(minutes=minutes)
            snooze(row, until, f"idle shutdown postponed by {minutes:g} min: not before {until:%H:%M:%S} UTC", now)
            return until

        until = self.store.transact(postpone)
        self.on_change()
        return {"name": name, "snoozed_until": until.isoformat()}

    def terminal(self, name: str, user: str | None = None, as_admin: bool = True) -> dict[str, Any]:
        """Where a shell on the instance's node runs: its node, working root and home folder."""
        def open_shell(session: Session) -> dict[str, Any]:  # again from a fresh read if a heartbeat wrote the node
            row = self._instance(session, name, user, as_admin)
            node = _live_node(session, name)
            if node is None or node.state == NodeState.PREPARING.value:
                raise ConflictError(f"compute instance {name} is {_state(session, row)}; start it first "
                                    f"(`cible compute start {name}`) and wait until it is Running")
            owner = owner_of(instance_spec(row), row.created_by)
            # A shell opens now: that is activity, before the agent's next heartbeat reports the session.
            node.info = node.info.model_copy(update={"last_activity_at": self.clock.now()})
            return {"name": name, "node_id": node.node_id, "provider": node.provider, "owner": owner,
                    "user": user, "root": str(self.paths.nodes / node.node_id),
                    "home": str(self.paths.instance_home(name)),
                    "note": None if not owner or owner == user else
                    f"this instance is assigned to {owner}; you use it as an Owner of the workspace"}

        return self.store.transact(open_shell)

    def _instance(self, session, name: str, user: str | None = None, as_admin: bool = True) -> ComputeRow:  # noqa: ANN001
        if name == "local":
            raise InvalidRequestError("'local' is this machine, not a compute instance; start, stop, restart, "
                                      "snooze and connect-ssh are for compute instances", details={"field": "type"})
        row = session.get(ComputeRow, name, with_for_update=True)
        if row is None:
            raise NotFoundError(f"compute '{name}' does not exist in this workspace", details={"name": name})
        if row.compute_type != "computeinstance":
            raise InvalidRequestError(f"compute '{name}' is of type {row.compute_type}; start, stop, restart, snooze "
                                      "and connect-ssh are for compute instances (type computeinstance)",
                                      details={"field": "type"})
        if row.provisioning_state == ProvisioningState.DELETING.value:
            raise ConflictError(f"compute instance {name} is being deleted")
        if not as_admin:
            require_instance_user(name, owner_of(instance_spec(row), row.created_by), user)
        return row


def describe_instance(session, row: ComputeRow, resource: dict[str, Any], now: datetime) -> None:  # noqa: ANN001
    """Fill `compute show`'s instance fields: state, why it is (not) idle and when it stops, events,
    the disk and its warning, the owner, the next scheduled start or stop."""
    instance = instance_of(row)
    spec = instance_spec(row)
    node = _live_node(session, row.name)
    info = node.info if node is not None else NodeInfo()
    resource["state"] = _state(session, row, node)
    resource["power_reason"] = instance.power_reason
    resource["owner"] = owner_of(spec, row.created_by)
    resource["idleness"] = idleness(instance_view(row, node), now).as_dict()  # as of now, not the last pass
    resource["snoozed_until"] = _iso(instance.snoozed_until)
    resource["events"] = [{"at": e.at.isoformat(), "kind": e.kind, "message": e.message} for e in instance.events]
    power_events = [e for e in instance.events if e.kind in ("Started", "Stopped", "Restarting")]
    if power_events:
        last = power_events[-1]
        resource["last_operation"] = {"operation_name": {"Started": "Start", "Stopped": "Stop"}.get(
            last.kind, "Restart"), "operation_time": last.at.isoformat(), "operation_status": "Succeeded"}
    if node is not None:
        resource["node"] = {"node_id": node.node_id, "state": node.state, "job": node.job_name,
                            "sessions": list(info.sessions), "last_activity_at": _iso(info.last_activity_at)}
    disk = info.disk
    if disk:
        resource["disk"] = disk
        if disk.get("used_percent", 0) > DISK_WARNING_PERCENT:
            resource.setdefault("warnings", []).append(
                f"the OS disk is {disk['used_percent']:.0f}% full ({disk['used_gb']:.2f} of {disk['size_gb']:g} GB): "
                "free 1-2 GB before you stop or restart the instance, or it may not start again")
    schedules = spec.schedules.compute_start_stop if spec.schedules else []
    if schedules:
        firing = next_firing(schedules, now)
        if firing is not None:
            resource["next_scheduled"] = {"action": firing.action, "at": firing.at.isoformat()}


def _state(session, row: ComputeRow, node: NodeRow | None = None) -> str:  # noqa: ANN001
    node = node if node is not None else _live_node(session, row.name)
    instance = instance_of(row)
    return display_state(power=instance.power, deleting=row.provisioning_state == ProvisioningState.DELETING.value,
                         node_state=NodeState(node.state) if node is not None else None,
                         ever_ready=instance.ever_ready, job=node.job_name if node is not None else None,
                         start_failing=bool(row.observed.provisioning_errors))


def _live_node(session, name: str) -> NodeRow | None:  # noqa: ANN001
    return session.scalars(select(NodeRow).where(NodeRow.compute == name,
                                                 NodeRow.state.in_([s.value for s in LIVE]))).first()


def owner_of(spec: ComputeInstance, created_by: str | None) -> str | None:
    """The user a compute instance is assigned to: `create_on_behalf_of`, else its creator."""
    return spec.create_on_behalf_of.user_object_id if spec.create_on_behalf_of else created_by


def require_instance_user(name: str, owner: str | None, user: str | None) -> None:
    """A compute instance is its assigned user's alone (an Owner's too: callers skip this for them).
    One made without a user named (by the workspace token) is the workspace Owners'."""
    if owner is not None and owner == user:
        return
    assigned = f"assigned to user '{owner}'" if owner else "assigned to no user (the workspace Owners')"
    raise ForbiddenError(f"compute instance '{name}' is {assigned}; user '{user}' may not use it: create an instance "
                         "of your own, or ask an Owner to assign it to you (create_on_behalf_of)",
                         details={"compute": name, "assigned_to": owner})


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None
