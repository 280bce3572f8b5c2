"""Sweeps: --trials trials of a trivial training script, 2 at a time, against an Optuna driver (the floor).

The same train.py everywhere: parse --lr/--layers, `import mlflow; mlflow.log_metric("loss", x)`, print
the loss. Random sampling over the same space (lr uniform 0.01..0.9, layers choice 1/2/3), 2 trials at a
time, measured in the same run:

  floor  an Optuna ask/tell driver (RandomSampler): each trial is a `python train.py` subprocess, 2 at a
         time, the loss read from its output. Outside cible there is no MLflow server, so MLFLOW_TRACKING_URI
         points at a temporary file store (MLFLOW_ALLOW_FILE_STORE=true: MLflow 3 refuses one otherwise),
         so that mlflow.log_metric does the same work of creating a run and logging to it. It runs in two
         halves, one before cible and one after, so that other work on the machine during the run weighs
         on the floor and on cible alike; the floor's wall time is the sum of the halves.
  peer   Ray Tune, if `ray[tune]` imports (a message otherwise): a function trainable that runs the same
         subprocess and reports its loss; num_samples --ray-trials, max_concurrent_trials 2,
         ray.init(num_cpus=2); run before cible's server starts; its rate is scaled to --trials.
  cible  a `type: sweep` job (random sampling, max_concurrent_trials 2) on a 2-node amlcompute cluster of
         the local provider (min 2, max 2, Standard_DS1_v2: 1 vCPU each), the server with MLflow tracking
         on (CIBLE_TRACKING=1: the orchestrator reads each trial's loss from its MLflow run). The cluster
         is warmed first: one train.py job per node, at once (nodes up, agents warm, MLflow's server and
         the page cache warm). Wall time: from just before `jobs.create_or_update` (which uploads the code
         folder) to the moment the client sees the sweep ended, polled in-process every 10 ms growing to
         at most --poll-max (50 ms). The poll reads the X-Cible-Job-Status header of the sweep's log
         endpoint (what `jobs.stream` polls), not `jobs.get`: the show view lists every trial, so its
         cost grows with them (tens of ms at 200 trials), and 20 of them a second would take a CPU from
         the trials on a small machine (--poll get measures that way).

Prints trials/s of each and the ratio of wall times (target: cible <= 2x the floor's), the load average
beside each (the machine may be shared), then where a trial's time goes in cible: the server's status
history of each trial and its node's assignment (the workspace's SQLite file), the orchestrator's
reaction time (from a trial's end, as the server recorded it, to the creation of the trial that took its
slot) and what the client's polling costs. Last, CPU seconds per trial of each part (this process, the
floor's subprocesses, cible's server, MLflow child, agents and the nodes' cgroups, the rest of the
machine): unlike wall time, not moved by other work on a shared machine.

    .venv/bin/python bench/sweep.py [--trials 200] [--quick] [--ray-trials N] [--compute local]
        [--poll logs|get] [--poll-max S]

--quick: 20 trials. A fresh workspace in a temporary folder, its server stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from cluster import TERMINAL, clean_up, make_cluster, node_marks, status_marks, submit, ts

# bench/ray.py would shadow Ray itself for the peer: bench/ leaves sys.path once its modules are imported.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH]

CLUSTER = "pair"
EXPERIMENT = "sweep-bench"
CONCURRENT = 2
LR = (0.01, 0.9)
LAYERS = (1, 2, 3)
POLL_MIN_S, POLL_MAX_S = 0.01, 0.05
median = statistics.median

TRAIN_PY = textwrap.dedent("""\
    import argparse

    import mlflow

    p = argparse.ArgumentParser()
    p.add_argument("--lr", type=float, required=True)
    p.add_argument("--layers", type=int, required=True)
    a = p.parse_args()
    loss = (a.lr - 0.3) ** 2 + 0.01 * a.layers
    mlflow.log_metric("loss", loss)
    print(f"loss={loss}")
    """)

SWEEP_YML = """\
type: sweep
compute: {compute}
experiment_name: {experiment}
trial:
  command: python train.py --lr ${{{{search_space.lr}}}} --layers ${{{{search_space.layers}}}}
  code: src
