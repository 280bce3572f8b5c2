"""Attached machines: warm dispatch to an attached loopback machine, and staging a big input to it.

A real sshd on 127.0.0.61 (started here; needs root and /usr/sbin/sshd) is attached as a
virtualmachine compute whose agent logs in as a user of its own and reaches the server through the
SSH tunnel, as on a machine that cannot reach the server.

- Dispatch: from `create_or_update` to the first line of `python3 -c` on the machine (its node warm),
  against the floor measured in the same run: `ssh host python3 -c` of the same line (a login).
- Staging: a job whose input is a file of --mb MB in the datastore (fetched by the agent, checksummed)
  runs a command that prints when it starts; its time to the first line minus a warm dispatch is
  the staging time, against `scp` of the same file to the same machine.

- Slurm (`--slurm`): a Slurm cluster started here (cible.testing.slurm: slurmctld and three slurmd
  on loopback addresses) attached with this machine's Slurm commands; from `create_or_update` to
  the first line of the same `python3 -c` run as a Slurm job, against the floors measured in the
  same run: `srun python3 -c` of that line, and a bare `sbatch` of it. Warm: the job runs in the
  allocation the previous job of the same request left (cible.keep_allocation_s, default 60 s: no
  sbatch). Cold: a compute that keeps none (keep_allocation_s: 0: sbatch, the pilot, the launcher).

    .venv/bin/python bench/attached.py [--runs 15] [--mb 200] [--stage-runs 3]
    .venv/bin/python bench/attached.py --slurm [--runs 15]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cible.testing.sshd import LoopbackSshd, ensure_user, keygen, package_access, sshd_missing

FIRST_LINE = "import time; print(time.time_ns(), flush=True)"
HOST = "127.0.0.61"
USER = "cible-bench"


def stop_agents(user: str) -> None:
    """The bench's node agents outlive the server it stops (as on any attached machine): they are
    stopped here, by the pids their agent.json files hold, so that runs do not pile them up."""
    import json
    import pwd
    import signal

    uid = pwd.getpwnam(user).pw_uid
    for record in Path(pwd.getpwnam(user).pw_dir, ".cible-agent", "nodes").glob("*/agent.json"):
        try:
            pid = int(json.loads(record.read_text())["pid"])
            # Only a live agent of that user: a stale record's pid may have been reused since.
            if os.stat(f"/proc/{pid}").st_uid == uid and b"cible.agent" in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.kill(pid, signal.SIGTERM)
        except (OSError, ValueError, KeyError):
            pass


def ssh_floor(sshd: LoopbackSshd, key: Path) -> float:
    t0 = time.time_ns()
    out = subprocess.run(["ssh", "-i", str(key), "-p", str(sshd.port), "-o", "StrictHostKeyChecking=no",
                          "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", f"{USER}@{HOST}",
                          f"python3 -c '{FIRST_LINE}'"], capture_output=True, text=True, check=True).stdout
    return (int(out.split()[0]) - t0) / 1e6


def scp_once(sshd: LoopbackSshd, key: Path, source: Path) -> float:
    t0 = time.monotonic()
    subprocess.run(["scp", "-q", "-i", str(key), "-P", str(sshd.port), "-o", "StrictHostKeyChecking=no",
                    "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", str(source),
                    f"{USER}@{HOST}:/tmp/cible-bench-scp.bin"], check=True)
    return (time.monotonic() - t0) * 1e3


def first_line_ms(client, job) -> float:  # noqa: ANN001
    t0 = time.time_ns()
    name = client.jobs.create_or_update(job)["name"]
    done = client.jobs.wait(name, timeout=300)
    assert done["status"] == "Completed", done
    log = client._client.request("GET", f"/jobs/{name}/logs").content.decode()
    user_lines = [line for line in log.splitlines() if not line.startswith(("[cible]", "cible:"))]
    return (int(user_lines[0]) - t0) / 1e6


def settle(cluster, held: int = 1) -> None:  # noqa: ANN001
    """Wait until Slurm runs nothing but the allocation kept warm (`held` jobs): a job still ending
    would hold a node, and an srun would wait for it."""
    deadline = time.monotonic() + 60
    while True:
        states = cluster.run(["squeue", "-h", "-o", "%T"]).stdout.split()
        if all(state == "RUNNING" for state in states) and len(states) <= held:
            return
        assert time.monotonic() < deadline, f"Slurm did not settle: {states}"
        time.sleep(0.02)


def srun_floor(cluster) -> float:  # noqa: ANN001
    settle(cluster)
    t0 = time.time_ns()
    done = cluster.run(["srun", "-N1", "python3", "-c", FIRST_LINE])
    assert done.returncode == 0, done.stderr
    return (int(done.stdout.split()[0]) - t0) / 1e6


def sbatch_floor(cluster, folder: Path) -> float:  # noqa: ANN001
    """A bare batch job of the same line: sbatch (from a clean environment, --export=ALL, as cible
    submits) to its first line in its output file."""
    script = folder / "floor.sbatch"
    script.write_text(f"#!/bin/bash\n#SBATCH --output={folder}/out-%j.txt\n#SBATCH --export=ALL\n"
                      f"python3 -c '{FIRST_LINE}'\n")
    settle(cluster)
    t0 = time.time_ns()
    done = cluster.run(["sbatch", "--parsable", str(script)])
    assert done.returncode == 0, done.stderr
    out = folder / f"out-{done.stdout.strip()}.txt"
    deadline = time.monotonic() + 60
    while not (out.exists() and out.read_text().strip()):
        assert time.monotonic() < deadline, "the floor's batch job did not run"
        time.sleep(0.005)
    return (int(out.read_text().split()[0]) - t0) / 1e6


def slurm_bench(runs: int) -> None:
    from cible.testing.slurm import SlurmTestCluster, slurm_missing

    if why := slurm_missing():
        sys.exit(f"bench/attached.py --slurm needs Slurm: {why}")
    cluster = SlurmTestCluster().start()
    home = Path(tempfile.mkdtemp(prefix="cible-bench-slurm-"))
    os.environ["CIBLE_HOME"] = str(home)
    os.environ.setdefault("CIBLE_TRACKING", "0")
    from cible import MLClient, command

    client = MLClient(home=home)
    try:
        environment = {"SLURM_CONF": str(cluster.slurm_conf)}
        client.compute.begin_create_or_update({"name": "hpc", "type": "slurm", "cible": {
            "environment": environment}}).result()
        client.compute.begin_create_or_update({"name": "hpc-cold", "type": "slurm", "cible": {
            "environment": environment, "keep_allocation_s": 0}}).result()
        job, cold_job = (command(command=f"python3 -c '{FIRST_LINE}'", compute=name,
                                 environment={"image": "python:3.11"}, experiment_name="bench")
                         for name in ("hpc", "hpc-cold"))
        folder = cluster.root / "bench"
        folder.mkdir()
        for _ in range(3):  # warm-up: the node code unpacked, the login session made
            srun_floor(cluster), sbatch_floor(cluster, folder), first_line_ms(client, job)
            first_line_ms(client, cold_job)
        floor, batch, cible, cold = [], [], [], []
        for _ in range(runs):  # interleaved, so machine noise hits all alike
            floor.append(srun_floor(cluster))
            batch.append(sbatch_floor(cluster, folder))
            cible.append(first_line_ms(client, job))
            settle(cluster)  # as for the floors: no job still ending holds a node
            cold.append(first_line_ms(client, cold_job))
    finally:
        subprocess.run([sys.executable, "-m", "cible", "server", "stop"], env=os.environ, capture_output=True)
        cluster.stop()
        shutil.rmtree(home, ignore_errors=True)
    f, b = statistics.median(floor), statistics.median(batch)
    c, k = statistics.median(cible), statistics.median(cold)
    print(f"runs: {runs} Slurm jobs of each; medians")
    print(f"floor  srun python3 -c                {f:8.1f} ms")
    print(f"floor  sbatch of python3 -c           {b:8.1f} ms   (a batch job waits for Slurm's scheduling)")
    print(f"cible  warm: job -> first line        {c:8.1f} ms   ratio {c / f:5.2f}x of srun (target <= 2x)")
    print(f"cible  cold: job -> first line        {k:8.1f} ms   ratio {k / b:5.2f}x of sbatch, {k / f:5.2f}x of srun")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--mb", type=int, default=200)
    parser.add_argument("--stage-runs", type=int, default=3)
    parser.add_argument("--tunnel", choices=("auto", "always"), default="always",
                        help="always: through the SSH tunnel, as a machine that cannot reach the server; auto: "
                             "directly (a loopback machine reaches the server's loopback)")
    parser.add_argument("--tunnel-client", choices=("openssh", "asyncssh"), default="openssh",
                        help="what carries the tunnel: the system's ssh in a process of its own (the default), or "
                             "asyncssh inside the server process (CIBLE_SSH_TUNNEL=asyncssh, the way before)")
    parser.add_argument("--each", action="store_true", help="print every run's numbers, not only the medians")
    parser.add_argument("--slurm", action="store_true", help="the Slurm part instead of the SSH one")
    args = parser.parse_args()
    if args.slurm:
        slurm_bench(args.runs)
        return
    if why := sshd_missing():
        sys.exit(f"bench/attached.py needs a loopback sshd: {why}")

    ensure_user(USER)
    root = Path(tempfile.mkdtemp(prefix="cible-bench-attached-"))
    root.chmod(0o755)
    key = keygen(root / "keys" / "id_ed25519")
    sshd = LoopbackSshd(root / "sshd", (HOST,), package_access())
    sshd.authorize(USER, key.with_suffix(".pub"))
    sshd.start()
    home = root / "ws"
    os.environ["CIBLE_HOME"] = str(home)
    os.environ.setdefault("CIBLE_TRACKING", "0")
    os.environ["CIBLE_SSH_TUNNEL"] = args.tunnel_client  # read by the server this starts
    from cible import MLClient, command

    client = MLClient(home=home)
    try:
        client.compute.begin_create_or_update({
            "name": "box", "type": "virtualmachine", "resource_id": HOST,
            "ssh_settings": {"admin_username": USER, "ssh_port": sshd.port, "ssh_private_key_file": str(key)},
            "cible": {"tunnel": args.tunnel}}).result()
        job = command(command=f"python3 -c '{FIRST_LINE}'", compute="box", environment={"image": "python:3.11"},
                      experiment_name="bench")
        big = home / "datastores" / "workspaceblobstore" / "bench" / "big.bin"
        big.parent.mkdir(parents=True, exist_ok=True)
        with open(big, "wb") as fh:
            for _ in range(args.mb):
                fh.write(os.urandom(1 << 20))
        staged = command(command=f"python3 -c '{FIRST_LINE}' ${{{{inputs.big}}}}", compute="box",
                         environment={"image": "python:3.11"}, experiment_name="bench",
                         inputs={"big": {"type": "uri_file",
                                         "path": "azureml://datastores/workspaceblobstore/paths/bench/big.bin"}})
        first_line_ms(client, job)  # the node starts (bundle and uv sent, tunnel made)
        first_line_ms(client, staged)  # the server hashes the file once
        for _ in range(3):  # warm-up
            ssh_floor(sshd, key), first_line_ms(client, job)
        floor, cible = [], []
        for _ in range(args.runs):  # interleaved, so machine noise hits both alike
            floor.append(ssh_floor(sshd, key))
            cible.append(first_line_ms(client, job))
        scp, stage = [], []
        for _ in range(args.stage_runs):
            scp.append(scp_once(sshd, key, big))
            stage.append(first_line_ms(client, staged) - statistics.median(cible))
    finally:
        subprocess.run([sys.executable, "-m", "cible", "server", "stop"], env=os.environ, capture_output=True)
        stop_agents(USER)
        sshd.stop()
        shutil.rmtree(root, ignore_errors=True)

    f, c = statistics.median(floor), statistics.median(cible)
    s, t = statistics.median(scp), statistics.median(stage)
    if args.each:
        print("dispatch ms (ssh, cible): " + "  ".join(f"{a:.0f},{b:.0f}" for a, b in zip(floor, cible)))
        print("staging ms (scp, cible):  " + "  ".join(f"{a:.0f},{b:.0f}" for a, b in zip(scp, stage)))
    client_said = f" ({args.tunnel_client})" if args.tunnel == "always" else ""
    print(f"runs: {args.runs} dispatches, {args.stage_runs} stagings of {args.mb} MB; tunnel {args.tunnel}"
          f"{client_said}; medians")
    print(f"floor  ssh host python3 -c           {f:8.1f} ms")
    print(f"cible  warm dispatch -> first line   {c:8.1f} ms   ratio {c / f:5.2f}x (target <= 2x)")
    print(f"floor  scp {args.mb} MB                    {s:8.1f} ms   {args.mb / s * 1e3:7.1f} MB/s")
    print(f"cible  staging {args.mb} MB (job input)    {t:8.1f} ms   {args.mb / t * 1e3:7.1f} MB/s   "
          f"throughput {s / t:5.2f}x of scp (target >= 0.8x)")


if __name__ == "__main__":
    main()
