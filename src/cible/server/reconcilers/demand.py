"""What the gateway sees of a deployment, as its autoscaler reads it (core.planning.replicas.Load).

- in_flight: the mean of requests at its replicas over the last DEMAND_WINDOW_S, plus those waiting
  in the gateway's queue now: a deployment whose every slot is busy must look short of replicas (the
  slots cap what is in flight at max_concurrent x replicas, so the in-flight mean alone never asks
  for more than there are);
- waiting: a request waits for a replica and there is none ready (scale from zero). The gateway asks
  once (`on_demand`); the request stays wanted while it is held, or the idle window would scale the
  replica that starts for it away under it;
- last_request_at: now, while requests are in flight.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cible.core.clock import Clock

DEMAND_WINDOW_S = 5.0


class GatewayDemand:
    def __init__(self, clock: Clock, wake: Callable[[], None]) -> None:
        self.clock = clock
        self.wake = wake  # the endpoint reconciler's
        self.gateway: Any = None  # set once made (the gateway calls on_demand)
        self._asked: dict[tuple[str, str], float] = {}  # deployment -> when a request last asked for a replica

    def on_demand(self, endpoint: str, deployment: str) -> None:
        self._asked[(endpoint, deployment)] = self.clock.monotonic()
        self.wake()

    def __call__(self, endpoint: str, deployment: str) -> dict[str, Any]:
        mean = self.gateway.in_flight(endpoint, deployment, window_s=DEMAND_WINDOW_S)
        queued = int(self.gateway.stats(endpoint).get(deployment, {}).get("queued") or 0)
        asked = self._asked.get((endpoint, deployment))
        if asked is not None and self.clock.monotonic() - asked >= DEMAND_WINDOW_S:
            self._asked.pop((endpoint, deployment), None)
            asked = None
        in_flight = mean + queued
        return {"in_flight": in_flight, "waiting": asked is not None or (queued > 0 and mean <= 0),
                "last_request_at": self.clock.now() if in_flight > 0 else None}
