"""An endpoint's traffic split and mirror: parsed from the CLI's form and checked against its
deployments (pure).

`az ml online-endpoint update --traffic "blue=90 green=10" --mirror-traffic "green=10"`: pairs
of `<deployment>=<percent>`, separated by spaces (Azure's form) or commas. Azure's rules, which
its service enforces when the endpoint is updated:
- traffic: every name a deployment of the endpoint, each share a whole percent, the shares adding
  up to 100, or all 0 (no traffic; requests must then name a deployment in the
  `azureml-model-deployment` header);
- mirror: one deployment at most, at most 50 % of the live requests copied to it, and not a
  deployment that has live traffic itself (its answers would count twice).
The checks that need no deployment list are `traffic_problems` and `mirror_problems` in
`cible.core.models.endpoints` (the endpoint spec uses them too); the messages are theirs.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping

from cible.core.errors import InvalidSpecError
from cible.core.models.endpoints import mirror_problems, traffic_problems
from cible.core.naming import DEPLOYMENT

__all__ = ["format_traffic", "parse_traffic", "validate_mirror", "validate_traffic"]

_SEPARATORS = re.compile(r"[\s,]+")


def parse_traffic(text: str, *, what: str = "traffic") -> dict[str, int]:
    """`"blue=90 green=10"` (or `"blue=90,green=10"`) -> `{"blue": 90, "green": 10}`, in the order
    written. `what` names the option in messages ("traffic", "mirror traffic"). Only the form is
    checked here; `validate_traffic` / `validate_mirror` check the shares."""
    example = "'blue=90 green=10'" if what == "traffic" else "'green=10'"
    pairs = [part for part in _SEPARATORS.split(text.strip()) if part] if isinstance(text, str) else []
    if not pairs:
        raise InvalidSpecError(f"no {what} given: write <deployment>=<percent> pairs separated by spaces, "
                               f"e.g. {example}")
    shares: dict[str, int] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name or not value:
            raise InvalidSpecError(f"{what} {pair!r} is not <deployment>=<percent>; write e.g. {example}")
        problem = DEPLOYMENT.problem(name)
        if problem:
            raise InvalidSpecError(f"{what} {pair!r}: {problem}")
        if not value.isascii() or not value.isdigit():
            raise InvalidSpecError(f"{what} {pair!r}: {value!r} is not a whole percent; write a number from 0 to "
                                   f"100 without '%', e.g. {example}")
        if name in shares:
            raise InvalidSpecError(f"{what} names deployment '{name}' twice ({shares[name]} and {int(value)}); "
                                   "give each deployment one share")
        shares[name] = int(value)
    return shares


def format_traffic(shares: Mapping[str, int]) -> str:
    """The CLI's form of a split: `{"blue": 90, "green": 10}` -> `"blue=90 green=10"`."""
    return " ".join(f"{name}={share}" for name, share in shares.items())


def _unknown(shares: Mapping[str, int], deployments: Collection[str], what: str) -> list[str]:
    unknown = [name for name in shares if name not in deployments]
    if not unknown:
        return []
    have = ", ".join(sorted(deployments)) if deployments else "none yet"
    names = ", ".join(f"'{name}'" for name in unknown)
    return [f"{what} names {names}, which {'is not a deployment' if len(unknown) == 1 else 'are not deployments'} "
            f"of this endpoint (its deployments: {have}); create the deployment first, or fix the name"]


def validate_traffic(traffic: Mapping[str, int], deployments: Collection[str]) -> dict[str, int]:
    """`traffic` when every name is one of `deployments` and the shares add up to 0 or 100; else an
    InvalidSpecError that says every problem and how to fix it."""
    problems = _unknown(traffic, deployments, "traffic") + traffic_problems(dict(traffic))
    if problems:
        raise InvalidSpecError("; ".join(problems), details={"field": "traffic", "traffic": dict(traffic)})
    return dict(traffic)


def validate_mirror(mirror: Mapping[str, int], traffic: Mapping[str, int],
                    deployments: Collection[str]) -> dict[str, int]:
    """`mirror` when it names at most one deployment of the endpoint, copies 0-50 % of the live
    requests, and that deployment has no live traffic of its own (`traffic`: the split that will be
    in force); else an InvalidSpecError."""
    problems = _unknown(mirror, deployments, "mirror traffic") + mirror_problems(dict(mirror), dict(traffic))
    if problems:
        raise InvalidSpecError("; ".join(problems), details={"field": "mirror_traffic", "mirror_traffic": dict(mirror)})
    return dict(mirror)
