"""The cluster reconciler's calls to node providers, each kept to what it concerns.

A provider that raises must not stop every cluster's pass: a listing that raises is "cannot tell
yet" (its clusters wait, the others go on); a launch that raises is retried node by node, and a
node whose own launch raises is reported as that node's start failure (the next pass removes it
through the node table, saying why, and backs off as for any node that did not start); nodes whose
terminate raised are asked about again on later passes (terminate is idempotent by node id).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from cible.backends.base.contract import POLL_ERRORS, PREEMPT, NodeProvider, NodeRequest, ProviderNode, supports
from cible.server.reconcilers.failures import Troubles, describe


class ProviderCalls:
    def __init__(self, providers: dict[str, NodeProvider], troubles: Troubles, log: logging.Logger) -> None:
        self.providers = providers
        self.troubles = troubles
        self.log = log
        self._launch_errors: dict[str, dict[str, str]] = {}  # provider → node id → why its launch raised
        self._unterminated: dict[str, set[str]] = {}  # provider → nodes to ask again

    def listings(self, now: datetime) -> dict[str, dict[str, ProviderNode] | None]:
        """Each provider's nodes; None for one that cannot tell yet (or whose listing raised)."""
        return {name: self._ask(name, "list_nodes", p.list_nodes, None, now) for name, p in self.providers.items()}

    def errors(self, now: datetime) -> dict[str, dict[str, str]]:
        """Launch failures since the last pass, by provider and node id: our launches' and, from a
        provider that reports them (POLL_ERRORS), its own."""
        return {name: {**self._launch_errors.pop(name, {}),
                       **(self._ask(name, "poll_errors", p.poll_errors, {}, now) if supports(p, POLL_ERRORS) else {})}
                for name, p in self.providers.items()}

    def engine_waits(self, now: datetime) -> dict[str, dict[str, str]]:
        """By provider, why each compute's next node waits for room on its engine (Ray), from its
        status: an observation of the pass, said in the queued jobs' reasons."""
        statuses = {name: self._ask(name, "status", p.status, None, now) for name, p in self.providers.items()}
        return {name: dict(status.waiting or {}) for name, status in statuses.items() if status is not None}

    def launch(self, provider: str, requests: list[NodeRequest]) -> None:
        try:
            self.providers[provider].launch(requests)
        except Exception as error:  # noqa: BLE001
            if len(requests) > 1:  # one bad request must not hold back the others: each alone
                for request in requests:
                    self.launch(provider, [request])
                return
            node_id = requests[0].node_id
            self.log.error("node %s: its launch failed", node_id, exc_info=error)
            self._launch_errors.setdefault(provider, {})[node_id] = f"its launch failed: {describe(error)}"

    def terminate(self, provider: str, node_ids: list[str], now: datetime) -> None:
        """Ask the provider to stop these nodes and any it could not be asked about before."""
        pending = self._unterminated.setdefault(provider, set())
        pending.update(node_ids)
        key = ("provider", provider, "terminate")
        if not pending or (not node_ids and self.troubles.backing_off(key, now)):
            return
        try:
            self.providers[provider].terminate(sorted(pending))
        except Exception as error:  # noqa: BLE001
            self.troubles.failed(key, error, now, what=f"provider {provider!r} terminate")
            return
        self.troubles.succeeded(key)
        pending.clear()

    def can_preempt(self, provider: str) -> bool:
        """Whether the provider can evict a node (PREEMPT): the preemption drill needs it."""
        return provider in self.providers and supports(self.providers[provider], PREEMPT)

    def retry_terminations(self, now: datetime) -> None:
        for provider in [name for name, pending in self._unterminated.items() if pending]:
            self.terminate(provider, [], now)

    def _ask(self, provider: str, what: str, call: Callable[[], Any], fallback: Any, now: datetime) -> Any:
        key = ("provider", provider, what)
        if self.troubles.backing_off(key, now):
            return fallback
        try:
            answer = call()
        except Exception as error:  # noqa: BLE001
            self.troubles.failed(key, error, now, what=f"provider {provider!r} {what}")
            return fallback
        self.troubles.succeeded(key)
        return answer
