"""The GPUs of this machine: found, handed to nodes, and read while in use.

Found through NVML (`nvidia-ml-py`), else the `/dev/nvidiaN` files (no UUID, model or memory then),
else none. `CIBLE_FAKE_GPUS` replaces both with a device list, for tests and for trying a GPU size's
placement on a machine without one: inline JSON (`[{"uuid": "GPU-a", "name": "NVIDIA H100"}, ...]`)
or the path of a JSON file, read again at each call so that a test can change a GPU's utilisation.

Decisions:
- A node is told its GPUs by UUID where there is one (CUDA_VISIBLE_DEVICES=GPU-…): CUDA's own device
  order need not be NVML's, and a UUID means the same GPU to both. Without UUIDs, by index with
  CUDA_DEVICE_ORDER=PCI_BUS_ID, the order of the /dev files.
- A node without GPUs gets CUDA_VISIBLE_DEVICES="" (CUDA then sees none) and NVIDIA_VISIBLE_DEVICES=void
  (a container started from it gets none either).
- The server's own CUDA_VISIBLE_DEVICES, when set, says which GPUs this machine lends to cible.
- Overcommitted (a size with more GPUs than the machine has free), a node gets the free GPUs first, then
  shares held ones, never more than the machine has: a GPU is not split, only shared.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ENV_FAKE = "CIBLE_FAKE_GPUS"
NONE_VISIBLE = {"CUDA_VISIBLE_DEVICES": "", "NVIDIA_VISIBLE_DEVICES": "void"}
NVIDIA_MAJOR = 195  # the character device major of /dev/nvidiaN (its minor is N)


@dataclass(frozen=True)
class Gpu:
    index: int  # NVML's (PCI bus) order
    uuid: str  # "GPU-…"; "nvidiaN" when only the /dev file is known
    name: str = "NVIDIA GPU"
    memory_mb: int | None = None
    minor: int | None = None  # of /dev/nvidia<minor>: what a cgroup's device rules name

    @property
    def ident(self) -> str:
        """What CUDA_VISIBLE_DEVICES names this GPU by."""
        return self.uuid if self.uuid.startswith(("GPU-", "MIG-")) else str(self.index)


class GpuError(Exception):
    """GPUs a node cannot be given; `.message` says which are held by whom and how to go on."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# -- finding them -------------------------------------------------------------------------------------
def discover(dev: str = "/dev") -> list[Gpu]:
    """This machine's GPUs lent to cible, in index order (see the module's docstring for the sources)."""
    if os.environ.get(ENV_FAKE):
        found = _fake()
    else:  # no /dev/nvidiaN, no NVIDIA driver: NVML is not even imported (~50 ms an agent's start would pay)
        files = _dev_files(dev)
        found = (_nvml() or files) if files else []
    return _lent(found, os.environ.get("CUDA_VISIBLE_DEVICES"))


def _fake() -> list[Gpu]:
    return [Gpu(index=int(row.get("index", i)), uuid=str(row.get("uuid") or f"GPU-fake-{i}"),
                name=str(row.get("name", "NVIDIA GPU")), memory_mb=row.get("memory_mb"), minor=row.get("minor"))
            for i, row in enumerate(_fake_rows())]


def _fake_rows() -> list[dict[str, Any]]:
    raw = os.environ.get(ENV_FAKE, "").strip()
    try:
        rows = json.loads(raw if raw.startswith(("[", "{")) else Path(raw).read_text())
    except (OSError, ValueError) as exc:
        raise GpuError(f"{ENV_FAKE} is neither a JSON list of GPUs nor a file holding one: {exc}") from None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise GpuError(f"{ENV_FAKE} must be a JSON list of objects (uuid, name, memory_mb, ...)")
    return rows


_nvml_lock = threading.Lock()
_nvml_state: dict[str, Any] = {}


def _pynvml() -> Any:
    """pynvml, initialised once per process; None where NVML cannot be loaded (no driver, no GPU)."""
    with _nvml_lock:
        if "module" not in _nvml_state:
            try:
                import pynvml

                pynvml.nvmlInit()
                _nvml_state["module"] = pynvml
            except Exception:  # noqa: BLE001  (ImportError, NVMLError_LibraryNotFound, _DriverNotLoaded …)
                _nvml_state["module"] = None
        return _nvml_state["module"]


def _nvml() -> list[Gpu]:
    nvml = _pynvml()
    if nvml is None:
        return []
    out = []
    try:
        for i in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(i)
            name = nvml.nvmlDeviceGetName(handle)
            uuid = nvml.nvmlDeviceGetUUID(handle)
            memory = nvml.nvmlDeviceGetMemoryInfo(handle).total // 2**20
            try:
                minor = nvml.nvmlDeviceGetMinorNumber(handle)
            except nvml.NVMLError:
                minor = None
            out.append(Gpu(index=i, uuid=_text(uuid), name=_text(name), memory_mb=int(memory), minor=minor))
    except nvml.NVMLError:
        return []
    return out


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value  # older bindings answer bytes


def _dev_files(dev: str) -> list[Gpu]:
    try:
        minors = sorted(int(m.group(1)) for name in os.listdir(dev) if (m := re.fullmatch(r"nvidia(\d+)", name)))
    except OSError:
        return []
    return [Gpu(index=i, uuid=f"nvidia{minor}", minor=minor) for i, minor in enumerate(minors)]


