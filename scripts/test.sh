#!/usr/bin/env bash
# Install cible with its test dependencies and run every test (unit, integration, e2e).
# Starts a throwaway PostgreSQL on 127.0.0.1 so the store and API tests run against it too.
# Usage: bash scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
# Everything goes into the project's venv, never into the system Python: a stock Debian/Ubuntu
# Python refuses system-wide pip installs (PEP 668), and uv comes from PyPI into the venv too.
if [ ! -x .venv/bin/python ]; then
  # A failed attempt leaves a .venv without pip behind: removed, so that the next run starts over.
  if ! "$PY" -m venv .venv; then
    rm -rf .venv
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then  # Debian splits venv out of python3
      (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null)
      "$PY" -m venv .venv || { rm -rf .venv; exit 1; }
    else
      echo "could not make a virtual environment with $PY; on Debian/Ubuntu: sudo apt-get install python3-venv" >&2
      exit 1
    fi
  fi
fi
if ! .venv/bin/python -m pip --version >/dev/null 2>&1; then  # a venv made by `uv venv` has no pip
  .venv/bin/python -m ensurepip -q 2>/dev/null || "$PY" -m uv pip install -q --python .venv/bin/python pip
fi
.venv/bin/python -m uv --version >/dev/null 2>&1 || .venv/bin/python -m pip install -q "uv>=0.7"
.venv/bin/python -m uv pip install -q --python .venv/bin/python -e '.[test,ray]'
# torch for the torch.distributed test, through pip: it takes the CPU wheel where the machine keeps
# one (pip's find-links, e.g. /opt/wheels), else the package index. (uv would not look on disk and
# would fetch the multi-GB CUDA build.)
if ! .venv/bin/python -c 'import torch' 2>/dev/null; then
  .venv/bin/python -m pip install -q torch==2.13.0 \
    || echo "torch could not be installed: the torch.distributed test will be skipped (or fail, under CI)"
fi
# Byte-compiled once, here: where PYTHONDONTWRITEBYTECODE is set (it is on this project's machines) no import
# writes a .pyc, and every Python process the tests start (each CLI call, server, agent) would compile
# its imports from source again: 0.3-0.5 s of CPU per CLI call. Half a minute on 2 cores.
.venv/bin/python -m compileall -q -j 0 .venv/lib src >/dev/null 2>&1 || true

# --- PostgreSQL: a private cluster for this run -------------------------------
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$pg_bin" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) || true
  pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
