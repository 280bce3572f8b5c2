"""Online endpoints: create, update (traffic, mirror), show, list, delete, and their credentials.

An endpoint is a name, an auth mode and a traffic split over its deployments; it provisions
nothing itself (its deployments' replicas are the endpoint reconciler's), so a create succeeds
at once. A `local` endpoint (`--local`) is apart from a workspace one of the same name, as on
Azure, is served without credentials, and has one deployment.

Keys are never stored: `keys` holds a salt per key, and the key is the HMAC of the workspace
token over the endpoint, the key's name and its salt (server/tokens.py). Regenerating a key
draws a new salt; an `aml_token` carries its expiry under the same HMAC.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from cible.core import naming
from cible.core.clock import Clock
from cible.core.errors import ConflictError, InvalidRequestError, NotFoundError
from cible.core.lifecycle.endpoints import ProvisioningState
from cible.core.models.endpoint_records import EndpointKeys
from cible.core.planning.traffic import validate_mirror, validate_traffic
from cible.core.specs.azureml.loader import load_spec_dict
from cible.server.services.lifecycle import move_endpoint
from cible.server.store.db import Store
from cible.server.store.rows import OnlineDeploymentRow, OnlineEndpointRow
from cible.server.tokens import Tokens

TOKEN_LIFETIME = timedelta(hours=24)  # an aml_token's life; a client asks again after half of it
KEY_TYPES = ("primary", "secondary")
SPEC_ONLY = ("traffic", "mirror_traffic")  # kept in their own columns: the reconciler and `update` change them


def scoring_path(endpoint: str) -> str:
    """Where the gateway serves an endpoint (its scoring_uri is the gateway's URL + this)."""
    return f"/endpoints/{endpoint}/score"


def new_keys() -> EndpointKeys:
    return EndpointKeys(primary=secrets.token_hex(8), secondary=secrets.token_hex(8), token=secrets.token_hex(8))


class EndpointService:
    def __init__(self, store: Store, clock: Clock, tokens: Tokens, *, gateway_url: Callable[[], str | None],
                 stats: Callable[[str], dict[str, Any]], on_change: Callable[[], None]) -> None:
        self.store = store
        self.clock = clock
        self.tokens = tokens
        self.gateway_url = gateway_url  # None until the gateway listens
        self.stats = stats  # the gateway's per-deployment figures of an endpoint
        self.on_change = on_change

    # -- writes --------------------------------------------------------------
    def create(self, name: str, body: dict[str, Any], *, local: bool = False, update: bool = False,
               user: str | None = None) -> dict[str, Any]:
        naming.ENDPOINT.check(name)
        if not isinstance(body, dict) or not isinstance(body.get("spec"), dict):
            raise InvalidRequestError("the request body is {\"spec\": {...the endpoint...}}", details={"field": "spec"})
        spec = self._load(name, body["spec"])
        # Only what the request says: a spec without `traffic` keeps the endpoint's split (the model's default is {}).
        given = {k: body["spec"][k] or {} for k in SPEC_ONLY if k in body["spec"]}

        def write(session: Session) -> None:
            row = session.get(OnlineEndpointRow, (name, local))
            now = self.clock.now()
            if row is not None:
                if not update:
                    raise ConflictError(f"online endpoint '{name}' already exists; update it with "
                                        f"`cible online-endpoint update -n {name} -f ...`", details={"field": "name"})
                self._set_spec(session, row, spec, given.get("traffic", row.traffic),
                               given.get("mirror_traffic", row.mirror_traffic), now)
                return
            traffic, mirror = given.get("traffic", {}), given.get("mirror_traffic", {})
            if any(traffic.values()) or any(mirror.values()):  # as on Azure: no deployment exists yet
                raise InvalidRequestError(
                    "traffic: an endpoint's traffic cannot be set when it is created (it has no deployments yet); "
                    "create it, create its deployments, then `cible online-endpoint update --traffic \"blue=100\"` "
                    "(or create a deployment with --all-traffic)", details={"field": "traffic"})
            session.add(OnlineEndpointRow(
                name=name, local=local, spec=_without(spec, SPEC_ONLY), traffic={}, mirror_traffic={},
                provisioning_state=ProvisioningState.SUCCEEDED.value, keys=new_keys(),
                created_at=now, updated_at=now, created_by=user))

        self.store.transact(write)
        self.on_change()
        return self.get(name, local=local)

    def update(self, name: str, body: dict[str, Any], *, local: bool = False) -> dict[str, Any]:
        """`online-endpoint update`: a new spec (`-f`), and/or `traffic` / `mirror_traffic` maps."""
        raw = body.get("spec") if isinstance(body.get("spec"), dict) else None
        spec = self._load(name, raw) if raw is not None else None

        def pick(row: OnlineEndpointRow, key: str) -> dict[str, Any]:  # the request's, else the spec's, else kept
            if body.get(key) is not None:
                return body[key]
            if raw is not None and key in raw:
                return raw[key] or {}
            return dict(getattr(row, key))

        def write(session: Session) -> None:
            row = self._row(session, name, local)
            self._set_spec(session, row, spec if spec is not None else row.spec, pick(row, "traffic"),
                           pick(row, "mirror_traffic"), self.clock.now())

        self.store.transact(write)
        self.on_change()
        return self.get(name, local=local)

    def _set_spec(self, session: Session, row: OnlineEndpointRow, spec: dict[str, Any], traffic: dict[str, Any],
                  mirror: dict[str, Any], now: datetime) -> None:
        if row.provisioning_state == ProvisioningState.DELETING.value:
            raise ConflictError(f"online endpoint '{row.name}' is being deleted", details={"field": "name"})
        deployments = set(session.scalars(select(OnlineDeploymentRow.name).where(
            OnlineDeploymentRow.endpoint == row.name, OnlineDeploymentRow.local.is_(row.local),
            OnlineDeploymentRow.provisioning_state != ProvisioningState.DELETING.value)))
        traffic = {k: v for k, v in _percentages(traffic, "traffic").items() if v or k in deployments}
        validate_traffic(traffic, deployments)
        mirror = {k: v for k, v in _percentages(mirror, "mirror_traffic").items() if v}
        validate_mirror(mirror, traffic, deployments)
        if row.local and sum(1 for v in traffic.values() if v) > 1:
            raise InvalidRequestError("traffic: a local endpoint has one deployment and no traffic split",
                                      details={"field": "traffic"})
        row.spec, row.traffic, row.mirror_traffic, row.updated_at = _without(spec, SPEC_ONLY), traffic, mirror, now

    def delete(self, name: str, *, local: bool = False) -> dict[str, Any]:
        """Mark the endpoint Deleting: the reconciler stops its replicas, then removes it and its deployments."""
        def mark(session: Session) -> None:
            row = self._row(session, name, local)
            now = self.clock.now()
            move_endpoint(session, row, ProvisioningState.DELETING, "deleted by the user", now)
            for dep in session.scalars(select(OnlineDeploymentRow).where(
                    OnlineDeploymentRow.endpoint == name, OnlineDeploymentRow.local.is_(local))):
                move_endpoint(session, dep, ProvisioningState.DELETING, "its endpoint is being deleted", now)

        self.store.transact(mark)
        self.on_change()
        return self.get(name, local=local)

    def regenerate_key(self, name: str, key_type: str, *, local: bool = False) -> None:
        if key_type not in KEY_TYPES:
            raise InvalidRequestError(f"key_type: '{key_type}' is not a key; use primary or secondary",
                                      details={"field": "key_type"})

        def regenerate(session: Session) -> None:
            row = self._row(session, name, local)
            if _auth_mode(row) != "key":
                raise InvalidRequestError(f"online endpoint '{name}' uses auth_mode {_auth_mode(row)}, which has no "
                                          "keys; get a token with `cible online-endpoint get-credentials`",
                                          details={"field": "auth_mode"})
            row.keys = row.keys.model_copy(update={key_type: secrets.token_hex(8)})
            row.updated_at = self.clock.now()

        self.store.transact(regenerate)
        self.on_change()

    # -- reads ---------------------------------------------------------------
    def credentials(self, name: str, *, local: bool = False) -> dict[str, Any]:
        with self.store.session() as session:
            row = self._row(session, name, local)
            mode, keys = _auth_mode(row), row.keys
        if local:
            raise InvalidRequestError(f"local endpoint '{name}' takes no credentials: invoke it as is",
                                      details={"field": "local"})
        if mode == "key":
            return {"primaryKey": self.tokens.endpoint_key(name, "primary", keys.primary),
                    "secondaryKey": self.tokens.endpoint_key(name, "secondary", keys.secondary)}
        now = self.clock.now()
        expires = now + TOKEN_LIFETIME
        token = self.tokens.endpoint_token(name, keys.token, int(expires.timestamp()))
        return {"accessToken": token, "tokenType": "Bearer", "expiryTimeUtc": _utc(expires),
                "refreshAfterTimeUtc": _utc(now + TOKEN_LIFETIME / 2)}

    def get(self, name: str, *, local: bool = False) -> dict[str, Any]:
        with self.store.session() as session:
            return self._resource(session, self._row(session, name, local))

    def list(self, *, local: bool = False) -> dict[str, Any]:
        with self.store.session() as session:
            rows = session.scalars(select(OnlineEndpointRow).where(OnlineEndpointRow.local.is_(local))
                                   .order_by(OnlineEndpointRow.name)).all()
            items = [self._resource(session, row) for row in rows]
        return {"value": items, "count": len(items)}

    def _resource(self, session: Session, row: OnlineEndpointRow) -> dict[str, Any]:
        rows = session.scalars(select(OnlineDeploymentRow).where(
            OnlineDeploymentRow.endpoint == row.name, OnlineDeploymentRow.local.is_(row.local))
            .order_by(OnlineDeploymentRow.name)).all()
        deployments = [d.name for d in rows]
        if row.local:  # no gateway: its replica's own URL, as Azure's local endpoints give their container's
            base = next((r.url for d in rows for r in d.observed.replicas if r.state == "Ready" and r.url), None)
            scoring = f"{base}/score" if base else None
            openapi = f"{base}/swagger.json" if base else None
        else:
            gateway = self.gateway_url()
            scoring = f"{gateway}{scoring_path(row.name)}" if gateway else None
            openapi = f"{gateway}/endpoints/{row.name}/swagger.json" if gateway else None
        resource = {
            **row.spec, "name": row.name, "auth_mode": "none" if row.local else _auth_mode(row),
            "traffic": dict(row.traffic), "mirror_traffic": dict(row.mirror_traffic),
            "provisioning_state": row.provisioning_state, "scoring_uri": scoring, "openapi_uri": openapi,
            "local": row.local, "deployments": list(deployments), "created_at": row.created_at,
            "created_by": row.created_by,
        }
        if not row.local:
            resource["metrics"] = self.stats(row.name)
        return resource

    def _row(self, session: Session, name: str, local: bool) -> OnlineEndpointRow:
        row = session.get(OnlineEndpointRow, (name, local))
        if row is None:
            names = session.scalars(select(OnlineEndpointRow.name).where(OnlineEndpointRow.local.is_(local))).all()
            where = "local endpoint" if local else "online endpoint"
            raise NotFoundError(f"{where} '{name}' does not exist (there are: {', '.join(names) or 'none'})",
                                details={"name": name})
        return row

    def _load(self, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(spec, dict):
            raise InvalidRequestError("spec: an endpoint spec is a mapping", details={"field": "spec"})
        spec = {**spec, "name": spec.get("name") or name}
        if spec["name"] != name:
            raise InvalidRequestError(f"name: the spec names endpoint '{spec['name']}', the request '{name}'; "
                                      "they must be the same", details={"field": "name"})
        loaded = load_spec_dict(spec, "online-endpoint")
        return loaded.entity.model_dump(mode="json", exclude_none=True, by_alias=False, exclude={"schema_"})


def _percentages(value: Any, field: str) -> dict[str, int]:
    """A traffic map as a request may send it, checked: deployment name -> whole percent."""
    if not isinstance(value, dict):
        raise InvalidRequestError(f"{field}: a map of deployment name to percent, e.g. {{\"blue\": 100}}",
                                  details={"field": field})
    out = {}
    for name, percent in value.items():
        if isinstance(percent, bool) or not isinstance(percent, (int, float, str)) or \
                not (str(percent).strip().isascii() and str(percent).strip().isdigit()) or int(percent) > 100:
            raise InvalidRequestError(f"{field}.{name}: {percent!r} is not a percent (a whole number 0 to 100)",
                                      details={"field": f"{field}.{name}"})
        out[str(name)] = int(percent)
    return out


def _auth_mode(row: OnlineEndpointRow) -> str:
    return str(row.spec.get("auth_mode") or "key").lower()


def _without(spec: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: v for k, v in spec.items() if k not in keys}


def _utc(at: datetime) -> str:
    return at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
