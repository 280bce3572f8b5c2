"""A conda environment file as a list of PyPI requirements for uv.

cible has no conda. An environment's `conda_file` (the SDK and CLI inline the file's content)
becomes: the interpreter version from `python=X.Y`, the `- pip:` list as written, and the conda
packages that exist on PyPI as PEP 508 requirements. Conda packages that are system libraries
(cudatoolkit, mkl, openmpi ...) have no PyPI twin; they are returned by name so the job log can say
they were not installed. Pure: no I/O beyond reading this package's data files.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any

import yaml

from cible.core.errors import InvalidSpecError

_NAME = re.compile(r"^(?P<name>[A-Za-z0-9_][A-Za-z0-9_.\-]*)\s*(?P<rest>.*)$")
_BRACKET = re.compile(r"^(?P<name>[A-Za-z0-9_][A-Za-z0-9_.\-]*)\s*\[(?P<body>.*)\]\s*$")
_KEYVAL = re.compile(r"""(\w+)\s*=\s*(?:'([^']*)'|"([^"]*)"|([^,\s]+))""")
_OPERATORS = ("==", ">=", "<=", "!=", "~=", ">", "<")
_VERSION = re.compile(r"^[0-9][0-9A-Za-z.+!_*-]*$")
# pip list lines that refer to files next to the conda file, which an inlined conda file lacks.
_FILE_OPTIONS = ("-r", "--requirement", "-c", "--constraint")


@dataclass
class CondaPlan:
    python: str | None = None  # "3.10": the interpreter's major.minor, None = the host's Python
    requirements: list[str] = field(default_factory=list)  # PEP 508 lines (and pip options) for uv
    conda_only: list[str] = field(default_factory=list)  # conda names with no PyPI twin, not installed
    notes: list[str] = field(default_factory=list)  # what was changed on the way, for the job log


def normalise_name(name: str) -> str:
    """PEP 503 form: lower case, runs of `-`, `_` and `.` become one `-`."""
    return re.sub(r"[-_.]+", "-", name).lower()


@lru_cache(maxsize=1)
def _names() -> tuple[dict[str, str], frozenset[str], tuple[str, ...]]:
    text = resources.files(__package__).joinpath("conda_names.yaml").read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    pypi = {normalise_name(k): v for k, v in (data.get("pypi_names") or {}).items()}
    only = frozenset(normalise_name(n) for n in data.get("conda_only") or [])
    patterns = tuple(normalise_name(p) for p in data.get("conda_only_patterns") or [])
    return pypi, only, patterns


def pypi_name(conda_name: str) -> str:
    """The PyPI name of a conda package (the same name unless the map says otherwise)."""
    return _names()[0].get(normalise_name(conda_name), conda_name)


def is_conda_only(conda_name: str) -> bool:
    _, only, patterns = _names()
    norm = normalise_name(conda_name)
    return norm in only or any(fnmatch.fnmatchcase(norm, p) for p in patterns)


def _fail(where: str, message: str) -> InvalidSpecError:
    return InvalidSpecError(f"{where}: {message}", details={"field": where})


def _fuzzy(version: str) -> str:
    """conda `=V`: V.* when V names fewer than three components, == V otherwise."""
    if version.endswith("*"):
        return "==" + version.rstrip("*").rstrip(".") + ".*"
    if version.count(".") >= 2:
        return "==" + version
    return "==" + version + ".*"


def _split_spec(raw: str, where: str) -> tuple[str, str, str | None]:
    """A conda match spec -> (name, PEP 440 specifier or "", dropped build string or None)."""
    spec = raw.strip()
    if "::" in spec:  # channel prefix: conda-forge::numpy, conda-forge/linux-64::numpy
        spec = spec.split("::", 1)[1].strip()
    bracket = _BRACKET.fullmatch(spec)
    if bracket:  # numpy[version='>=1.20,<2', build=py39*]
        pairs = {m.group(1): next(g for g in m.groups()[1:] if g is not None) for m in _KEYVAL.finditer(bracket["body"])}
        version = pairs.get("version", "")
        spec = bracket["name"] + (f" {version}" if version else "")
    m = _NAME.fullmatch(spec)
    if not m:
        raise _fail(where, f"'{raw}' is not a conda package spec (expected name, name=version or name>=version)")
    name, rest = m["name"], m["rest"].strip()
    if not rest:
        return name, "", None
    if "|" in rest:
        raise _fail(where, f"'{raw}' uses conda's '|' alternatives, which have no pip form; pin one range")
    build = None
    if rest.startswith("=") and not rest.startswith("=="):  # name=1.2 or name=1.2=build
        version, _, build = rest[1:].partition("=")
        version = version.strip()
        if version in ("", "*"):  # blas=*=mkl: any version
            return name, "", build.strip() or None
        if not _VERSION.fullmatch(version):
            raise _fail(where, f"'{raw}': '{version}' is not a version")
        return name, _fuzzy(version), build.strip() or None
    if rest.startswith(_OPERATORS):
        if rest.startswith("=="):
            version, _, build = rest[2:].partition("=")
            version = version.strip()
            if not _VERSION.fullmatch(version):
                raise _fail(where, f"'{raw}': '{version}' is not a version")
            specifier = "==" + (version.rstrip("*").rstrip(".") + ".*" if version.endswith("*") else version)
            return name, specifier, build.strip() or None
        parts = re.sub(r"\s*,\s*", ",", rest).split()
        specifier = parts[0]
        build = parts[1] if len(parts) > 1 else None
        return name, specifier.replace(" ", ""), build
    parts = rest.split()  # space-separated match spec: "numpy 1.21.2 py39_0"
    if not _VERSION.fullmatch(parts[0]):
        raise _fail(where, f"'{raw}' is not a conda package spec (expected name, name=version or name>=version)")
    return name, _fuzzy(parts[0]), (parts[1] if len(parts) > 1 else None)