fi
pg_dir=""
stop_pg() {
  if [ -n "$pg_dir" ] && [ -f "$pg_dir/data/postmaster.pid" ]; then
    run_pg "$pg_bin/pg_ctl" -D "$pg_dir/data" -m fast stop >/dev/null 2>&1 || true
  fi
  [ -n "$pg_dir" ] && rm -rf "$pg_dir"
}
run_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
if [ -n "$pg_bin" ] && [ -z "${CIBLE_TEST_POSTGRES_URL:-}" ]; then
  pg_dir=$(mktemp -d /tmp/cible-pg.XXXXXX)
  [ "$(id -u)" = 0 ] && chown postgres:postgres "$pg_dir"
  trap stop_pg EXIT
  port=$(.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  run_pg "$pg_bin/initdb" -D "$pg_dir/data" -A trust -U postgres --no-sync -E UTF8 >/dev/null
  run_pg "$pg_bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/pg.log" -w -o \
    "-c listen_addresses=127.0.0.1 -p $port -k $pg_dir -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
    start >/dev/null
  export CIBLE_TEST_POSTGRES_URL="postgresql://postgres@127.0.0.1:$port/postgres"
  echo "PostgreSQL for the tests: $CIBLE_TEST_POSTGRES_URL"
fi
if [ -z "${CIBLE_TEST_POSTGRES_URL:-}" ] && [ "${CI:-}" = "true" ]; then
  echo "CI needs PostgreSQL for the store and API tests, and none could be installed" >&2
  exit 1
fi

# --- Chromium: the studio's browser tests (tests/browser) drive the distribution's package --------
# Playwright (a test extra) never downloads a browser here: no `playwright install`.
if ! command -v chromium >/dev/null && [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
      || echo "chromium could not be installed: the browser tests will be skipped (or fail, under CI)" >&2
  else
    echo "no chromium: the browser tests will be skipped (or fail, under CI); on Debian: sudo apt-get install chromium" >&2
  fi
fi

# --- sshd: the attached-machine tests log in over SSH to 127.0.0.x (OpenSSH's server, started by them) ---
if [ ! -x /usr/sbin/sshd ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server >/dev/null) \
      || echo "openssh-server could not be installed: the attach tests will be skipped (or fail, under CI)" >&2
  else
    echo "no /usr/sbin/sshd: the attach tests will be skipped (or fail, under CI); on Debian: sudo apt-get install openssh-server" >&2
  fi
fi

# --- Slurm: the Slurm tests start a slurmctld, three slurmd nodes and a munged of their own -----------
# (cible.testing.slurm, in a private folder with its own munge key: nothing of the machine's Slurm is used)
if ! command -v slurmctld >/dev/null && [ ! -x /usr/sbin/slurmctld ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null) \
      || echo "slurm-wlm could not be installed: the Slurm tests will be skipped (or fail, under CI)" >&2
  else
    echo "no slurmctld: the Slurm tests will be skipped (or fail, under CI); on Debian: sudo apt-get install slurm-wlm munge" >&2
  fi
fi

# --- Slurm accounting: the QOS tests (tests/e2e/test_slurm_qos.py) start a MariaDB and a slurmdbd of their own ---
# (cible.testing.slurm_accounting: own datadir, socket and port; the package's MariaDB is never started:
# no systemd, and invoke-rc.d/policy-rc.d refuse to start services in the container)
if [ ! -x /usr/sbin/slurmdbd ] || [ ! -x /usr/sbin/mariadbd ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mariadb-server slurmdbd >/dev/null) \
      || echo "mariadb-server/slurmdbd could not be installed: the Slurm QOS tests will be skipped (or fail, under CI)" >&2
  else
    echo "no slurmdbd or mariadbd: the Slurm QOS tests will be skipped (or fail, under CI); on Debian: sudo apt-get install mariadb-server slurmdbd" >&2
  fi
fi

# --- Java: the Spark tests start Spark's standalone master, workers and spark-submit (JVMs, from pyspark) ------
# Java 17: what every Spark line cible runs (3.4 to 4.x) supports.
if ! command -v java >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
       openjdk-17-jre-headless >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
       --no-install-recommends default-jre-headless >/dev/null) \
      || echo "no Java runtime could be installed: the Spark tests will be skipped (or fail, under CI)" >&2
  else
    echo "no java: the Spark tests will be skipped (or fail, under CI); on Debian: sudo apt-get install openjdk-17-jre-headless" >&2
  fi
fi

# --- In parallel: 2 pytest-xdist workers, one per core of the CI machine (CIBLE_TEST_WORKERS=0: serially) -----
# `--dist loadgroup` with the groups tests/conftest.py makes: the tests of one machine-wide resource, and each
# e2e/integration module with its server (whose tests build on one another, e.g. an endpoint made by the
# module's first test), each run on one worker, in order; the unit tests spread test by test and fill the
# workers at the end. Its tests take ~28 min here (Dec 2026) against over an hour serially (over CI's 45-minute budget).
# Tests that bound a wait do so with room for the doubled load (a bound says "never hangs", not "is fast":
# speed is measured in bench/). 4 workers on 2 cores were tried too: the CPU-bound e2e tests then missed
# their timeouts (a Ray head that did not start). Arguments win: `-n 0`, `-n 2`, `--dist load`, `-p no:xdist`
# or `--pdb` replace these.
xdist_n=(-n "${CIBLE_TEST_WORKERS:-2}")
xdist_dist=(--dist loadgroup)
for arg in "$@"; do
  case "$arg" in
    -n|-n[0-9al]*|--numprocesses|--numprocesses=*) xdist_n=() ;;
    --dist|--dist=*) xdist_dist=() ;;
    no:xdist|-pno:xdist|--pdb|--trace) xdist_n=(); xdist_dist=() ;;
  esac
done

set +e
.venv/bin/python -m pytest "${xdist_n[@]}" "${xdist_dist[@]}" "$@"
status=$?
set -e
exit $status
