"""Every error the server answers with maps back to its own exception class on the client."""

from __future__ import annotations

import pytest

from cible.core.errors import (
    CibleError,
    StoreUnavailableError,
    TrackingUnavailableError,
    error_from_dict,
)
from cible.server.store.db import store_error


@pytest.mark.parametrize("cls", [StoreUnavailableError, TrackingUnavailableError])
def test_a_503_of_the_server_is_its_class_on_the_client(cls: type[CibleError]) -> None:
    made = error_from_dict(cls("the store is read-only", details={"retry": True}).to_dict())
    assert type(made) is cls and made.message == "the store is read-only" and made.http_status == 503


def test_a_full_disk_is_a_store_error_the_client_can_catch() -> None:
    import sqlite3

    from sqlalchemy.exc import OperationalError

    server_side = store_error(OperationalError("INSERT …", {}, sqlite3.OperationalError("database or disk is full")))
    assert isinstance(error_from_dict(server_side.to_dict()), StoreUnavailableError)


def test_an_unknown_code_is_a_plain_cible_error() -> None:
    assert type(error_from_dict({"code": "SomethingNew", "message": "x"})) is CibleError
