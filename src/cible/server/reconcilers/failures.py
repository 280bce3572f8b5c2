"""Failures kept to the record that caused them.

A reconciler pass handles many records (jobs, computes, nodes). One whose handling raises must
not stop the others, must not write the same traceback to the log on every pass, and must not be
retried at full speed forever. `Troubles` remembers, per record, how many times in a row its
handling failed and when it may be tried again (1, 2, 4 … 60 s); the traceback is logged the
first time only. It lives in memory: a restarted server tries each record afresh, once more.

A database that cannot be reached is nobody's record: `DATABASE_DOWN` errors are left to end the
pass (the loop retries it), rather than be blamed on whichever record was being handled.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.exc import InterfaceError, OperationalError

DATABASE_DOWN = (OperationalError, InterfaceError)
BACKOFF_CAP_S = 60.0
MAX_MESSAGE = 500  # an error message stored on a record (a path may be thousands of characters)


@dataclass(frozen=True)
class Trouble:
    count: int  # failures in a row
    retry_at: datetime
    message: str  # "OSError: [Errno 36] File name too long: …", fit to store

    def wait_s(self, now: datetime) -> float:
        return max(0.0, (self.retry_at - now).total_seconds())


class Troubles:
    def __init__(self, log: logging.Logger) -> None:
        self._log = log
        self._by_key: dict[Hashable, Trouble] = {}

    def backing_off(self, key: Hashable, now: datetime) -> bool:
        """True while `key` failed and its next try is not yet due: leave it alone this pass."""
        trouble = self._by_key.get(key)
        return trouble is not None and now < trouble.retry_at

    def failed(self, key: Hashable, error: BaseException, now: datetime, what: str) -> Trouble:
        """Record that handling `key` (named `what` in the log) raised `error`."""
        previous = self._by_key.get(key)
        count = (previous.count if previous else 0) + 1
        trouble = Trouble(count, now + timedelta(seconds=min(2.0 ** (count - 1), BACKOFF_CAP_S)), describe(error))
        self._by_key[key] = trouble
        if previous is None:
            self._log.error("%s failed; the others go on, it is tried again on its own", what, exc_info=error)
        else:
            self._log.warning("%s failed again (%d in a row): %s", what, count, trouble.message)
        return trouble

    def succeeded(self, key: Hashable) -> None:
        self._by_key.pop(key, None)

    def get(self, key: Hashable) -> Trouble | None:
        return self._by_key.get(key)


def describe(error: BaseException) -> str:
    """`Type: message`, storable anywhere: no NUL or other control character (PostgreSQL's text
    refuses NUL), at most MAX_MESSAGE characters."""
    text = f"{type(error).__name__}: {error}"
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"