sampling_algorithm: random
search_space:
  lr: {{type: uniform, min_value: {lo}, max_value: {hi}}}
  layers: {{type: choice, values: [{layers}]}}
objective: {{goal: minimize, primary_metric: loss}}
limits: {{max_total_trials: {trials}, max_concurrent_trials: {concurrent}}}
"""


def loss_of(stdout: str) -> float:
    found = re.search(r"^loss=(\S+)$", stdout, re.MULTILINE)
    if found is None:
        raise RuntimeError(f"no loss in the trial's output: {stdout!r}")
    return float(found.group(1))


def file_store_env(store: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "CIBLE_"))}
    return {**env, "MLFLOW_TRACKING_URI": store.as_uri(), "MLFLOW_ALLOW_FILE_STORE": "true"}


def run_train(code: Path, env: dict[str, str], lr: float, layers: int) -> float:
    out = subprocess.run([sys.executable, "train.py", "--lr", repr(lr), "--layers", str(layers)], cwd=code,
                         env=env, capture_output=True, text=True, check=True).stdout
    return loss_of(out)


# -- CPU accounting: robust to other work on a shared machine, unlike wall time ---------------------------
CGROUP_CPUACCT = Path("/sys/fs/cgroup/cpuacct/cible")  # the local provider's node groups (cgroup v1)


class CpuMeter:
    """CPU seconds spent between start() and stop(): by this process, by its reaped children (the
    floor's subprocesses), by the machine as a whole, and, given a workspace, by cible's parts: the
    server, its MLflow child, the node agents, and the nodes' groups (launchers and trials)."""

    def __init__(self, home: Path | None = None, node_ids: list[str] = ()) -> None:
        self.home, self.node_ids = home, list(node_ids)

    def _sample(self) -> dict[str, float]:
        import resource

        import psutil

        me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        machine = psutil.cpu_times()
        out = {"client": me.ru_utime + me.ru_stime, "children": kids.ru_utime + kids.ru_stime,
               "machine": machine.user + machine.nice + machine.system + machine.irq + machine.softirq}
        if self.home is None:
            return out
        server = psutil.Process(json.loads((self.home / "server.json").read_text())["pid"])
        out["server"] = sum(server.cpu_times()[:2])
        for child in server.children():
            try:
                part = "MLflow child" if "cible.server.tracking" in " ".join(child.cmdline()) else "agents"
                out[part] = out.get(part, 0.0) + sum(child.cpu_times()[:2])
            except psutil.Error:
                pass
        usage = [CGROUP_CPUACCT / node / "cpuacct.usage" for node in self.node_ids]
        if usage and all(u.exists() for u in usage):
            out["node groups (trials, launchers)"] = sum(int(u.read_text()) for u in usage) / 1e9
        return out

    def start(self) -> CpuMeter:
        self.first = self._sample()
        return self

    def stop(self) -> dict[str, float]:
        last = self._sample()
        spent = {k: last[k] - self.first.get(k, 0.0) for k in last}
        spent["other work on the machine"] = spent["machine"] - sum(
            v for k, v in spent.items() if k not in ("machine", "children"))
        if self.home is None:
            spent["other work on the machine"] -= spent["children"]
        return spent


def cpu_line(spent: dict[str, float], trials: int) -> str:
    return ", ".join(f"{k} {v / trials:.2f}" for k, v in spent.items() if k != "machine")


# -- floor: Optuna ask/tell, a subprocess per trial, 2 at a time ----------------------------------------
def optuna_floor(code: Path, store: Path, trials: int, seed: int) -> tuple[float, float, list[float], dict]:
    """(wall seconds, best loss, each trial's subprocess seconds, CPU seconds spent)."""
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    env = file_store_env(store)
    space = {"lr": FloatDistribution(*LR), "layers": CategoricalDistribution(LAYERS)}
    run_train(code, env, 0.5, 1)  # warm-up: the page cache, the file store's experiment
    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.RandomSampler(seed=seed))
    each: list[float] = []

    def timed(lr: float, layers: int) -> float:
        t = time.perf_counter()
        loss = run_train(code, env, lr, layers)
        each.append(time.perf_counter() - t)
        return loss

    meter = CpuMeter().start()
    started = time.perf_counter()
    with ThreadPoolExecutor(CONCURRENT) as pool:
        pending: dict = {}
        asked = 0
        while asked < trials or pending:
            while asked < trials and len(pending) < CONCURRENT:
                trial = study.ask(space)
                pending[pool.submit(timed, trial.params["lr"], trial.params["layers"])] = trial
                asked += 1
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                study.tell(pending.pop(future), future.result())
    wall = time.perf_counter() - started
    return wall, study.best_value, each, meter.stop()


