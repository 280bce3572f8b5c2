"""The one shape of every reconciler pass: load → snapshot → decide → apply → act.

    snapshot = load(session)              one read transaction; the snapshot is plain, detached data
    snapshot = observe(snapshot)          outside any transaction: what the engines see (runner polls,
                                          the provider's node listing), added to the snapshot
    plan     = decide(snapshot, now)      PURE (cible.core.planning): no database, no clock, no I/O
    actions  = apply(session, snapshot, plan, now)
                                          one write transaction: every row the plan changes, through
                                          the transition functions; rows carry a version column, so a
                                          row changed since the load fails the whole apply (nothing
                                          half-written) and the next pass decides again
    act(actions)                          after commit, outside any transaction: provider calls,
                                          signals, waking agents, moving files

Everything decide needs is in the snapshot (quota headroom, start-failure history, an instance's
power, the engine's view): decide is never followed by code that edits its plan. Tests drive the
same `run_pass` with a real store and a frozen clock, so what they check is what runs.

A pass over records that must fail alone (the job reconciler: one bad job never holds up the
others) applies one transaction per record instead: each write checks that its row is still the
version the snapshot read (`check_unchanged`), so a row changed since the load is left to the
next pass exactly as `run_pass` leaves the whole plan.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar

from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from cible.server.store.db import Store

S = TypeVar("S")  # the snapshot
P = TypeVar("P")  # the plan
A = TypeVar("A")  # the actions to take after commit


class Pass(Protocol[S, P, A]):
    def load(self, session: Session, now: datetime) -> S | None:
        """Read what decide needs; None: nothing to do this pass."""

    def observe(self, snapshot: S, now: datetime) -> S:
        """Add what the engines see (no transaction is open); return the snapshot to decide on."""

    def decide(self, snapshot: S, now: datetime) -> P:
        """Pure: the plan from the snapshot alone."""

    def apply(self, session: Session, snapshot: S, plan: P, now: datetime) -> A:
        """Write the plan; return what to do once it is committed."""

    def act(self, actions: A) -> None:
        """Carry the actions out (idempotent: a crash before or during act is healed by the next pass)."""


@dataclass
class PassResult(Generic[S, P, A]):
    snapshot: S | None
    plan: P | None = None
    actions: A | None = None
    collided: bool = False  # a row changed under the apply: nothing was written, the next pass decides again


def run_pass(store: Store, step: Pass[S, P, A], now: datetime,
             on_collision: Callable[[StaleDataError], None] = lambda error: None) -> PassResult[S, P, A]:
    """One pass of `step`, in the shape above."""
    with store.session() as session:
        snapshot = step.load(session, now)
        session.expunge_all()  # the snapshot is detached: decide cannot lazy-load or write through it
    if snapshot is None:
        return PassResult(snapshot=None)
    snapshot = step.observe(snapshot, now)
    plan = step.decide(snapshot, now)
    try:
        with store.session() as session:
            actions = step.apply(session, snapshot, plan, now)
    except StaleDataError as error:  # an API write (or another server) won the race: decide again
        on_collision(error)
        return PassResult(snapshot=snapshot, plan=plan, collided=True)
    step.act(actions)
    return PassResult(snapshot=snapshot, plan=plan, actions=actions)


def check_unchanged(row: Any, version: int, what: str) -> None:
    """Refuse to write `row` (`what`, for the log) on a decision made from its state at `version`
    when another writer changed it since, or removed it (row None): the same StaleDataError as a
    write that meets another at flush, and the same outcome: nothing written, decided again."""
    if row is None or row.version != version:
        raise StaleDataError(f"{what} changed since this pass read it (version {version})")
