"""Node providers are plugins: found by entry point, loaded when built, listed even when unusable.

A package adds a provider by declaring a factory (`ProviderFactory`: a `ProviderContext` in, a
`NodeProvider` out) in the `cible.node_providers` entry-point group:

    [project.entry-points."cible.node_providers"]
    local = "cible.backends.local:make_provider"

Discovery reads only the installed distributions' metadata; a provider's module is imported when
the server builds it. One that cannot be loaded or built is an `UnavailableProvider` saying why,
so it is listed with its reason and computes that ask for it are refused with the same words.
cible's own providers are also in a built-in table: an install whose metadata predates them (an
editable install not re-installed since) still finds them.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from importlib.metadata import entry_points
from typing import Any

from cible.backends.base.contract import NodeProvider, ProviderContext, ProviderFactory
from cible.backends.base.unavailable import UnavailableProvider

log = logging.getLogger("cible.backends.registry")

GROUP = "cible.node_providers"
BUILTIN: dict[str, str] = {
    "local": "cible.backends.local:make_provider",
    "ray": "cible.backends.ray:make_provider",
    "ssh": "cible.backends.ssh:make_provider",
    "slurm": "cible.backends.slurm:make_provider",
    "kubernetes": "cible.backends.kubernetes:make_provider",
}


@dataclass(frozen=True)
class ProviderEntry:
    """A provider found, not loaded yet: its name, its factory (`module:attribute`), and where it came from."""

    name: str
    target: str
    origin: str  # "entry point of <distribution>" or "built in"

    def load(self) -> ProviderFactory:
        module, _, attribute = self.target.partition(":")
        factory: Any = importlib.import_module(module)
        for part in attribute.split(".") if attribute else []:
            factory = getattr(factory, part)
        if not callable(factory):
            raise TypeError(f"{self.target} is not callable")
        return factory


def discover() -> dict[str, ProviderEntry]:
    """Every node provider installed, by name (entry points first; the built-in table fills the gaps)."""
    found = {name: ProviderEntry(name, target, "built in") for name, target in BUILTIN.items()}
    for point in entry_points(group=GROUP):
        dist = getattr(point, "dist", None)
        found[point.name] = ProviderEntry(point.name, point.value,
                                          f"entry point of {dist.name if dist is not None else 'an unknown package'}")
    return dict(sorted(found.items()))


def build(entry: ProviderEntry, context: ProviderContext) -> NodeProvider:
    """The provider, or an unavailable one that says why it could not be loaded or built."""
    try:
        factory = entry.load()
    except Exception as exc:  # ImportError above all: its package or a dependency is missing
        log.warning("node provider %r (%s, %s) cannot be loaded: %s", entry.name, entry.target, entry.origin, exc)
        return UnavailableProvider(entry.name, f"its plugin {entry.target} cannot be loaded: {_describe(exc)}",
                                   hint=f"install what it needs in the server's environment ({entry.origin})")
    try:
        provider = factory(context)
    except Exception as exc:
        log.warning("node provider %r cannot be made", entry.name, exc_info=True)
        return UnavailableProvider(entry.name, f"it cannot be made: {_describe(exc)}")
    if provider.name != entry.name:
        log.warning("node provider %r (%s) calls itself %r", entry.name, entry.target, provider.name)
    return provider


def build_providers(context: ProviderContext, options: Mapping[str, Mapping[str, Any]] | None = None,
                    entries: Mapping[str, ProviderEntry] | None = None) -> dict[str, NodeProvider]:
    """Every provider discovered (or in `entries`), built with the shared context and its own options."""
    options = options or {}
    entries = discover() if entries is None else entries
    return {name: build(entry, replace(context, options=dict(options.get(name, {}))))
            for name, entry in sorted(entries.items())}


def _describe(exc: BaseException) -> str:
    text = str(exc).splitlines()[0][:300] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