# -- peer: Ray Tune ---------------------------------------------------------------------------------------
def ray_peer(code: Path, store: Path, trials: int, scratch: Path) -> tuple[float, float, float] | None:
    """(ray.init seconds, Tuner.fit wall seconds, best loss); None when Ray Tune is not installed."""
    try:
        import ray
        from ray import tune
        from ray.tune.search.basic_variant import BasicVariantGenerator
    except ImportError as missing:
        print(f"\n   peer   Ray Tune: skipped ({missing}; `pip install 'ray[tune]'` to measure it)")
        return None
    env = file_store_env(store)

    def trainable(config: dict) -> None:
        tune.report({"loss": run_train(code, env, config["lr"], config["layers"])})

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    t = time.perf_counter()
    ray.init(num_cpus=CONCURRENT, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    init_s = time.perf_counter() - t
    try:
        tuner = tune.Tuner(
            tune.with_resources(trainable, {"cpu": 1}),
            param_space={"lr": tune.uniform(*LR), "layers": tune.choice(list(LAYERS))},
            tune_config=tune.TuneConfig(num_samples=trials, max_concurrent_trials=CONCURRENT, metric="loss",
                                        mode="min", search_alg=BasicVariantGenerator(random_state=7)),
            run_config=tune.RunConfig(storage_path=str(scratch / "ray_results"), verbose=0))
        t = time.perf_counter()
        results = tuner.fit()
        wall = time.perf_counter() - t
        errors = sum(r.error is not None for r in results)
        if errors:
            print(f"   (Ray Tune: {errors} of {trials} trials raised)")
        return init_s, wall, results.get_best_result().metrics["loss"]
    finally:
        ray.shutdown()


# -- cible ------------------------------------------------------------------------------------------------
def warm_cluster(client, project: Path, compute: str) -> str:
    """One train.py job per node, at once: nodes up and agents warm, MLflow's server answering."""
    from cible import command

    if compute != "local":
        make_cluster(client, CLUSTER, CONCURRENT, CONCURRENT, 600, ready=CONCURRENT)
    spec = command(command="python train.py --lr 0.5 --layers 1 && python -c 'import sys; print(sys.executable)'",
                   code=project / "src", compute=compute, experiment_name="warm-up")
    names = [submit(client, spec)[1] for _ in range(CONCURRENT)]
    for name in names:
        done = client.jobs.wait(name, timeout=300)
        if done["status"] != "Completed":
            raise RuntimeError(f"the warm-up job {name} ended {done['status']}: {done.get('error')}")
    log = client._client.request("GET", f"/jobs/{names[0]}/logs").content.decode()
    return next((line for line in log.splitlines() if line.startswith("/")), "?")


def cible_sweep(client, project: Path, trials: int, compute: str, poll: str, poll_max: float):
    """(wall seconds as the client saw it, as the server recorded it, the sweep as shown, jobs.get latencies)."""
    from cible import load_job

    path = project / "sweep.yml"
    path.write_text(SWEEP_YML.format(compute=compute, experiment=EXPERIMENT, lo=LR[0], hi=LR[1],
                                     layers=", ".join(map(str, LAYERS)), trials=trials, concurrent=CONCURRENT))
    spec = load_job(path)
    t0 = time.time()
    name = client.jobs.create_or_update(spec)["name"]
    delay, gets = POLL_MIN_S, []
    deadline = time.monotonic() + 60 + 30 * trials
    while True:
        t = time.perf_counter()
        status = read_status(client, name, poll)
        gets.append((time.perf_counter() - t) * 1e3)
        if status in TERMINAL:
            seen = time.time()
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"sweep {name} still {status}: {client.jobs.get(name).get('trial_counts')}")
        time.sleep(delay)
        delay = min(delay * 1.5, poll_max)
    job = client.jobs.get(name)
    return seen - t0, ts(job["end_time"]) - t0, job, gets


