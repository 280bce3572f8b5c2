"""Bearer-token check for every /api and /mlflow request (pure ASGI: a compare and a prefix test).

Five kinds of token (see tokens.py): the workspace token may do everything (it is the first Owner's);
a user's personal token what their role allows (cible.core.roles: the permission each route needs,
checked here for every request, refused with 403 naming it); a node's token only
its own node's agent routes; a Slurm job's pilot token only its pilot nodes' agent routes for that job; a job's run token only MLflow, where the proxy keeps it to its own
run (tracking_policy), and its own job's batch routes (`/api/v1/jobs/<name>/batch…`: a batch job's
runners report there). The scope is left in ``scope["state"]["token_scope"]`` for the routes; identity.py
says from it who acts (a user and their role).
"""

from __future__ import annotations

from collections.abc import Callable

from cible.core.models.records import PILOT_NODE_PREFIX
from cible.core.roles import NODES_ONLY, allows, permission_for, roles_with, route_said
from cible.server.errors import envelope_body
from cible.server.tokens import Scope, Tokens

AGENT_NODES = "/api/v1/agent/nodes/"
JOBS = "/api/v1/jobs/"
PROTECTED = ("/api/", "/mlflow")
MLFLOW_RUN_PAGE = "/static/mlflow-run.html"  # reads the run id from the link's fragment (studio/pages/runs.py)


class TokenAuthMiddleware:
    def __init__(self, app, tokens: Tokens, user_of: Callable[[str], Scope | None] = lambda _: None) -> None:  # noqa: ANN001
        self.app = app
        self.tokens = tokens
        self.user_of = user_of  # a personal token's scope (UserService), None for any other

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001
        if scope["type"] == "http" and scope["path"].startswith(PROTECTED):
            given = dict(scope["headers"]).get(b"authorization", b"")
            bearer = given[7:] if given[:7].lower() == b"bearer " else None
            granted = self.tokens.scope_of(bearer) if bearer is not None else None
            if granted is None and bearer is not None and bearer.isascii():
                granted = self.user_of(bearer.decode())
            if granted is None and not given and _browser_wants_mlflow_ui(scope):
                await _redirect(send, MLFLOW_RUN_PAGE)  # a run link MLflow printed: to its job's page
                return
            if granted is None:
                await _deny(send, 401, "Unauthorized", "missing, wrong, expired or revoked token: send "
                            "'Authorization: Bearer <token>' (the local workspace keeps its own in "
                            "$CIBLE_HOME/token; `cible token list` says whether a personal token expired or "
                            "was revoked)")
                return
            refusal = _refusal(granted, scope["path"], scope["method"])
            if refusal is not None:
                await _deny(send, 403, "Forbidden", refusal)
                return
            scope.setdefault("state", {})["token_scope"] = granted
        await self.app(scope, receive, send)


def _refusal(granted: Scope, path: str, method: str = "GET") -> str | None:
    """Why this token may not reach `path`, or None when it may (ASGI's path, percent-decoded)."""
    if granted.is_workspace:
        return None
    if granted.kind == "user":
        return _user_refusal(granted.name, granted.role, method, path)
    if granted.kind == "node":
        rest = path[len(AGENT_NODES):] if path.startswith(AGENT_NODES) else ""
        if rest.split("/", 1)[0] == granted.name and "/" in rest:
            return None
        return f"this is the token of node '{granted.name}': it may only use that node's agent routes"
    if granted.kind == "pilot":
        return None if _pilot_route(granted.name, path) else (
            f"this is the token of the Slurm pilots of job '{granted.name}': it may only use their agent routes")
    if path == "/mlflow" or path.startswith("/mlflow/"):
        return None  # the tracking proxy keeps a job's token to its own run
    if _own_batch_route(granted.name, path):
        return None  # its batch runners' calls (routers/batch_runs.py checks the token's submission)
    return (f"this is the run token of job '{granted.name}': it may only log to that job's MLflow run; "
            "use the workspace token ($CIBLE_HOME/token) for the workspace's API")


def _user_refusal(user: str, role: str, method: str, path: str) -> str | None:
    permission = permission_for(method, path)
    if permission == NODES_ONLY:
        return f"{method} {path} is a route of cible's nodes and jobs; user '{user}' cannot use it"
    if allows(role, permission):
        return None
    holders = roles_with(permission)
    fix = (f"a role that has it ({', '.join(holders)}) is given by an Owner: `cible user update --name {user} "
           f"--role ROLE`") if holders else "no role has it"
    return f"user '{user}' ({role}) lacks the permission {permission} that {route_said(method, path)} needs; {fix}"


def _pilot_route(job: str, path: str) -> bool:
    """A pilot node's heartbeat (the route checks the node is the job's), or its job's run routes."""
    rest = path[len(AGENT_NODES):] if path.startswith(AGENT_NODES) else ""
    node, _, route = rest.partition("/")
    if not node.startswith(PILOT_NODE_PREFIX):
        return False
    return route == "heartbeat" or route.startswith(f"runs/{job}/")


def _own_batch_route(job: str, path: str) -> bool:
    """`/api/v1/jobs/<job>/batch`, or it followed by `:verb` or `/…`: the job's own batch routes."""
    own = f"{JOBS}{job}/batch"
    return path.startswith(own) and (len(path) == len(own) or path[len(own)] in ":/")


def _browser_wants_mlflow_ui(scope) -> bool:  # noqa: ANN001
    """A browser opening MLflow's UI (`/mlflow/#/experiments/…/runs/…`): it holds no bearer token."""
    accept = dict(scope["headers"]).get(b"accept", b"")
    return scope["method"] == "GET" and scope["path"] in ("/mlflow", "/mlflow/") and b"text/html" in accept


async def _redirect(send, location: str) -> None:  # noqa: ANN001
    await send({"type": "http.response.start", "status": 303,
                "headers": [(b"location", location.encode()), (b"content-length", b"0")]})
    await send({"type": "http.response.body", "body": b""})


async def _deny(send, status: int, code: str, message: str) -> None:  # noqa: ANN001
    body = envelope_body(code, message)
    headers = [(b"content-type", b"application/json")]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
