"""A compute instance's power, as its user, its schedules and its idle shutdown ask for it.

The power is what is wanted, not what is: the cluster reconciler keeps the instance's one node
while it is `on`, and lets it go while it is `off` or `restart` (a restart is on again once
the old node is gone). `cible compute show` turns power and node into Azure's instance state
(Running, Stopping, Stopped, Restarting…: cible.core.planning.instances.display_state).

Nothing assigns an instance's power directly: `move_power` (cible.server.services.lifecycle)
checks the move here and writes a history row.
"""

from __future__ import annotations

from enum import Enum

from cible.core.lifecycle.table import check_move


class Power(str, Enum):
    ON = "on"
    OFF = "off"
    RESTART = "restart"


TRANSITIONS: dict[Power, frozenset[Power]] = {
    # Stopped by its user, a schedule, its idle shutdown or its own agent; or restarted by its user.
    Power.ON: frozenset({Power.OFF, Power.RESTART}),
    # Started by its user or a schedule. A restart is only for a running instance.
    Power.OFF: frozenset({Power.ON}),
    # On again once the old node is gone; or stopped (or started by a schedule) in between.
    Power.RESTART: frozenset({Power.ON, Power.OFF}),
}

# What a user's verb asks for (`cible compute start|stop|restart`).
VERBS = {"start": Power.ON, "stop": Power.OFF, "restart": Power.RESTART}
# The event each move leaves among the instance's events (`compute show`).
EVENT_KIND = {Power.ON: "Started", Power.OFF: "Stopped", Power.RESTART: "Restarting"}


def can_transition(current: Power | str, target: Power | str) -> bool:
    return Power(target) in TRANSITIONS[Power(current)]


def check_transition(current: Power | str, target: Power | str) -> None:
    check_move(TRANSITIONS, Power(current), Power(target), "instance power")
