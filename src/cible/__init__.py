"""cible: self-hosted compute targets for machine learning, driven by Azure ML CLI v2 YAML.

`from cible import MLClient, load_job, command` mirrors azure-ai-ml. The SDK is
imported lazily so that `python -m cible.launch` stays fast.
"""

from __future__ import annotations

__version__ = "0.1.0"

_SDK_NAMES = {"MLClient", "load_job", "command", "Input", "Output"}
__all__ = ["__version__", *sorted(_SDK_NAMES)]


def __getattr__(name: str):  # noqa: ANN202
    if name in _SDK_NAMES:
        from cible import sdk

        return getattr(sdk, name)
    raise AttributeError(f"module 'cible' has no attribute {name!r}")