def _lent(gpus: list[Gpu], visible: str | None) -> list[Gpu]:
    """The GPUs that `visible` (the server's own CUDA_VISIBLE_DEVICES) names, by index or UUID; all when unset."""
    if visible is None:
        return gpus
    wanted = [v.strip() for v in visible.split(",") if v.strip()]
    return [g for g in gpus if str(g.index) in wanted or g.uuid in wanted]


# -- handing them to nodes -----------------------------------------------------------------------------
def assign(count: int, gpus: Sequence[Gpu], held: dict[str, str], *, overcommit: bool, size: str = "this size") -> list[Gpu]:
    """`count` of `gpus` for a new node. `held`: GPU ident → the node holding it. Free GPUs first; without
    enough free ones, GpuError, unless overcommitted: then held ones are shared. Pure."""
    if count <= 0:
        return []
    free = [g for g in gpus if g.ident not in held]
    if len(free) >= count:
        return free[:count]
    if overcommit:
        return [*free, *(g for g in gpus if g.ident in held)][:count]
    if len(gpus) < count:
        raise GpuError(f"{size} needs {count} GPU{'s' if count != 1 else ''} and this machine has {len(gpus)}; "
                       "pick a size with fewer GPUs or pass --overcommit")
    holders = ", ".join(f"GPU {g.index} by node {held[g.ident]}" for g in gpus if g.ident in held)
    raise GpuError(f"{size} needs {count} GPU{'s' if count != 1 else ''}, {len(free)} of this machine's "
                   f"{len(gpus)} are free ({holders} held); the node starts once a node holding one is gone")


def visible_env(idents: Sequence[str]) -> dict[str, str]:
    """The variables that show a node's processes exactly `idents` (see `Gpu.ident`), and no other GPU."""
    if not idents:
        return dict(NONE_VISIBLE)
    listed = ",".join(idents)
    env = {"CUDA_VISIBLE_DEVICES": listed, "NVIDIA_VISIBLE_DEVICES": listed}
    if not all(i.startswith(("GPU-", "MIG-")) for i in idents):
        env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"  # indices mean NVML's (bus) order, as the provider counted them
    return env


def parse_idents(text: str | None) -> list[str] | None:
    """`--gpu-ids`: None (not given: the node keeps what it inherited, as under Ray), [] for "none"."""
    if text is None:
        return None
    return [] if text.strip().lower() in ("", "none") else [i.strip() for i in text.split(",") if i.strip()]


def node_idents(given: list[str] | None) -> list[str]:
    """The GPUs a node's agent reads: those it was given; else those CUDA_VISIBLE_DEVICES shows it (Ray's
    assignment); else all of the machine's (an attached machine's agent)."""
    if given is not None:
        return list(given)
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [i.strip() for i in listed.split(",") if i.strip()]
    return [g.ident for g in discover()]


def denied_minors(gpus: Iterable[Gpu], idents: Sequence[str]) -> list[int]:
    """The /dev/nvidia minors of the machine's GPUs that a node given `idents` must not open."""
    return sorted(g.minor for g in gpus if g.minor is not None and g.ident not in idents and g.uuid not in idents)


# -- reading them in use -------------------------------------------------------------------------------
def sample(idents: Sequence[str]) -> list[dict[str, Any]]:
    """Utilisation and memory of a node's GPUs, as now: [{index, uuid, name, utilization_percent,
    memory_used_mb, memory_total_mb}]. Empty where they cannot be read (no NVML: the /dev fallback)."""
    if not idents:
        return []
    if os.environ.get(ENV_FAKE):
        rows = {str(r.get("uuid") or f"GPU-fake-{i}"): (i, r) for i, r in enumerate(_fake_rows())}
        out = []
        for ident in idents:
            i, row = next(((i, r) for u, (i, r) in rows.items() if ident in (u, str(r.get("index", i)))), (None, None))
            if row is not None:
                out.append({"index": int(row.get("index", i)), "uuid": str(row.get("uuid") or f"GPU-fake-{i}"),
                            "name": str(row.get("name", "NVIDIA GPU")),
                            "utilization_percent": float(row.get("utilization_percent", 0)),
                            "memory_used_mb": int(row.get("memory_used_mb", 0)),
                            "memory_total_mb": row.get("memory_mb")})
        return out
    nvml = _pynvml()
    if nvml is None:
        return []
    out = []
    for ident in idents:
        try:
            handle = (nvml.nvmlDeviceGetHandleByUUID(ident) if ident.startswith(("GPU-", "MIG-"))
                      else nvml.nvmlDeviceGetHandleByIndex(int(ident)))
            rates = nvml.nvmlDeviceGetUtilizationRates(handle)
            memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            out.append({"index": nvml.nvmlDeviceGetIndex(handle), "uuid": _text(nvml.nvmlDeviceGetUUID(handle)),
                        "name": _text(nvml.nvmlDeviceGetName(handle)), "utilization_percent": float(rates.gpu),
                        "memory_used_mb": int(memory.used // 2**20), "memory_total_mb": int(memory.total // 2**20)})
        except (nvml.NVMLError, ValueError):
            continue  # a GPU gone or not NVML's (a /dev file's index): the others are still read
    return out


BUSY_PERCENT = 5.0  # a GPU above this utilisation is at work (NVML's is the share of the last sample period)


def busy(samples: Iterable[Any]) -> list[str]:
    """The GPUs of `samples` (an agent's report: checked, not trusted) at work, as "GPU 0 (87 %)"."""
    out = []
    for s in samples:
        used = s.get("utilization_percent") if isinstance(s, dict) else None
        if isinstance(used, (int, float)) and used >= BUSY_PERCENT:
            out.append(f"GPU {s.get('index', '?')} ({used:g} %)")
    return out
