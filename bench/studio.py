"""The studio's jobs list with 10,000 jobs: server time of `GET /jobs` (a page of 50), in-process.

A fresh workspace store (SQLite in a temporary folder, or --db URL) gets 10,000 top-level jobs: a few
made through the REST API (so every stored field is real), then copied row by row in bulk with their
own names, experiments, computes, statuses and times. An app without reconcilers answers through
FastAPI's TestClient, signed in to the studio by a printed-link code as a browser would be.

Timed, interleaved, median of --runs each:
  floor   GET /api/v1/jobs?top=50      the same page as JSON (the REST route the CLI reads)
  page    GET /jobs                    the studio's list page (HTML), first page
  deep    GET /jobs?page=200           its last page (skip 9,950)
  filter  GET /jobs?status=Failed      a filtered page
and each against the floor. Target: the list page in <= 100 ms.

    .venv/bin/python bench/studio.py [--runs 30] [--jobs 10000] [--db postgresql://...]
"""

from __future__ import annotations

import argparse
import copy
import os
import shutil
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from statistics import median

TOKEN = "bench-token"
TARGET_MS = 100.0
STATUSES = ["Completed"] * 6 + ["Failed", "Canceled", "Running", "Queued"]
COMPUTES = ["local", "cpu-cluster", "gpu-cluster", "serverless"]
EXPERIMENTS = ["baseline", "sweep-lr", "ablation", "nightly", "cible-examples"]


def fill(app, count: int) -> None:
    """`count` jobs in the store: templates made through the API, copied in bulk."""
    from sqlalchemy import insert, select

    from cible.server.store.rows import JobRow, JobStatusRow

    with app.state.store.session() as session:
        templates = [{c.name: copy.deepcopy(getattr(row, c.name)) for c in JobRow.__table__.columns}
                     for row in session.scalars(select(JobRow)).all()]
    assert templates, "no template job was made"
    start = datetime.now(timezone.utc) - timedelta(days=30)
    rows, history = [], []
    for i in range(count):
        row = dict(templates[i % len(templates)])
        name = f"job-{i:05d}"
        status = STATUSES[i % len(STATUSES)]
        created = start + timedelta(seconds=240 * i)
        began = created + timedelta(seconds=5) if status not in ("Queued",) else None
        ended = began + timedelta(seconds=30 + i % 600) if began and status not in ("Running",) else None
        row.update(name=name, display_name=f"run {i}", experiment_name=EXPERIMENTS[i % len(EXPERIMENTS)],
                   status=status, target=COMPUTES[i % len(COMPUTES)], compute=f"azureml:{COMPUTES[i % len(COMPUTES)]}",
                   created_at=created, updated_at=ended or began or created, started_at=began, ended_at=ended,
                   version=1, archived=False, parent_job_name=None)
        rows.append(row)
        history.append({"job_name": name, "from_status": None, "to_status": "Queued", "reason": None, "at": created})
        if status != "Queued":
            history.append({"job_name": name, "from_status": "Queued", "to_status": status, "reason": None,
                            "at": ended or began})
    with app.state.store.session() as session:
        for chunk in range(0, len(rows), 1000):
            session.execute(insert(JobRow), rows[chunk:chunk + 1000])
        for chunk in range(0, len(history), 2000):
            session.execute(insert(JobStatusRow), history[chunk:chunk + 2000])


def timed_ms(client, url: str) -> float:
    t0 = time.perf_counter()
    response = client.get(url)
    took = (time.perf_counter() - t0) * 1e3
    assert response.status_code == 200, f"GET {url}: {response.status_code} {response.text[:300]}"
    return took


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--db", default=None, help="a database URL (default: SQLite in a temporary folder)")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="cible-bench-studio-"))
    os.environ["CIBLE_HOME"] = str(home)
    os.environ["CIBLE_TRACKING"] = "0"
    from fastapi.testclient import TestClient

    from cible.server.app import create_app
    from cible.server.settings import ServerSettings

    started = time.time()
    app = create_app(ServerSettings(home=home, database_url=args.db), TOKEN, reconcile=False)
    client = TestClient(app, headers={"Authorization": f"Bearer {TOKEN}"})
    try:
        for i, compute in enumerate(("local", "serverless")):
            made = client.put(f"/api/v1/jobs/template-{i}", json={
                "command": "python train.py --lr ${{inputs.lr}}", "compute": compute, "experiment_name": "baseline",
                "inputs": {"lr": 0.01}, "resources": {"instance_type": "Standard_DS1_v2"}})
            assert made.status_code in (200, 201), made.text
        t0 = time.perf_counter()
        fill(app, args.jobs)
        filled_s = time.perf_counter() - t0
        code = client.post("/api/v1/studio:sign-in-code").json()["code"]
        signed = client.get(f"/sign-in?code={code}", follow_redirects=False)
        assert signed.status_code == 303 and "cible_studio" in signed.headers.get("set-cookie", ""), signed.text
        total = client.get("/api/v1/jobs?top=1").json()
        store = args.db.split(":", 1)[0] if args.db else "SQLite"
        print(f"studio jobs list: {args.jobs} jobs inserted in {filled_s:.1f} s "
              f"(the API counts {total.get('count', '?')} top-level jobs); store: {store}")

        last_page = -(-args.jobs // 50)
        urls = {
            "floor": "/api/v1/jobs?top=50",
            "page": "/jobs",
            "deep": f"/jobs?page={last_page}",
            "filter": "/jobs?status=Failed",
        }
        page = client.get("/jobs")
        if page.status_code != 200:
            print(f"GET /jobs answered {page.status_code}: the studio's jobs page is not there yet")
            sys.exit(1)
        rows = page.text.count('data-testid="job-row"')
        print(f"GET /jobs: {len(page.content) / 1024:.0f} KiB of HTML, {rows} job rows")
        for url in urls.values():  # warm-up: templates compiled, caches filled
            timed_ms(client, url)
        times: dict[str, list[float]] = {key: [] for key in urls}
        for _ in range(args.runs):
            for key, url in urls.items():
                times[key].append(timed_ms(client, url))
        floor = median(times["floor"])
        print(f"\nmedian of {args.runs}, in-process (TestClient), server time plus the in-process transport")
        print(f"   floor  GET {urls['floor']:<28} {floor:8.1f} ms")
        for key in ("page", "deep", "filter"):
            ms = median(times[key])
            print(f"   {key:<6} GET {urls[key]:<28} {ms:8.1f} ms   ratio {ms / floor:5.1f}x   "
                  f"max {max(times[key]):6.1f} ms")
        page_ms = median(times["page"])
        print(f"\njobs list page of 50 among {args.jobs}: {page_ms:.1f} ms; target <= {TARGET_MS:.0f} ms: "
              f"{'met' if page_ms <= TARGET_MS and median(times['deep']) <= TARGET_MS else 'NOT met'}")
    finally:
        client.close()
        app.state.store.close()
        shutil.rmtree(home, ignore_errors=True)
    print(f"\ntotal {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
