"""Per-deployment request metrics over a rolling window, in bounded memory.

One ring of one-second slots (300 slots = the 5 minutes `stats` reports over). Each slot holds the
second it belongs to, the requests and errors that finished in it, the in-flight area (the integral
of in-flight requests over time, for the autoscaler's mean) and a sparse log-scale latency histogram
(bins 5 % wide, so p50/p99 are within ~2.5 % of the true value). A slot is reset when its second comes
round again, so memory never grows with traffic: at most 300 small dicts per deployment.

The recording calls are on the gateway's request path, so they do a few integer and dict operations
and take `now` from the caller (one clock read per request serves both the latency and the slot).
Everything here runs on the gateway's event-loop thread; `Gateway.stats` hops onto it to read.
"""

from __future__ import annotations

import math

WINDOW_S = 300
_BINS_PER_E = 20  # bins per factor e of latency: exp(1/20) = 5 % wide
_LOG = math.log


def _bin(latency_ms: float) -> int:
    return int(_LOG(latency_ms if latency_ms > 1e-3 else 1e-3) * _BINS_PER_E)


def _bin_value(b: int) -> float:
    return math.exp((b + 0.5) / _BINS_PER_E)


class DeploymentMetrics:
    """Counters, latencies and the in-flight integral of one deployment."""

    __slots__ = ("_n", "_sec", "_count", "_errors", "_area", "_hist", "_created", "_last_t", "in_flight", "queued")

    def __init__(self, now: float, window_s: int = WINDOW_S) -> None:
        n = int(window_s)
        self._n = n
        self._sec = [-1] * n
        self._count = [0] * n
        self._errors = [0] * n
        self._area = [0.0] * n
        self._hist: list[dict[int, int] | None] = [None] * n
        self._created = now
        self._last_t = now
        self.in_flight = 0
        self.queued = 0

    def _slot(self, sec: int) -> int:
        i = sec % self._n
        if self._sec[i] != sec:
            self._sec[i] = sec
            self._count[i] = 0
            self._errors[i] = 0
            self._area[i] = 0.0
            self._hist[i] = None
        return i

    def _accrue(self, now: float) -> None:
        """Credit in-flight × elapsed time to the seconds it covered."""
        last = self._last_t
        if now <= last:
            return
        self._last_t = now
        level = self.in_flight
        if not level:
            return
        s, e = int(last), int(now)
        if s == e:
            self._area[self._slot(s)] += level * (now - last)
            return
        if e - s > self._n:  # longer than the window: only its last part can still be read
            s = e - self._n
            last = float(s)
        self._area[self._slot(s)] += level * (s + 1 - last)
        for sec in range(s + 1, e):
            self._area[self._slot(sec)] += float(level)
        self._area[self._slot(e)] += level * (now - e)

    def started(self, now: float) -> None:
        self._accrue(now)
        self.in_flight += 1

    def finished(self, now: float, latency_s: float, error: bool) -> None:
        """One request done (`started` was called for it)."""
        self._accrue(now)
        self.in_flight -= 1
        self.record(now, latency_s, error)

    def record(self, now: float, latency_s: float, error: bool) -> None:
        """One request done that never held a replica slot (429, 503...): counted, not in flight."""
        i = self._slot(int(now))
        self._count[i] += 1
        if error:
            self._errors[i] += 1
        h = self._hist[i]
        if h is None:
            h = self._hist[i] = {}
        b = _bin(latency_s * 1000.0)
        h[b] = h.get(b, 0) + 1

    def _live_slots(self, now: float, window_s: float) -> list[int]:
        first = int(now - window_s) + 1
        last = int(now)
        return [i for i in range(self._n) if first <= self._sec[i] <= last]

    def mean_in_flight(self, now: float, window_s: float) -> float:
        """Mean number of requests in flight over the last `window_s` seconds (at most the ring's length)."""
        window_s = max(1e-3, min(float(window_s), float(self._n - 1)))
        self._accrue(now)
        start = now - window_s
        area = 0.0
        for i in range(self._n):
            sec = self._sec[i]
            if sec < int(start) or sec > now:
                continue
            if sec == int(start):  # the oldest second only partly in the window: take its share
                area += self._area[i] * (sec + 1 - start)
            else:
                area += self._area[i]
        return area / window_s

    def snapshot(self, now: float, window_s: float = WINDOW_S) -> dict[str, float | int]:
        window_s = min(float(window_s), float(self._n))
        self._accrue(now)
        count = errors = 0
        merged: dict[int, int] = {}
        for i in self._live_slots(now, window_s):
            count += self._count[i]
            errors += self._errors[i]
            h = self._hist[i]
            if h:
                for b, c in h.items():
                    merged[b] = merged.get(b, 0) + c
        span = max(1.0, min(window_s, now - self._created))
        p50 = p99 = 0.0
        if merged:
            total = sum(merged.values())
            p50 = _percentile(merged, total, 0.50)
            p99 = _percentile(merged, total, 0.99)
        return {
            "requests_per_s": round(count / span, 3),
            "p50_ms": round(p50, 3),
            "p99_ms": round(p99, 3),
            "errors": errors,
            "in_flight": self.in_flight,
            "queued": self.queued,
        }


def _percentile(hist: dict[int, int], total: int, q: float) -> float:
    rank = max(1, math.ceil(q * total))
    seen = 0
    for b in sorted(hist):
        seen += hist[b]
        if seen >= rank:
            return _bin_value(b)
    return _bin_value(max(hist))