def _python_version(specifier: str, raw: str, notes: list[str]) -> str | None:
    m = re.fullmatch(r"^==(\d+)\.(\d+)(?:\.(\d+|\*))?(?:\.\*)?$", specifier)
    if not m:
        if specifier:
            notes.append(f"'{raw}': only an exact python=X.Y pin selects the interpreter; the host's Python is used")
        return None
    if m.group(3) not in (None, "*"):
        notes.append(f"'{raw}': interpreters are matched by major.minor ({m.group(1)}.{m.group(2)})")
    return f"{m.group(1)}.{m.group(2)}"


def _pip_line(entry: Any, where: str) -> str:
    if not isinstance(entry, str):
        raise _fail(where, f"a pip requirement must be a string; got {type(entry).__name__} {entry!r}")
    line = entry.strip()
    if not line:
        raise _fail(where, "empty pip requirement")
    if line.startswith("-"):
        option = line.split(None, 1)[0].split("=", 1)[0]
        if option in _FILE_OPTIONS:
            raise _fail(
                where,
                f"'{line}' refers to a file next to the conda file, which the environment does not carry; "
                "list the requirements in the pip: list instead",
            )
        return line  # --index-url, --extra-index-url, --find-links, -e git+..., --pre ...
    if "://" in line or line.startswith((".", "/")):
        return line  # URL or path requirement: left to uv
    try:
        from packaging.requirements import InvalidRequirement, Requirement
    except ImportError:  # pragma: no cover - packaging ships with pip/mlflow everywhere cible runs
        return line
    try:
        return str(Requirement(line))
    except InvalidRequirement as exc:
        hint = " (pip pins with '==', not conda's '=')" if re.match(r"^[\w.\-]+=[^=]", line) else ""
        raise _fail(where, f"'{line}' is not a valid pip requirement{hint}: {str(exc).splitlines()[0]}") from None


def parse_conda(conda: Any, *, field: str = "conda_file") -> CondaPlan:
    """A conda environment mapping -> CondaPlan. `field` prefixes error messages (its path in the spec)."""
    if isinstance(conda, str):  # a conda file's text rather than its parsed content
        try:
            parsed = yaml.safe_load(conda)
        except yaml.YAMLError as exc:
            raise _fail(field, f"not a YAML conda environment file: {exc}") from None
        if not isinstance(parsed, dict):
            raise _fail(
                field,
                f"expected the conda file's content (a mapping with dependencies:); got the string '{conda[:80]}'",
            )
        conda = parsed
    if not isinstance(conda, dict):
        raise _fail(field, f"expected a mapping with dependencies:; got {type(conda).__name__}")
    deps = conda.get("dependencies")
    if deps is None:
        deps = []
    if not isinstance(deps, list):
        raise _fail(f"{field}.dependencies", f"expected a list; got {type(deps).__name__}")
    plan = CondaPlan()
    seen_conda_only: set[str] = set()
    for i, dep in enumerate(deps):
        where = f"{field}.dependencies[{i}]"
        if isinstance(dep, dict):
            extra = [k for k in dep if k != "pip"]
            if extra:
                raise _fail(where, f"only a 'pip:' list may appear as a mapping; got key(s) {', '.join(map(str, extra))}")
            pip = dep.get("pip") or []
            if not isinstance(pip, list):
                raise _fail(f"{where}.pip", f"expected a list of requirements; got {type(pip).__name__}")
            for j, entry in enumerate(pip):
                plan.requirements.append(_pip_line(entry, f"{where}.pip[{j}]"))
            continue
        if not isinstance(dep, str):
            raise _fail(where, f"expected a conda package spec (string) or a pip: list; got {type(dep).__name__} {dep!r}")
        name, specifier, build = _split_spec(dep, where)
        norm = normalise_name(name)
        if norm == "pip":
            continue
        if norm == "python":
            plan.python = _python_version(specifier, dep.strip(), plan.notes)
            continue
        if is_conda_only(name):
            if norm not in seen_conda_only:
                seen_conda_only.add(norm)
                plan.conda_only.append(name)
            continue
        target = pypi_name(name)
        if normalise_name(target) != norm:
            plan.notes.append(f"conda package '{name}' is installed as '{target}' from PyPI")
        if build:
            plan.notes.append(f"'{dep.strip()}': conda build string '{build}' ignored")
        try:
            from packaging.requirements import InvalidRequirement, Requirement
        except ImportError:  # pragma: no cover
            plan.requirements.append(target + specifier)
            continue
        try:
            plan.requirements.append(str(Requirement(target + specifier)))
        except InvalidRequirement as exc:
            raise _fail(where, f"'{dep}' has no pip form ({target}{specifier}): {str(exc).splitlines()[0]}") from None
    return plan
