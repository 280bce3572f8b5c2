"""The tables and the summary of bench/serving.py, from its cell records
({round, server, rows, c, rps, p50_ms, p99_ms, non2xx, socket_errors, ratio, added_p50_ms} or {skipped})."""

from __future__ import annotations

import statistics

CELLS = ((1, 1), (1, 32), (1000, 1), (1000, 32))
REPLICAS = ("replica-json", "replica-orjson")
GATEWAYS = ("gateway-json", "gateway-orjson")
PEERS = {"azmlinfsrv": "Azure ML inference server; perf-anchors: 0.26-0.35x",
         "mlflow": "MLflow models serve; perf-anchors: 0.09-0.23x"}
HEAD = (f"  {'server':<32} {'rows':>5} {'c':>3} {'req/s':>8} {'x floor':>8} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'+p50 ms':>8} {'non-2xx':>8} {'CPU ms/req':>10} {'others':>7}")
LEGEND = ("  x floor: req/s over the floor's in the same round; +p50 ms: p50 minus the floor's; CPU ms/req: CPU time "
          "of the server's processes\n  per request (for the gateway: the cible server, gateway included, and the "
          "replica); others: CPU of the rest\n  of the machine during the cell, % of all CPUs (other work on a shared "
          "machine: high values make that cell's req/s unreliable)")


