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

from cible.core.clock import Clock
from cible.core.errors import ConflictError, InvalidRequestError, NotFoundError
from cible.core.lifecycle.nodes import LIVE, NodeState
from cible.core.planning.instances import display_state, idleness
from cible.core.planning.schedules import next_firing
from cible.server.services.instance_state import instance_view, request_power
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

    def start(self, name: str, user: str | None = None) -> dict[str, Any]:
        return self._power(name, "on", "start", user)

    def stop(self, name: str, user: str | None = None) -> dict[str, Any]:
        return self._power(name, "off", "stop", user)

    def restart(self, name: str, user: str | None = None) -> dict[str, Any]:
        return self._power(name, "restart", "restart", user)

    def _power(self, name: str, power: str, verb: str, user: str | None) -> dict[str, Any]:
        with self.store.session() as session:
            row = self._instance(session, name)
            now_power = (row.status or {}).get("power", "on")
            if power == "on" and now_power == "on":
                raise ConflictError(f"compute instance {name} is already on ({_state(session, row)})")
            if power == "off" and now_power == "off":
                raise ConflictError(f"compute instance {name} is already stopped or stopping")
            if power == "restart" and now_power != "on":
                raise ConflictError(f"compute instance {name} is not running; start it (`cible compute start {name}`)")
            if power != "on":
                node = _live_node(session, name)
                if node is not None and node.job_name:
                    raise ConflictError(
                        f"job {node.job_name} is running on compute instance {name}; a {verb} would cut it short. "
                        f"Cancel it (`cible job cancel -n {node.job_name}`) or {verb} once it ends")
            request_power(row, power, f"{verb} requested by {user or 'a user'}", self.clock.now())
        self.on_change()
        return {"name": name, "power": power, "requested": verb}

    def snooze(self, name: str, minutes: float) -> dict[str, Any]:
        """Postpone the idle shutdown by `minutes` from when it would have happened."""
        if minutes <= 0 or minutes > 24 * 60:
            raise InvalidRequestError("minutes: snooze for more than 0 minutes and at most 24 hours",
                                      details={"field": "minutes"})
        now = self.clock.now()
        with self.store.session() as session:
            row = self._instance(session, name)
            status = dict(row.status or {})
            if status.get("power", "on") != "on":
                raise ConflictError(f"compute instance {name} is not running; there is no shutdown to snooze")
            stops_at = idleness(instance_view(row, _live_node(session, name)), now).stops_at  # as show says
            base = max(now, stops_at) if stops_at else now
            until = base + timedelta(minutes=minutes)
            status["snoozed_until"] = until.isoformat()
            status["events"] = [*status.get("events", []), {
                "at": now.isoformat(), "kind": "Snoozed",
                "message": f"idle shutdown postponed by {minutes:g} min: not before {until:%H:%M:%S} UTC"}][-50:]
            row.status = status
        self.on_change()
        return {"name": name, "snoozed_until": until.isoformat()}

    def terminal(self, name: str, user: str | None = None) -> dict[str, Any]:
        """Where a shell on the instance's node runs: its node, working root and home folder."""
        with self.store.session() as session:
            row = self._instance(session, name)
            node = _live_node(session, name)
            if node is None or node.state == NodeState.PREPARING.value:
                raise ConflictError(f"compute instance {name} is {_state(session, row)}; start it first "
                                    f"(`cible compute start {name}`) and wait until it is Running")
            owner = owner_of(row.spec, row.created_by)
            # A shell opens now: that is activity, before the agent's next heartbeat reports the session.
            node.info = {**(node.info or {}), "last_activity_at": self.clock.now().isoformat()}
            return {"name": name, "node_id": node.node_id, "provider": node.provider, "owner": owner,
                    "user": user, "root": str(self.paths.nodes / node.node_id),
                    "home": str(self.paths.instance_home(name)),
                    "note": None if not owner or owner == user else
                    f"this instance is assigned to {owner}; only they may use it once users are enforced"}

    def _instance(self, session, name: str) -> ComputeRow:  # noqa: ANN001
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
        if row.provisioning_state == "Deleting":
            raise ConflictError(f"compute instance {name} is being deleted")
        return row


def describe_instance(session, row: ComputeRow, resource: dict[str, Any], now: datetime) -> None:  # noqa: ANN001
    """Fill `compute show`'s instance fields: state, why it is (not) idle and when it stops, events,
    the disk and its warning, the owner, the next scheduled start or stop."""
    status = row.status or {}
    node = _live_node(session, row.name)
    info = (node.info or {}) if node is not None else {}
    resource["state"] = _state(session, row, node)
    resource["power_reason"] = status.get("power_reason")
    resource["owner"] = owner_of(row.spec, row.created_by)
    resource["idleness"] = idleness(instance_view(row, node), now).as_dict()  # as of now, not the last pass
    resource["snoozed_until"] = status.get("snoozed_until")
    resource["events"] = status.get("events", [])
    power_events = [e for e in resource["events"] if e["kind"] in ("Started", "Stopped", "Restarting")]
    if power_events:
        last = power_events[-1]
        resource["last_operation"] = {"operation_name": {"Started": "Start", "Stopped": "Stop"}.get(
            last["kind"], "Restart"), "operation_time": last["at"], "operation_status": "Succeeded"}
    if node is not None:
        resource["node"] = {"node_id": node.node_id, "state": node.state, "job": node.job_name,
                            "sessions": info.get("sessions", []), "last_activity_at": info.get("last_activity_at")}
    disk = info.get("disk")
    if disk:
        resource["disk"] = disk
        if disk.get("used_percent", 0) > DISK_WARNING_PERCENT:
            resource.setdefault("warnings", []).append(
                f"the OS disk is {disk['used_percent']:.0f}% full ({disk['used_gb']:.2f} of {disk['size_gb']:g} GB): "
                "free 1-2 GB before you stop or restart the instance, or it may not start again")
    schedules = (row.spec.get("schedules") or {}).get("compute_start_stop") or []
    if schedules:
        firing = next_firing(schedules, now)
        if firing is not None:
            resource["next_scheduled"] = {"action": firing.action, "at": firing.at.isoformat()}


def _state(session, row: ComputeRow, node: NodeRow | None = None) -> str:  # noqa: ANN001
    node = node if node is not None else _live_node(session, row.name)
    status = row.status or {}
    return display_state(power=status.get("power", "on"), deleting=row.provisioning_state == "Deleting",
                         node_state=NodeState(node.state) if node is not None else None,
                         ever_ready=bool(status.get("ever_ready")), job=node.job_name if node is not None else None,
                         start_failing=bool(row.spec.get("provisioning_errors")))


def _live_node(session, name: str) -> NodeRow | None:  # noqa: ANN001
    return session.scalars(select(NodeRow).where(NodeRow.compute == name,
                                                 NodeRow.state.in_([s.value for s in LIVE]))).first()


def owner_of(spec: dict[str, Any], created_by: str | None) -> str | None:
    """The user a compute instance is assigned to: `create_on_behalf_of`, else its creator."""
    behalf = spec.get("create_on_behalf_of")
    return behalf["user_object_id"] if behalf else created_by
