"""The server remembers MLflow experiment ids by name, the EXPERIMENT_IDS_KEPT most recently used
only: a workspace with ever more experiment names does not grow the server without limit."""

from __future__ import annotations

from pathlib import Path

import pytest

from cible.server import app as app_module
from cible.server.app import EXPERIMENT_IDS_KEPT, create_app
from cible.server.settings import ServerSettings
from cible.server.tracking import TrackingServer


def test_experiment_ids_are_kept_for_the_most_recently_used_names_only(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch):
    asked: list[str] = []
    ready = [False]

    def experiment_id(uri: str, token: str | None, name: str, **_: object) -> str:
        asked.append(name)
        return f"id-{name}"

    monkeypatch.setattr(app_module, "experiment_id", experiment_id)
    monkeypatch.setattr(TrackingServer, "is_ready", property(lambda self: ready[0]))
    monkeypatch.setattr(TrackingServer, "url", property(lambda self: "http://127.0.0.1:1"))
    app = create_app(ServerSettings(home=tmp_path / "ws", database_url=f"sqlite:///{tmp_path / 'c.db'}",
                                    tracking=True), "tok", reconcile=False)
    try:
        lookup = app.state.jobs.plans.experiment_lookup
        assert lookup("first") is None and asked == []  # MLflow not up: nothing asked, nothing kept
        ready[0] = True
        assert lookup("first") == "id-first" and lookup("first") == "id-first" and asked == ["first"]
        for i in range(EXPERIMENT_IDS_KEPT - 1):
            lookup(f"exp-{i}")
        assert lookup("first") == "id-first" and asked.count("first") == 1  # still among the kept
        lookup("one-more")  # the least recently used name (exp-0) is forgotten
        assert lookup("exp-1") == "id-exp-1" and asked.count("exp-1") == 1
        assert lookup("exp-0") == "id-exp-0" and asked.count("exp-0") == 2
    finally:
        app.state.store.close()
