"""Azure's rules for the names of a workspace's things, each written once, here.

The spec models use the annotated types below, so a YAML file, an SDK object and a request
body are held to the same rule; the API checks a name taken from a URL with `NameRule.check`
before anything is stored (a 400 that says the rule and how to follow it). Names are ASCII:
look-alikes such as `․․` (U+2024) or `／` (U+FF0F) are refused here, and file paths built from
names go through `cible.core.safepaths` as well.

Sources: the Azure ML REST API (Microsoft.MachineLearningServices 2024-04-01-preview) gives
`^[a-zA-Z0-9][a-zA-Z0-9\\-_]{0,254}$` for jobs and for environment, data and model names, and
`^[a-zA-Z](?![a-zA-Z0-9-]*-\\d+$)[a-zA-Z0-9\\-]{2,23}$` for computes; the CLI docs give endpoints
(and their deployments) 3-32 characters `^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$`; the azureml SDK
docs give experiments letters, digits, `_` and `-`, starting with a letter or a digit.
Where cible is more lenient it says so beside the rule.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import AfterValidator

from cible.core.errors import InvalidRequestError


@dataclass(frozen=True)
class NameRule:
    what: str  # "job name": how messages call it
    pattern: str  # the whole name must match (ASCII classes only: `\d` would take other digits)
    min_len: int
    max_len: int
    says: str  # the rule in words, for the messages
    example: str
    forbidden: str | None = None  # a form the pattern allows but Azure refuses
    forbidden_says: str = ""
    reserved: tuple[str, ...] = ()  # names that mean something else here

    def problem(self, value: Any) -> str | None:
        """Why `value` is not a valid name (a sentence without the field), or None when it is."""
        if not isinstance(value, str):
            return f"{self.what}s are text, not {type(value).__name__}"
        if not value.isascii():
            why = "has non-ASCII characters"
        elif not value.isprintable():
            why = "has control characters"
        elif not self.min_len <= len(value) <= self.max_len:
            why = f"is {len(value)} characters long"
        elif value in self.reserved:
            why = "is reserved"
        elif self.forbidden and re.fullmatch(self.forbidden, value):
            why = self.forbidden_says
        elif not re.fullmatch(self.pattern, value):
            why = "does not follow the rule"
        else:
            return None
        shown = repr(value) if len(value) <= 60 else f"{value[:40]!r}… ({len(value)} characters)"
        return (f"{shown} is not a valid {self.what} ({why}): {self.what}s have {self.says}; "
                f"rename it to follow this rule, e.g. '{self.example}'")

    def check(self, value: Any, field: str = "name") -> str:
        """`value` when it follows the rule; else a 400 naming `field`, the rule and the fix."""
        problem = self.problem(value)
        if problem:
            raise InvalidRequestError(f"{field}: {problem}", details={"field": field})
        return value

    def validator(self) -> AfterValidator:
        """For an annotated model field: None passes (an optional field left out)."""
        def validate(value: Any) -> Any:
            problem = None if value is None else self.problem(value)
            if problem:
                raise ValueError(problem)
            return value
        return AfterValidator(validate)


_ALNUM_START = r"[A-Za-z0-9][A-Za-z0-9_-]*"
_ALNUM_START_SAYS = "1 to {n} characters: letters, digits, '-' and '_', starting with a letter or a digit"

JOB = NameRule("job name", _ALNUM_START, 1, 255, _ALNUM_START_SAYS.format(n=255), "train-iris_1")
# Azure's older docs say 3-36 characters; the API takes job-like names, and so does cible.
EXPERIMENT = NameRule("experiment name", _ALNUM_START, 1, 255, _ALNUM_START_SAYS.format(n=255), "iris-experiments")
ASSET = NameRule("asset name", _ALNUM_START, 1, 255, _ALNUM_START_SAYS.format(n=255), "iris-data")
# Azure gives versions no pattern; these keep them plain (64: the store's column) and keep
# `latest`, which `azureml:<name>@latest` and GET …/versions/latest mean as a label.
ASSET_VERSION = NameRule(
    "asset version", r"[A-Za-z0-9][A-Za-z0-9._-]*", 1, 64,
    "1 to 64 characters: letters, digits, '.', '-' and '_', starting with a letter or a digit, and not 'latest'",
    "1", reserved=("latest",),
)
# Azure: 2-16 characters (docs) or 3-24 (REST API). cible takes 1 to 24: its own examples and
# tests use one-letter computes, and a short name is never a risk.
COMPUTE = NameRule(
    "compute name", r"[A-Za-z][A-Za-z0-9-]*", 1, 24,
    "1 to 24 characters: letters, digits and '-', starting with a letter, not ending in '-' and digits",
    "cpu-cluster", forbidden=r"[A-Za-z0-9-]*-[0-9]+", forbidden_says="ends in '-' and digits",
)
# A workspace user: a login or an e-mail address ("me" means the caller in the API's routes).
USER = NameRule(
    "user name", r"[A-Za-z0-9][A-Za-z0-9._@+-]*", 1, 64,
    "1 to 64 characters: letters, digits, '.', '_', '@', '+' and '-', starting with a letter or a digit",
    "alice", reserved=("me",),
)
TOKEN_NAME = NameRule("token name", _ALNUM_START, 1, 64, _ALNUM_START_SAYS.format(n=64), "laptop")
_ENDPOINT_SAYS = ("3 to 32 characters: letters, digits and '-', starting with a letter and ending with a letter "
                  "or a digit")
ENDPOINT = NameRule("endpoint name", r"[A-Za-z]([A-Za-z0-9-]*[A-Za-z0-9])?", 3, 32, _ENDPOINT_SAYS, "iris-endpoint")
DEPLOYMENT = NameRule("deployment name", r"[A-Za-z]([A-Za-z0-9-]*[A-Za-z0-9])?", 3, 32, _ENDPOINT_SAYS, "blue")

JobName = Annotated[str, JOB.validator()]
ExperimentName = Annotated[str, EXPERIMENT.validator()]
AssetName = Annotated[str, ASSET.validator()]
AssetVersion = Annotated[str, ASSET_VERSION.validator()]
ComputeName = Annotated[str, COMPUTE.validator()]
EndpointName = Annotated[str, ENDPOINT.validator()]
DeploymentName = Annotated[str, DEPLOYMENT.validator()]


def experiment_from_folder(folder: str) -> str:
    """Azure's default experiment is the folder a job was submitted from; a folder name is not
    always a valid experiment name (`my project`, `v1.2`), so its other characters become `_`."""
    name = re.sub(r"[^A-Za-z0-9_-]", "_", folder)[: EXPERIMENT.max_len].lstrip("_-")
    return name or "Default"
