"""Opening a workspace store that is already at the newest schema, in a fresh process, as every
server start does: import the store, connect, confirm the revision (Store.migrate on a store at head).

Floor: the same process with SQLAlchemy alone: import it, connect, read `alembic_version`. The
ratio is what cible's check costs on top of the one query it needs. Interleaved, median of --runs.

    .venv/bin/python bench/store_open.py [--runs 15]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path
from statistics import median

CIBLE = """
import time
t = time.perf_counter()
from cible.server.store.db import Store
store = Store({url!r})
store.migrate()
print(time.perf_counter() - t)
"""
FLOOR = """
import time
t = time.perf_counter()
from sqlalchemy import create_engine
with create_engine({url!r}).connect() as conn:
    conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
print(time.perf_counter() - t)
"""


def timed(code: str, url: str) -> float:
    out = subprocess.run([sys.executable, "-c", code.format(url=url)], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{Path(folder) / 'store.db'}"
        timed(CIBLE, url)  # migrated once: every timed open finds it at head
        cible, floor = [], []
        for _ in range(args.runs):
            cible.append(timed(CIBLE, url))
            floor.append(timed(FLOOR, url))
    c, f = median(cible), median(floor)
    print(f"store open at head: cible {c * 1000:.0f} ms, floor {f * 1000:.0f} ms, ratio {c / f:.2f}x")


if __name__ == "__main__":
    main()