def _f(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _row(label: str, cell: dict) -> str:
    return (f"  {label:<32} {cell['rows']:>5} {cell['c']:>3} {cell['rps']:>8.1f} {_f(cell.get('ratio'), '7.2f'):>7}x "
            f"{_f(cell['p50_ms'], '8.2f')} {_f(cell['p99_ms'], '8.1f')} {_f(cell.get('added_p50_ms'), '+8.2f'):>8} "
            f"{cell['non2xx']:>8} {_f(cell.get('server_ms_per_request'), '10.3f')} "
            f"{_f(cell.get('others_pct'), '6.0f'):>6}%" + (f"  socket errors: {cell['socket_errors']}"
                                                           if cell.get("socket_errors") else ""))


def _table(rows: list[dict], labels: dict[str, str]) -> None:
    print(LEGEND)
    print(HEAD)
    last = None
    for cell in rows:
        if cell["server"] != last and last is not None:
            print()
        last = cell["server"]
        if "skipped" in cell:
            print(f"  {labels[cell['server']]:<32} skipped: {cell['skipped']}")
        else:
            print(_row(labels[cell["server"]], cell))


def print_round(cells: list[dict], rnd: int, labels: dict[str, str]) -> None:
    print(f"\nround {rnd}")
    _table(cells, labels)


def aggregate(cells: list[dict], servers: list[str]) -> list[dict]:
    """Per server and cell: medians over rounds of req/s, p50, p99 and of the per-round ratios; non-2xx
    summed. A server skipped in every round keeps one skipped record."""
    out = []
    for server in servers:
        mine = [c for c in cells if c["server"] == server]
        measured = [c for c in mine if "rps" in c]
        if not measured:
            if mine:
                out.append(mine[0])
            continue
        for rows, conc in CELLS:
            same = [c for c in measured if c["rows"] == rows and c["c"] == conc]
            if not same:
                continue

            def med(key: str, same: list[dict] = same) -> float | None:
                values = [c[key] for c in same if c.get(key) is not None]
                return round(statistics.median(values), 3) if values else None

            out.append({"server": server, "rows": rows, "c": conc, "rounds": len(same), "rps": med("rps"),
                        "p50_ms": med("p50_ms"), "p99_ms": med("p99_ms"), "ratio": med("ratio"),
                        "added_p50_ms": med("added_p50_ms"), "non2xx": sum(c["non2xx"] for c in same),
                        "server_ms_per_request": med("server_ms_per_request"), "others_pct": med("others_pct"),
                        "socket_errors": "; ".join(c["socket_errors"] for c in same if c["socket_errors"])})
    return out


def print_medians(cells: list[dict], servers: list[str], labels: dict[str, str], rounds: int) -> None:
    if rounds > 1:
        print(f"\nmedians of {rounds} rounds (ratios: the median of each round's ratio)")
        _table(aggregate(cells, servers), labels)


def summary(cells: list[dict], servers: list[str], labels: dict[str, str]) -> list[dict]:
    """Prints the targets of issue 16 against the (median) cells; returns one record per check."""
    agg = {(c["server"], c["rows"], c["c"]): c for c in aggregate(cells, servers) if "rps" in c}
    checks: list[dict] = []

    def check(target: str, server: str, what: str, value: float | None, met: bool | None, fmt: str) -> None:
        checks.append({"target": target, "server": server, "what": what, "value": value, "met": met})
        verdict = "" if met is None else ("met" if met else "NOT MET")
        print(f"    {labels[server]:<32} {what:<18} {_f(value, fmt):>8}  {verdict}")

    def ratio_check(target: str, server: str, cells_: tuple, bar: float | None) -> None:
        for rows, conc in cells_:
            cell = agg.get((server, rows, conc))
            if cell is not None:
                value = cell["ratio"]
                met = None if bar is None or value is None else value >= bar
                check(target, server, f"{rows} row(s), c={conc}", value, met, ".2f")

    print("\nsummary against issue 16's targets (ratios: req/s over the floor's in the same round)")
    print("  a replica >= 0.9x the floor (every cell; a json.loads score.py cannot reach it with 1000 rows: "
          "the floor parses with orjson)")
    for server in (s for s in REPLICAS if s in servers):
        ratio_check("replica >= 0.9x floor", server, CELLS, 0.9)
    print("  through the gateway >= 0.8x the floor at c=32 (c=1 shown, no target)")
    for server in (s for s in GATEWAYS if s in servers):
        ratio_check("gateway >= 0.8x floor at c=32", server, ((1, 32), (1000, 32)), 0.8)
        ratio_check("gateway at c=1 (no target)", server, ((1, 1), (1000, 1)), None)
    print("  added p50 <= 0.5 ms over the floor (1 row, c=1; 1000 rows shown, no target); the gateway's own hop = "
          "its p50 - the replica's")
    for server in (s for s in (*REPLICAS, *GATEWAYS) if s in servers):
        for rows in (1, 1000):
            cell = agg.get((server, rows, 1))
            if cell is not None:
                value = cell["added_p50_ms"]
                met = (value <= 0.5) if rows == 1 and value is not None else None
                check("added p50 <= 0.5 ms", server, f"{rows} row(s), +ms", value, met, "+.2f")
        if server in GATEWAYS:
            direct, via = agg.get((server.replace("gateway", "replica"), 1, 1)), agg.get((server, 1, 1))
            if direct and via and direct["p50_ms"] is not None and via["p50_ms"] is not None:
                check("gateway hop p50 (info)", server, "hop, 1 row, +ms", round(via["p50_ms"] - direct["p50_ms"], 3),
                      None, "+.2f")
    print("  no collapse at c=32: req/s at c=32 >= the same server's at c=1 (value: c=32 / c=1)")
    for server in servers:
        for rows in (1, 1000):
            one, many = agg.get((server, rows, 1)), agg.get((server, rows, 32))
            if one and many and one["rps"]:
                value = round(many["rps"] / one["rps"], 3)
                check("no collapse at c=32", server, f"{rows} row(s)", value, value >= 1.0, ".2f")
    errors = {s: sum(c["non2xx"] for k, c in agg.items() if k[0] == s) for s in servers}
    print("  no errors: non-2xx answers over all cells")
    for server in servers:
        if any(k[0] == server for k in agg):
            check("no non-2xx", server, "non-2xx", errors[server], errors[server] == 0, "d")
    print("  CPU per request of the server's processes (robust to other work on the machine, unlike req/s): "
          "floor's CPU ms/req over each one's, no target")
    for server in servers:
        for rows, conc in CELLS:
            cell, ref = agg.get((server, rows, conc)), agg.get(("floor", rows, conc))
            if server != "floor" and cell and ref and cell.get("server_ms_per_request") and \
                    ref.get("server_ms_per_request"):
                check("CPU efficiency vs floor (info)", server, f"{rows} row(s), c={conc}",
                      round(ref["server_ms_per_request"] / cell["server_ms_per_request"], 3), None, ".2f")
    print("  the peers (no target)")
    for server in (s for s in PEERS if s in servers):
        print(f"    ({PEERS[server]})")
        ratio_check("peer ratio (info)", server, CELLS, None)
    skipped = [c for c in cells if "skipped" in c]
    for cell in skipped:
        print(f"  skipped in round {cell['round']}: {labels[cell['server']]}: {cell['skipped']}")
    missed = [c for c in checks if c["met"] is False]
    print(f"  {len(checks) - len(missed) - sum(c['met'] is None for c in checks)} checks met, {len(missed)} not met")
    return checks
