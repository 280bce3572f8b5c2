"""From the store to the gateway: the route table and the credentials it checks.

After every endpoint pass the whole table is rebuilt from the rows (a workspace has few
endpoints) and published; the gateway swaps it in at once. The credentials are the keys and
token salts of the published endpoints, kept here in memory: the gateway checks a request
without touching the database.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from cible.core.errors import UnreadableRecordError
from cible.core.lifecycle.endpoints import ProvisioningState
from cible.server.gateway.routes import DeploymentRoute, EndpointRoute, Replica, RouteTable
from cible.server.store.rows import OnlineDeploymentRow, OnlineEndpointRow
from cible.server.tokens import Tokens

READY = "Ready"
log = logging.getLogger("cible.endpoints")


class RoutePublisher:
    def __init__(self, tokens: Tokens, publish: Callable[[RouteTable], None]) -> None:
        self.tokens = tokens
        self._publish = publish
        # endpoint -> (auth mode, its two keys, its token salt)
        self._credentials: dict[str, tuple[str, tuple[str, str], str]] = {}

    def __call__(self, session: Session) -> None:
        endpoints: dict[str, EndpointRoute] = {}
        credentials: dict[str, tuple[str, tuple[str, str], str]] = {}
        deployments: dict[tuple[str, bool], list[OnlineDeploymentRow]] = {}
        for dep in _readable(session, OnlineDeploymentRow):
            deployments.setdefault((dep.endpoint, dep.local), []).append(dep)
        for ep in _readable(session, OnlineEndpointRow):
            if ep.provisioning_state == ProvisioningState.DELETING.value:
                continue
            deps = deployments.get((ep.name, ep.local), [])
            if ep.local:  # served by its replica directly, without the gateway
                continue
            mode = str(ep.spec.get("auth_mode") or "key").lower()
            keys = (self.tokens.endpoint_key(ep.name, "primary", ep.keys.primary),
                    self.tokens.endpoint_key(ep.name, "secondary", ep.keys.secondary))
            credentials[ep.name] = (mode, keys, ep.keys.token)
            endpoints[ep.name] = EndpointRoute(
                name=ep.name, auth_mode=mode, traffic=dict(ep.traffic), mirror_traffic=dict(ep.mirror_traffic),
                deployments={d.name: _deployment_route(d) for d in deps
                             if d.provisioning_state != ProvisioningState.DELETING.value})
        self._credentials = credentials
        self._publish(RouteTable(endpoints=endpoints))

    def check_credential(self, endpoint: str, auth_mode: str, bearer: str) -> bool:
        """Whether `bearer` opens `endpoint`: one of its keys, or an unexpired token of it."""
        known = self._credentials.get(endpoint)
        if known is None or not bearer or not bearer.isascii():  # keys and tokens are ASCII: anything else is not one
            return False
        mode, keys, salt = known
        if mode == "key":
            return any(hmac.compare_digest(bearer, key) for key in keys)
        expires = self.tokens.token_expiry(endpoint, salt, bearer)
        return expires is not None and expires > time.time()


def _readable(session: Session, row_class: type) -> list[Any]:
    """Every row of `row_class`; one whose record cannot be read is left out (and logged), so it cannot
    keep the others' routes from being published. The common case is one query."""
    try:
        return list(session.scalars(select(row_class)))
    except UnreadableRecordError:
        pass  # read again row by row (the read failed in Python, the transaction is fine)
    rows = []
    for key in session.execute(select(*row_class.__table__.primary_key.columns)).all():
        try:
            rows.append(session.get(row_class, tuple(key)))
        except UnreadableRecordError as exc:
            log.error("%s %s left out of the gateway's routes: %s", row_class.__tablename__, tuple(key), exc)
    return rows


def _deployment_route(dep: OnlineDeploymentRow) -> DeploymentRoute:
    spec: dict[str, Any] = dep.spec
    settings = spec.get("request_settings") or {}
    scale = spec.get("scale_settings") or {}
    replicas = tuple(Replica(name=r.job, url=r.url) for r in dep.observed.replicas if r.state == READY and r.url)
    return DeploymentRoute(
        name=dep.name, replicas=replicas,
        max_concurrent_requests_per_instance=int(settings.get("max_concurrent_requests_per_instance") or 1),
        max_queue_wait_ms=int(settings.get("max_queue_wait_ms") or 500),
        request_timeout_ms=int(settings.get("request_timeout_ms") or 5000),
        scale_from_zero=str(scale.get("type", "default")).lower() == "target_utilization"
        and int(scale.get("min_instances", 1)) == 0)
