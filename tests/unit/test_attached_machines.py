"""AttachedMachines reads the store at most once a second, and at once after a compute changed
(`forget`, which ComputeService's on_change calls): a job submitted right after an attach finds
the machine, not "none attached"."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from cible.core.models.records import ComputeStatus
from cible.server.services.attach import AttachedMachines
from cible.server.store.db import Store
from cible.server.store.rows import ComputeRow

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def add_cluster(store: Store, name: str, hosts: list[str]) -> None:
    spec = {"name": name, "type": "amlcompute", "size": "Standard_DS1_v2", "max_instances": 1,
            "cible": {"provider": "ssh", "hosts": hosts}}
    with store.session() as session:
        session.add(ComputeRow(name=name, compute_type="amlcompute", spec=spec, provisioning_state="Succeeded",
                               created_at=T0, updated_at=T0, observed=ComputeStatus()))


def test_a_compute_made_since_the_last_read_is_seen_once_forgotten(tmp_path: Path):
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    store.migrate()
    attached = AttachedMachines(store)
    assert attached.hosts_of("c") == ()
    add_cluster(store, "c", ["m1"])
    assert attached.hosts_of("c") == ()  # read within the second: not seen yet
    attached.forget()
    assert attached.hosts_of("c") == ("m1",)