def read_status(client, name: str, poll: str) -> str:
    """The sweep's status: from `jobs.get` (the show view, which lists every trial: its cost grows with
    them) or from the X-Cible-Job-Status header of its log endpoint (what `jobs.stream` polls)."""
    if poll == "get":
        return client.jobs.get(name)["status"]
    return client._client.request("GET", f"/jobs/{name}/logs").headers["X-Cible-Job-Status"]


def poll_costs(client, name: str, reps: int = 20) -> str:
    """ms per call, median of `reps`, of the ways to ask an ended sweep for its status."""
    calls = {
        "jobs.get (show view, every trial)": lambda: client.jobs.get(name),
        "GET /jobs?experiment_name=..&top=1": lambda: client._client.json(
            "GET", "/jobs", params={"experiment_name": EXPERIMENT, "top": 1}),
        "GET /jobs/<sweep>/logs (status header)": lambda: client._client.request("GET", f"/jobs/{name}/logs"),
    }
    out = []
    for label, call in calls.items():
        took = []
        for _ in range(reps):
            t = time.perf_counter()
            call()
            took.append((time.perf_counter() - t) * 1e3)
        out.append(f"{label} {median(took):.1f}")
    return ", ".join(out)


def profile(home: Path, sweep: dict, compute: str) -> None:
    """Where a trial's time goes: status history, node marks, the orchestrator's reaction."""
    names = {t["name"] for t in sweep["trials"]}
    statuses = {n: m for n, m in status_marks(home, EXPERIMENT).items() if n in names}
    nodes = node_marks(home, CLUSTER) if compute != "local" else {}
    created = {n: min(m.values()) for n, m in statuses.items()}
    ended = {n: min(at for s, at in m.items() if s in TERMINAL) for n, m in statuses.items()}
    offsets: dict[str, list[float]] = {}
    for name, first in created.items():
        for step, at in {**statuses[name], **nodes.get(name, {})}.items():
            offsets.setdefault(step, []).append((at - first) * 1e3)
    print("\n   a trial's life, median ms after its creation (server status history; node assigned/freed):")
    marks = sorted((median(v), k) for k, v in offsets.items())
    print("     " + " -> ".join(f"{k} {v:.0f}" for v, k in marks))
    running = [statuses[n]["Finalizing"] - statuses[n]["Running"] for n in names
               if {"Running", "Finalizing"} <= statuses[n].keys()]
    if running:
        print(f"   Running -> Finalizing (the user's command; the launcher also made its MLflow run): median "
              f"{median(running):.2f} s")
    # Trials in creation order: the k-th (k >= 2) took the slot of the (k-1)-th to end.
    order, ends = sorted(created.values()), sorted(ended.values())
    in_order = [(order[k] - ends[k - CONCURRENT]) * 1e3 for k in range(CONCURRENT, len(order))]
    reaction = sorted(in_order)
    if reaction:
        print(f"   orchestrator reaction, a trial's end (server) -> the next trial created: median "
              f"{median(reaction):.0f} ms, p90 {reaction[int(0.9 * (len(reaction) - 1))]:.0f} ms, "
              f"max {reaction[-1]:.0f} ms")
        step = max(1, len(in_order) // 10)  # does it grow with the trials already made?
        print("     median by tenths of the sweep: " + " ".join(
            f"{median(in_order[i:i + step]):.0f}" for i in range(0, len(in_order) - step + 1, step)))
    if nodes:
        assigned = sorted(m["assigned"] for n, m in nodes.items() if n in names and "assigned" in m)
        freed = sorted(m["node freed"] for n, m in nodes.items() if n in names and "node freed" in m)
        gaps = sorted((assigned[k] - freed[k - CONCURRENT]) * 1e3 for k in range(CONCURRENT, len(assigned))
                      if k - CONCURRENT < len(freed))
        if gaps:
            print(f"   a node idle between trials (a node freed -> the next assignment): median {median(gaps):.0f} "
                  f"ms, max {gaps[-1]:.0f} ms")
    busy = sum(ended[n] - created[n] for n in names)
    span = max(ended.values()) - min(created.values())
    print(f"   slots busy {busy / (CONCURRENT * span):.0%} of the sweep's span (creation of the first trial -> "
          "end of the last)")


def report(label: str, trials: int, wall: float, floor: float | None = None) -> str:
    line = f"   {label:<46} {wall:8.1f} s  {trials / wall:6.3f} trials/s"
    if floor is not None:
        line += f"   ratio {wall / floor:5.2f}x the floor's wall time"
    return line


def load() -> str:
    return f"load avg (1 min) {os.getloadavg()[0]:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="a short run: --trials 20")
    parser.add_argument("--ray-trials", type=int, default=None,
                        help="trials for the Ray Tune peer (default: --trials; 0 skips it)")
    parser.add_argument("--compute", default=f"azureml:{CLUSTER}",
                        help="where the trials run: the 2-node cluster (default) or `local`")
    parser.add_argument("--poll", choices=("logs", "get"), default="logs",
                        help="how the client asks for the sweep's status: the log endpoint's status header "
                             "(cheap, default) or jobs.get (the show view with every trial)")
    parser.add_argument("--poll-max", type=float, default=POLL_MAX_S,
                        help="the client's longest wait between two status polls of the sweep (s)")
    args = parser.parse_args()
    if args.quick:
        args.trials = 20
    ray_trials = args.trials if args.ray_trials is None else args.ray_trials

    home = Path(tempfile.mkdtemp(prefix="cible-bench-sweep-"))
    scratch = Path(tempfile.mkdtemp(prefix="cible-bench-sweep-floor-"))
    project = home.parent / f"{home.name}-project"
    (project / "src").mkdir(parents=True)
    (project / "src" / "train.py").write_text(TRAIN_PY)
    started = time.time()
    print(f"{args.trials} trials of train.py (import mlflow, log one metric), {CONCURRENT} at a time, on "
          f"{os.cpu_count()} CPUs; trials on {args.compute}")

    # The floor runs in two halves, before and after cible, so that a machine busier during one
    # (other work on it) weighs on both alike; neither half shares the machine with the server.
    half = args.trials - args.trials // 2
    print(f"   ({load()})")
    floor_a, best_a, each_a, cpu_a = optuna_floor(project / "src", scratch / "mlruns", half, seed=7)
    print(report(f"floor, 1st half ({half} trials, before cible)", half, floor_a) + f"   ({load()})")
    peer = None
    if ray_trials:
        peer = ray_peer(project / "src", scratch / "mlruns-ray", ray_trials, scratch)
        if peer is not None:
            print(report(f"peer   Ray Tune Tuner.fit ({ray_trials} trials)", ray_trials, peer[1]) +
                  f"   (+ ray.init {peer[0]:.1f} s)   ({load()})")

    os.environ["CIBLE_HOME"] = str(home)
    os.environ["CIBLE_TRACKING"] = "1"  # a sweep reads its trials' metric from MLflow
    from cible import MLClient

    client = MLClient(home=home)
    try:
        python = warm_cluster(client, project, args.compute)
        print(f"   cible: warmed with {CONCURRENT} train.py jobs on {args.compute} (nodes up, MLflow's server "
              f"answering); trials run {python}, the floor {sys.executable}   ({load()})")
        nodes = [n["node_id"] for n in client.compute.list_nodes(CLUSTER)] if args.compute != "local" else []
        meter = CpuMeter(home, nodes).start()
        wall, server_wall, sweep, gets = cible_sweep(client, project, args.trials, args.compute, args.poll,
                                                     args.poll_max)
        print(report("cible  sweep, submit -> SDK sees it ended", args.trials, wall) + f"   ({load()})")
        cpu_cible = meter.stop()
        costs = poll_costs(client, sweep["name"])
        profile(home, sweep, args.compute)
    finally:
        clean_up(client, home)
    floor_b, best_b, each_b, cpu_b = optuna_floor(project / "src", scratch / "mlruns", args.trials - half, seed=8)
    print(report(f"floor, 2nd half ({args.trials - half} trials, after cible)", args.trials - half, floor_b) +
          f"   ({load()})")

    floor = floor_a + floor_b
    print(f"\nsummary: {args.trials} trials, {CONCURRENT} at a time")
    print(report("floor  Optuna ask/tell, subprocess per trial", args.trials, floor) +
          f"   (a trial's subprocess: median {median(each_a + each_b):.2f} s)")
    if peer is not None:
        print(report(f"peer   Ray Tune ({ray_trials} trials, scaled)", args.trials, peer[1] * args.trials / ray_trials,
                     floor))
    print(report("cible  sweep, submit -> SDK sees it ended", args.trials, wall, floor) +
          f"   target <= 2x: {'met' if wall <= 2 * floor else 'NOT met'}")
    print(f"   (cible: submit -> end_time as recorded {server_wall:.1f} s)")
    counts, error = sweep.get("trial_counts"), sweep.get("error") or {}
    print(f"   sweep {sweep['name']}: {sweep['status']}, trials {counts}"
          + (f"; error {error.get('code')}: {error.get('message')}" if error else ""))
    best = sweep.get("best_trial") or {}
    print(f"   best loss: cible {best.get('metric')}, floor {min(best_a, best_b):.5f}"
          + (f", Ray Tune {peer[2]:.5f}" if peer else "") + " (each samples its own points)")
    print(f"   the client's polling ({args.poll}, at most every {args.poll_max * 1e3:.0f} ms): {len(gets)} calls, "
          f"median {median(gets):.1f} ms, max {max(gets):.1f} ms; on the ended sweep, ms per call: {costs}")
    cpu_floor = {k: cpu_a[k] + cpu_b[k] for k in cpu_a}
    print("\nCPU seconds per trial (not disturbed by other work on the machine, unlike wall times):")
    print(f"   floor  {cpu_line(cpu_floor, args.trials)}")
    print(f"   cible  {cpu_line(cpu_cible, args.trials)}")
    cible_own = sum(v for k, v in cpu_cible.items() if k not in ("machine", "other work on the machine", "client"))
    print(f"   cible's CPU per trial (server, MLflow child, agents, node groups) / the floor's subprocess: "
          f"{cible_own / cpu_floor['children']:.2f}x; the machine was busy {cpu_floor['machine'] / floor:.2f} CPUs "
          f"on average during the floor, {cpu_cible['machine'] / wall:.2f} during cible's sweep "
          f"(of {os.cpu_count()})")
    print(f"\ntotal {time.time() - started:.0f} s; workspace {home}")


if __name__ == "__main__":
    main()
