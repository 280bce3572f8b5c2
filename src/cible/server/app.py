"""The workspace server: FastAPI app factory and its wiring."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import lru_cache

from fastapi import FastAPI

from cible import __version__
from cible.backends.base.contract import CLOSE, ON_NODE_GONE, PREPARE, SHARES_WORKSPACE, ProviderContext, supports
from cible.backends.registry import build_providers
from cible.core import catalog
from cible.core.clock import SYSTEM_CLOCK, Clock
from cible.core.errors import NotFoundError, TrackingUnavailableError
from cible.core.planning.jobs import LiveJob
from cible.core.roles import ADMIN_ROLES
from cible.launch.tracking import TrackingError, experiment_id, find_run
from cible.node.runner import LocalProcessRunner
from cible.runfiles import read_state
from cible.server.auth import TokenAuthMiddleware
from cible.server.clusters.agents import AgentService
from cible.server.clusters.hub import AgentHub
from cible.server.clusters.reconciler import ClusterReconciler
from cible.server.clusters.runs import ClusterRunner
from cible.server.clusters.slurm import (
    cluster_access,
    every_compute,
    node_bundle,
    slurm_compute_names,
    slurm_runner,
)
from cible.server.errors import install_error_handlers
from cible.server.gateway import Gateway
from cible.server.guard import RequestGuard
from cible.server.reconcilers.demand import GatewayDemand
from cible.server.reconcilers.endpoints import EndpointReconciler
from cible.server.reconcilers.jobs import JobReconciler
from cible.server.reconcilers.orchestrator import Orchestrator
from cible.server.reconcilers.routes import RoutePublisher
from cible.server.routers import agents as agents_router
from cible.server.routers import assets as assets_router
from cible.server.routers import batch_endpoints as batch_endpoints_router
from cible.server.routers import batch_runs as batch_runs_router
from cible.server.routers import computes as computes_router
from cible.server.routers import datastores as datastores_router
from cible.server.routers import endpoints as endpoints_router
from cible.server.routers import jobs as jobs_router
from cible.server.routers import misc as misc_router
from cible.server.routers import sizes as sizes_router
from cible.server.routers import users as users_router
from cible.server.services.artifacts import ArtifactService
from cible.server.services.assets import AssetService
from cible.server.services.attach import AttachedMachines
from cible.server.services.batch_endpoints import BatchEndpointService
from cible.server.services.batch_runs import BatchRunService, TokenCheck
from cible.server.services.blobs import BlobService
from cible.server.services.compute_providers import DEFAULT_SERVERLESS_SIZES
from cible.server.services.computes import ComputeService
from cible.server.services.costs import CostService
from cible.server.services.deployments import DeploymentService
from cible.server.services.device_logins import DeviceLogins
from cible.server.services.endpoints import EndpointService
from cible.server.services.instances import InstanceService
from cible.server.services.job_plans import PlanBuilder
from cible.server.services.jobs import REPLICA, JobService, NewJob
from cible.server.services.kubernetes import every_instance_type, pod_template, workspace_label
from cible.server.services.node_files import NodeFileService
from cible.server.services.quotas import QuotaService
from cible.server.services.spark_jobs import spark_masters
from cible.server.services.users import UserService
from cible.server.services.warm_pool import WarmPoolLedger
from cible.server.settings import ServerSettings
from cible.server.store.db import Store
from cible.server.studio import install_studio
from cible.server.studio.sessions import StudioSessions
from cible.server.tokens import Tokens
from cible.server.tracking import TrackingServer, metric_history
from cible.server.tracking_proxy import tracking_router
from cible.workspace import current_user

GATEWAY_PORT_FILE = "gateway.port"  # kept across restarts: a scoring_uri stays what it was
EXPERIMENT_IDS_KEPT = 1024  # MLflow experiment ids the server remembers, by name (the most recently used)


def create_app(settings: ServerSettings, token: str, clock: Clock = SYSTEM_CLOCK, *, reconcile: bool = True,
               url: str | None = None) -> FastAPI:
    paths = settings.paths
    paths.ensure()
    store = Store(settings.db_url)
    store.migrate()
    tokens = Tokens(token)  # jobs and nodes get tokens scoped to them, never the workspace's
    users = UserService(store, clock)
    users.ensure_owner(current_user())  # the workspace token is its first Owner's: whoever starts its server
    attached = AttachedMachines(store)  # what the ssh node provider knows of the attached machines
    runner = LocalProcessRunner(paths.runs, run_token=tokens.run)
    hub = AgentHub()
    bundle = node_bundle(paths)  # the node code sent to Slurm (and built once)
    # Every installed node provider (entry points `cible.node_providers`); an unusable one says why.
    # Warm agents are billed at the size a serverless job gets by default (`computes` is made below).
    warm_ledger = WarmPoolLedger(store, lambda: computes.node_providers.default_serverless_size()
                                 or catalog.get_size(DEFAULT_SERVERLESS_SIZES[-1]))
    providers = build_providers(
        ProviderContext(nodes_root=paths.nodes, home=paths.home, url=url, node_token=tokens.node),
        options={"local": {"warm_nodes": settings.warm_nodes, "warm_ledger": warm_ledger},
                 "ray": {"address": settings.ray_address, "token": settings.ray_token,
                         "autoscaling": settings.ray_autoscaling, "shared_workspace": settings.ray_shared_workspace},
                 "ssh": {"attached": attached.machines, "hosts_of": attached.hosts_of},
                 "slurm": {"access_of": lambda cluster: cluster_access(store, cluster), "bundle": bundle,
                           "computes": lambda: every_compute(store)},
                 "kubernetes": {"workspace": workspace_label(token),  # marks this workspace's pods
                                "template_of": lambda pool: _in_session(store, pod_template, pool),
                                "instance_types": lambda: _in_session(store, every_instance_type)}})
    quotas = QuotaService(store, clock)
    clusters = ClusterReconciler(store, paths, providers, hub, clock,
                                 heartbeat_timeout_s=settings.node_heartbeat_timeout_s,
                                 prepare_timeout_s=settings.node_prepare_timeout_s, quotas=quotas)
    for provider in providers.values():
        if supports(provider, ON_NODE_GONE):
            provider.on_node_gone = clusters.wake
    computes = ComputeService(store, settings.max_concurrent_local, clock, providers,
                              on_change=lambda: (attached.forget(), clusters.wake()),
                              quotas=quotas, paths=paths, default_provider=settings.default_provider)
    slurm = slurm_runner(store, paths, tokens, hub, url, bundle)
    reconciler = JobReconciler(store, {"local": runner}, clock, settings.max_concurrent_local,
                               cluster_runner=ClusterRunner(paths, hub.notify), cluster_names=computes.cluster_names,
                               on_job_ended=clusters.wake,
                               engine_runner=slurm,
                               engine_names=lambda: slurm_compute_names(store),
                               slot_computes=lambda: spark_masters(store))
    clusters.on_jobs_changed = reconciler.wake
    agents = AgentService(store, paths, hub, clock, settings.node_heartbeat_timeout_s,
                          on_first_heartbeat=clusters.wake, on_report=reconciler.wake, run_token=tokens.run,
                          shares_workspace=lambda name: name not in providers
                          or supports(providers[name], SHARES_WORKSPACE), pilot_next=slurm.next_for)

    def plan_of(job_name: str):  # noqa: ANN202
        try:
            return jobs.run_handle(job_name)[1].plan
        except NotFoundError:  # the plan builder reports it, naming the field
            return None

    def outputs_of(job_name: str):  # noqa: ANN202
        plan = plan_of(job_name)
        return None if plan is None else plan.get("outputs", {})

    assets = AssetService(store, paths, clock, outputs_of)
    tracking = TrackingServer(paths.home) if settings.tracking else None
    # No token in a stored plan: each launcher is handed its job's run token (with_run_token).
    tracking_plan = {"uri": f"{url}/mlflow"} if tracking and url else None

    @lru_cache(maxsize=EXPERIMENT_IDS_KEPT)  # a failed lookup raises: it is not kept, the next one asks again
    def cached_experiment_id(name: str) -> str:
        if tracking is None or not tracking.is_ready:  # not waited for: the launcher looks it up itself
            raise LookupError("MLflow is not up")
        return experiment_id(f"{tracking.url}/mlflow", None, name, timeout_s=2, headers=tracking.auth_headers)

    def experiment_of(name: str) -> str | None:
        """The MLflow experiment id for `name`, asked of MLflow once per name (when it is up) while the
        name is among the EXPERIMENT_IDS_KEPT most recently used."""
        try:
            return cached_experiment_id(name)
        except Exception:  # the launcher looks it up itself
            return None

    plans = PlanBuilder(paths, plan_of, assets.get, strict_python=settings.strict_python, tracking=tracking_plan,
                        experiment_lookup=experiment_of, api_url=url)

    def on_submit(new: list[NewJob] | None = None) -> None:
        """Wake the loops that act on the jobs just stored (None: a job changed, any loop may act on it).
        A sweep or pipeline is the orchestrator's; a job on a compute with nodes (a cluster, an instance,
        serverless), the cluster reconciler's until it places it; any other (`local`'s slots, an engine
        such as Slurm or Ray), the job reconciler's. A loop woken for nothing makes a whole pass, and
        competes with the request and the loop that has work: every submit paid for three."""
        runs = [job for job in new or () if not job.is_parent]
        on_nodes = computes.cluster_names() if any(job.target not in reconciler.runners for job in runs) else set()
        if new is None or any(job.target not in on_nodes for job in runs):
            reconciler.wake()
        if new is None or any(job.target in on_nodes for job in runs):
            clusters.wake()
        if new is None or len(runs) < len(new):
            orchestrator.wake()
        if tracking is not None:  # MLflow starts with the first job (its launcher waits for it), not with the server
            tracking.ensure_running()

    jobs = JobService(store, computes, plans, clock, on_submit=on_submit,
                      default_compute=settings.default_compute,
                      component_lookup=assets.component_spec)
    batch_runs = BatchRunService(store, clock)

    run_ids: dict[str, str] = {}  # job -> its MLflow run, once found (the most recently used kept)

    def run_of(job_name: str, experiment_name: str) -> str | None:
        """A job's MLflow run: in its run folder's state (a job on `local`), else found by its name in
        its experiment (a job on a cluster's nodes keeps its state on the node); None while it has none."""
        if job_name in run_ids:
            return run_ids[job_name]
        run_id = (read_state(paths.run_dir(job_name)) or {}).get("mlflow_run_id")
        if run_id is None and tracking is not None and tracking.ready(timeout=0):  # started when it is not
            try:
                run_id = find_run(f"{tracking.url}/mlflow", None, experiment_name, job_name, timeout_s=5,
                                  headers=tracking.auth_headers)
            except TrackingError as exc:
                raise TrackingUnavailableError(f"the workspace's MLflow did not answer: {exc}") from None
        if run_id is not None:
            if len(run_ids) >= EXPERIMENT_IDS_KEPT:
                run_ids.pop(next(iter(run_ids)))
            run_ids[job_name] = run_id
        return run_id

    def trial_metric(job_name: str, experiment_name: str, metric: str) -> list[float] | None:
        """A trial's primary metric as logged to its MLflow run; None while it has no run."""
        run_id = run_of(job_name, experiment_name) if tracking is not None else None
        return None if run_id is None else metric_history(tracking, run_id, metric)

    jobs.is_admin = lambda user: user is None or users.role_of(user) in (None, *ADMIN_ROLES)
    jobs.automl_environment = settings.automl_environment
    jobs.spark_environment = settings.spark_environment
    orchestrator = Orchestrator(store, jobs, clock, trial_metric)

    # Online endpoints: replicas are jobs; the gateway serves every endpoint on one port.
    publisher = RoutePublisher(tokens, publish=lambda table: gateway.publish(table))
    demand = GatewayDemand(clock, wake=lambda: serving.wake())
    gateway = Gateway(check_credential=publisher.check_credential, on_demand=demand.on_demand)
    demand.gateway = gateway
    gateway_url: list[str] = []  # once it listens
    serving = EndpointReconciler(store, jobs, clock, assets.get, publish=publisher, demand=demand,
                                 blob_root=paths.blob_root)
    endpoints = EndpointService(store, clock, tokens, gateway_url=lambda: gateway_url[0] if gateway_url else None,
                                stats=gateway.stats, on_change=serving.wake)
    deployments = DeploymentService(store, clock, jobs, endpoints, paths, assets.get, on_change=serving.wake)

    def on_any_end(ended: list[LiveJob]) -> None:
        """Jobs ended: their sweep or pipeline may go on; a replica may need replacing."""
        if any(job.parent is not None for job in ended):
            orchestrator.wake()
        if any(job.job_type == REPLICA for job in ended):
            serving.wake()

    reconciler.on_any_end = on_any_end

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # MLflow's child (~260 MB, seconds to import) is not started here but on first use: a job's
        # submit, the /mlflow proxy or a metrics read (TrackingServer.ensure_running).
        if reconcile:
            warm_ledger.close_left_open()  # the warm agents of a server that crashed ended with it
            for provider in providers.values():
                if supports(provider, PREPARE):
                    provider.prepare()  # engines reached over the network connect in the background
            reconciler.start()
            clusters.start()
            orchestrator.start()
            with store.session() as session:  # the routes as stored: a restarted server serves at once
                publisher(session)
            try:
                port = gateway.start(settings.gateway_host, settings.gateway_port or previous_gateway_port(paths))
            except OSError:
                if settings.gateway_port:  # the port asked for: say it is taken rather than serve elsewhere
                    raise
                port = gateway.start(settings.gateway_host, 0)  # the last port is taken by now: any free one
            save_gateway_port(paths, port)
            host = settings.gateway_host if settings.gateway_host not in ("0.0.0.0", "::") else "127.0.0.1"
            gateway_url.append(f"http://{host}:{port}")
            serving.start()
        try:
            yield
        finally:
            serving.stop()
            gateway.stop()
            orchestrator.stop()
            clusters.stop()
            reconciler.stop()
            for provider in providers.values():
                if supports(provider, CLOSE):
                    provider.close()
            if tracking:
                await tracking.aclose()
                tracking.stop()
            users.flush_usage()
            store.close()

    app = FastAPI(
        title="cible workspace",
        version=__version__,
        openapi_url="/api/v1/openapi.json",
        docs_url="/api/v1/docs",
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.store = store
    app.state.jobs = jobs
    app.state.orchestrator = orchestrator
    app.state.computes = computes
    app.state.instances = InstanceService(store, clock, paths, on_change=clusters.wake)
    app.state.quotas = quotas
    app.state.users = users
    app.state.costs = CostService(store, clock)
    app.state.assets = assets
    app.state.blobs = BlobService(paths.blob_root)
    app.state.artifacts = ArtifactService(jobs, paths, run_of)
    app.state.reconciler = reconciler
    app.state.endpoints = endpoints
    app.state.deployments = deployments
    # Batch endpoints: nothing runs until an invocation, whose job the job reconciler runs.
    app.state.batch_endpoints = BatchEndpointService(store, clock, jobs, assets.get, blob_root=paths.blob_root, url=url)
    app.state.serving = serving
    app.state.gateway = gateway
    app.state.clusters = clusters
    app.state.agents = agents
    app.state.node_files = NodeFileService(paths, agents.placed_plan)  # nodes that do not share the workspace
    app.state.hub = hub
    app.state.node_code = lru_cache(maxsize=1)(lambda: bundle().tar_bytes())  # what a node pod fetches
    app.state.tracking = tracking
    app.state.clock = clock
    app.state.tokens = tokens
    app.state.batch_runs = batch_runs
    app.state.batch_token_check = TokenCheck(jobs.run_token_refusal)
    install_error_handlers(app)
    # Routes are tried in order, and each one tried before the right one costs the request (FastAPI
    # matches every route of every included router in turn): the busiest first. The agents' heartbeats,
    # reports and files are most of what a busy workspace serves (/api/v1/agent/ is their own prefix),
    # then jobs (submits and every poll); the studio's pages, which no API path reaches, last.
    app.include_router(agents_router.router)
    app.include_router(batch_runs_router.router)  # before the jobs' routes: /{name}/batch… is its own
    app.include_router(jobs_router.router)
    app.include_router(misc_router.router)
    app.include_router(computes_router.router)
    app.include_router(endpoints_router.router)
    app.include_router(batch_endpoints_router.router)
    app.include_router(sizes_router.router)
    app.include_router(users_router.router)
    if tracking:
        app.include_router(tracking_router(tracking, run_token_refusal=jobs.run_token_refusal,
                                           job_creator=jobs.creator))
    app.include_router(datastores_router.router)
    app.include_router(assets_router.router)  # last of the API: its /api/v1/{kind} would shadow the routes above
    studio_sessions = StudioSessions(store, clock, token, session_ttl_s=settings.studio_session_ttl_s,
                                     code_ttl_s=settings.studio_code_ttl_s)
    app.state.device_logins = DeviceLogins(store, clock, users, token_days=settings.login_token_days)
    if settings.oidc_issuer:
        from cible.server.studio.oidc import PATH, oidc_app  # Authlib: imported only where OIDC is set up

        app.mount(PATH, oidc_app(settings, studio_sessions, users, token))
    install_studio(app, studio_sessions)
    app.add_middleware(TokenAuthMiddleware, tokens=tokens, user_of=users.scope_of)
    app.add_middleware(RequestGuard, settings=settings)  # outermost: body limits; 500s that keep the connection
    return app


def previous_gateway_port(paths) -> int:  # noqa: ANN001
    """The port the workspace's gateway had: its endpoints' scoring URIs keep working after a restart."""
    try:
        return int((paths.home / GATEWAY_PORT_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return 0


def save_gateway_port(paths, port: int) -> None:  # noqa: ANN001
    (paths.home / GATEWAY_PORT_FILE).write_text(str(port))


def _in_session(store: Store, read, *args):  # noqa: ANN001, ANN202
    with store.session() as session:
        return read(session, *args)
