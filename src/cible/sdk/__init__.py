"""The Python SDK: `from cible import MLClient, load_job, command, Input, Output`."""

from cible.sdk.builders import Input, Output, command, load_job
from cible.sdk.client import MLClient

__all__ = ["MLClient", "load_job", "command", "Input", "Output"]
