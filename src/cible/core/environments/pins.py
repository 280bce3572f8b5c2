"""Exact pins with no wheel for the interpreter a job gets -> the nearest version that has one.

Azure's examples pin `python=3.8.5` and 2022 packages (`scikit-learn==1.1.2`, `torch==1.13.0`).
Where the node has no such Python, the environment is built on the nearest one, where many of
those pins have no wheel: uv would then compile them from source (minutes, and usually a failure
without a compiler). This module decides, per `name==version` line, from the index's file list
and the interpreter's wheel tags, whether the pin stays (it has a compatible wheel, or it is a
source-only release left to the installer) or moves to the nearest version with a compatible
wheel: the nearest higher one, else the nearest lower one.

Pure and standard library only (the launcher calls it): no I/O, no clock. The node side, which
asks the interpreter for its tags and the index for its files, is cible.launch.pins.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

KEPT = "kept"  # the pin has a compatible wheel (or nothing better can be said): installed as written
RELAXED = "relaxed"  # the pin has no compatible wheel: another version is installed
NO_WHEEL = "no-wheel"  # no version has a compatible wheel: installed as written, never built from source

_PIN = re.compile(
    r"^(?P<name>[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)\s*(?P<extras>\[[^\]]*\])?\s*"
    r"===?\s*(?P<version>[A-Za-z0-9.!+_-]+)\s*(?P<marker>;.*)?$"
)
_VERSION = re.compile(
    r"^v?(?:(?P<epoch>\d+)!)?(?P<release>\d+(?:\.\d+)*)"
    r"(?:[-_.]?(?P<pre_l>a|b|c|rc|alpha|beta|pre|preview)[-_.]?(?P<pre_n>\d+)?)?"
    r"(?:-(?P<post_n1>\d+)|[-_.]?(?P<post_l>post|rev|r)[-_.]?(?P<post_n2>\d+)?)?"
    r"(?:[-_.]?(?P<dev_l>dev)[-_.]?(?P<dev_n>\d+)?)?"
    r"(?:\+(?P<local>[a-z0-9]+(?:[-_.][a-z0-9]+)*))?$",
    re.IGNORECASE,
)
_PRE_ORDER = {"a": 0, "alpha": 0, "b": 1, "beta": 1, "c": 2, "rc": 2, "pre": 2, "preview": 2}
_SDIST_SUFFIXES = (".tar.gz", ".zip", ".tar.bz2", ".tgz", ".tar.xz", ".tar")
# manylinux's oldest glibc per architecture (manylinux1 is glibc 2.5 on x86; aarch64 starts at 2.17)
_OLDEST_GLIBC_MINOR = {"x86_64": 5, "i686": 5, "aarch64": 17, "ppc64le": 17, "s390x": 17, "armv7l": 17}
_LEGACY_MANYLINUX = {(2, 5): "manylinux1", (2, 12): "manylinux2010", (2, 17): "manylinux2014"}


# -- versions ------------------------------------------------------------------------------------------
@dataclass(frozen=True, order=True)
class Version:
    """A PEP 440 version, ordered as PEP 440 orders them (the local part is ignored)."""

    key: tuple
    text: str = field(compare=False)
    pre: bool = field(compare=False, default=False)  # a pre-release or development release

    def __str__(self) -> str:
        return self.text


def parse_version(text: str) -> Version | None:
    m = _VERSION.fullmatch(text.strip())
    if not m:
        return None
    release = tuple(int(p) for p in m["release"].split("."))
    while len(release) > 1 and release[-1] == 0:  # 1.0 == 1.0.0
        release = release[:-1]
    post = m["post_n1"] or (m["post_n2"] or "0" if m["post_l"] else None)
    dev = (m["dev_n"] or "0") if m["dev_l"] else None
    if m["pre_l"]:
        pre: tuple = (_PRE_ORDER[m["pre_l"].lower()], int(m["pre_n"] or 0))
    elif dev is not None and post is None:
        pre = (-1, 0)  # 1.0.dev1 sorts before 1.0a1
    else:
        pre = (9, 0)  # a final release sorts after its pre-releases
    key = (
        int(m["epoch"] or 0), release, pre,
        (-1,) if post is None else (int(post),),
        (1, 0) if dev is None else (0, int(dev)),  # a release without .devN sorts after its .devN
    )
    return Version(key, text.strip(), pre=bool(m["pre_l"]) or dev is not None)


def python_allows(requires_python: str | None, python: Sequence[int]) -> bool:
    """Whether a file's Requires-Python admits the interpreter `python` ((3, 11) or (3, 11, 7)).
    A specifier it cannot read admits it: the installer has the last word."""
    if not requires_python or not requires_python.strip():
        return True
    have = tuple(int(p) for p in python)
    for clause in requires_python.split(","):
        clause = clause.strip()
        if not clause:
            continue
        m = re.fullmatch(r"(===|==|!=|~=|>=|<=|>|<)\s*v?([0-9][0-9.]*)(\.\*)?[A-Za-z0-9.+-]*", clause)
        if not m:
            return True
        op, digits, star = m[1], m[2].rstrip("."), bool(m[3])
        want = tuple(int(p) for p in digits.split(".") if p != "")
        if not _clause_holds(op, want, star, have):
            return False
    return True


def _clause_holds(op: str, want: tuple[int, ...], star: bool, have: tuple[int, ...]) -> bool:
    if star and op in ("==", "!="):
        prefix = have[: len(want)] == want
        return prefix if op == "==" else not prefix
    width = max(len(want), len(have))
    padded_have = have + (0,) * (width - len(have))
    padded_want = want + (0,) * (width - len(want))
    if op == "~=":
        return padded_have >= padded_want and have[: len(want) - 1] == want[:-1]
    if op in ("==", "==="):
        return padded_have == padded_want
    if op == "!=":
        return padded_have != padded_want
    if op == ">=":
        return padded_have >= padded_want
    if op == "<=":
        return padded_have <= padded_want
    if op == ">":
        return padded_have > padded_want
    return padded_have < padded_want  # "<"


# -- requirement lines and index files ------------------------------------------------------------------
def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class ExactPin:
    """A requirement line `name[extras]==version[; marker]`."""

    line: str
    name: str
    version: str
    extras: str = ""
    marker: str = ""

    def at(self, version: str) -> str:
        """The same requirement pinned to `version`."""
        marker = f"; {self.marker}" if self.marker else ""
        return f"{self.name}{self.extras}=={version}{marker}"


def parse_exact_pin(line: str) -> ExactPin | None:
    """The pin of a requirement line, or None for anything that is not one exact version (ranges,
    wildcards like ==1.21.*, URLs, options)."""
    text = line.strip()
    if not text or text.startswith("-") or "://" in text:
        return None
    m = _PIN.fullmatch(text)
    if not m or "*" in m["version"] or parse_version(m["version"]) is None:
        return None
    marker = (m["marker"] or "").lstrip(";").strip()
    return ExactPin(text, m["name"], m["version"], (m["extras"] or "").replace(" ", ""), marker)


@dataclass(frozen=True)
class IndexFile:
    """One file of a project on the index (PEP 691: filename, requires-python, yanked)."""

    filename: str
    requires_python: str | None = None
    yanked: bool = False


def wheel_info(filename: str) -> tuple[str, str, frozenset[str]] | None:
    """(name, version, tags) of a wheel's file name, tags as "py-abi-platform" strings."""
    if not filename.endswith(".whl"):
        return None
    parts = filename[: -len(".whl")].split("-")
    if len(parts) not in (5, 6):
        return None
    name, version, pythons, abis, platforms = parts[0], parts[1], parts[-3], parts[-2], parts[-1]
    tags = frozenset(f"{p}-{a}-{pl}" for p in pythons.split(".") for a in abis.split(".") for pl in platforms.split("."))
    return name, version, tags


def sdist_version(filename: str, project: str) -> str | None:
    """The version of a source distribution of `project` (its name may be spelled with - or _)."""
    stem = next((filename[: -len(s)] for s in _SDIST_SUFFIXES if filename.endswith(s)), None)
    if stem is None:
        return None
    want = normalise(project)
    for i, char in enumerate(stem):
        if char == "-" and normalise(stem[:i]) == want:
            return stem[i + 1:]
    return None


# -- interpreter tags -----------------------------------------------------------------------------------
def interpreter_tags(facts: Mapping[str, Any]) -> list[str]:
    """The wheel tags an interpreter accepts, most specific first, from what it says about itself:
    `tags` (packaging.tags.sys_tags(), when packaging is importable there) is taken as is; else
    the tags are worked out for CPython from `version` [3, 11], `abiflags`, `machine` and `glibc`
    ("glibc 2.35", Linux) or `musl` ([1, 2]), as packaging does."""
    given = facts.get("tags")
    if given:
        return [str(t) for t in given]
    major, minor = (int(v) for v in list(facts["version"])[:2])
    impl = str(facts.get("implementation") or "cpython").lower()
    machine = str(facts.get("machine") or "x86_64").lower()
    machine = {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)
    platforms = linux_platforms(machine, _glibc(facts.get("glibc")), facts.get("musl"))
    nodot = f"{major}{minor}"
    tags: list[str] = []
    if impl == "cpython":
        interp = f"cp{nodot}"
        abi = interp + str(facts.get("abiflags") or "")
        for plat in platforms:
            tags.append(f"{interp}-{abi}-{plat}")
        if "t" not in str(facts.get("abiflags") or ""):  # free-threaded builds take no abi3 wheels
            for plat in platforms:
                tags.append(f"{interp}-abi3-{plat}")
        for plat in platforms:
            tags.append(f"{interp}-none-{plat}")
        if "t" not in str(facts.get("abiflags") or ""):
            for older in range(minor - 1, 1, -1):
                for plat in platforms:
                    tags.append(f"cp{major}{older}-abi3-{plat}")
    for version in [nodot, str(major)] + [f"{major}{m}" for m in range(minor - 1, -1, -1)]:
        for plat in platforms:
            tags.append(f"py{version}-none-{plat}")
    if impl == "cpython":
        tags.append(f"cp{nodot}-none-any")
    for version in [nodot, str(major)] + [f"{major}{m}" for m in range(minor - 1, -1, -1)]:
        tags.append(f"py{version}-none-any")
    return list(dict.fromkeys(tags))


def _glibc(value: Any) -> tuple[int, int] | None:
    if not value:
        return None
    m = re.search(r"(\d+)\.(\d+)", str(value))
    return (int(m[1]), int(m[2])) if m else None


def linux_platforms(machine: str, glibc: tuple[int, int] | None, musl: Any = None) -> list[str]:
    """Linux platform tags, newest first: manylinux_2_N (and its legacy aliases) down to the oldest
    for the architecture, musllinux_1_N, then linux_<arch>."""
    plats: list[str] = []
    if glibc and glibc[0] == 2:
        for minor in range(glibc[1], _OLDEST_GLIBC_MINOR.get(machine, 17) - 1, -1):
            plats.append(f"manylinux_2_{minor}_{machine}")
            legacy = _LEGACY_MANYLINUX.get((2, minor))
            if legacy and (legacy == "manylinux2014" or machine in ("x86_64", "i686")):
                plats.append(f"{legacy}_{machine}")
    if musl:
        major, minor = (int(v) for v in list(musl)[:2])
        for m in range(minor, -1, -1):
            plats.append(f"musllinux_{major}_{m}_{machine}")
    plats.append(f"linux_{machine}")
    return plats


# -- the decision ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PinDecision:
    pin: ExactPin
    outcome: str  # KEPT | RELAXED | NO_WHEEL
    version: str  # the version installed
    reason: str  # for the environment log

    @property
    def line(self) -> str:
        """The requirement line to install."""
        return self.pin.at(self.version) if self.outcome == RELAXED else self.pin.line


def _releases(project: str, files: Iterable[IndexFile]) -> dict[Version, list[IndexFile]]:
    by_version: dict[Version, list[IndexFile]] = {}
    for f in files:
        wheel = wheel_info(f.filename)
        text = wheel[1] if wheel else sdist_version(f.filename, project)
        version = parse_version(text) if text else None
        if version is not None:
            by_version.setdefault(version, []).append(f)
    return by_version


def _has_wheel_for(files: Iterable[IndexFile], tags: frozenset[str], python: Sequence[int], *,
                   yanked_ok: bool) -> bool:
    for f in files:
        if f.yanked and not yanked_ok:
            continue
        wheel = wheel_info(f.filename)
        if wheel and wheel[2] & tags and python_allows(f.requires_python, python):
            return True
    return False


def decide_pin(pin: ExactPin, files: Sequence[IndexFile], tags: Iterable[str], python: Sequence[int],
               target: str) -> PinDecision:
    """Keep `pin` or move it to the nearest version with a wheel for the interpreter.

    files: the project's files on the index; tags: the interpreter's wheel tags; python: its
    version ((3, 11, 7)); target: how the log names it ("CPython 3.11 (linux x86_64)").
    Pre-releases and yanked files are never chosen; an exact pin may name a yanked file (PEP 592).
    """
    accepted = frozenset(tags)
    releases = _releases(pin.name, files)
    pinned = parse_version(pin.version)
    same = [fs for v, fs in releases.items() if v == pinned]
    if not same:
        return PinDecision(pin, KEPT, pin.version, f"{pin.line}: {pin.version} is not on the index; left to the installer")
    pinned_files = [f for fs in same for f in fs]
    if _has_wheel_for(pinned_files, accepted, python, yanked_ok=True):
        return PinDecision(pin, KEPT, pin.version, f"{pin.line} has a wheel for {target}")
    if not any(wheel_info(f.filename) for f in pinned_files):
        return PinDecision(pin, KEPT, pin.version,
                           f"{pin.line} is published as a source distribution only; left to the installer")
    candidates = sorted(
        v for v, fs in releases.items()
        if not v.pre and v != pinned and _has_wheel_for(fs, accepted, python, yanked_ok=False)
    )
    assert pinned is not None  # `same` is not empty
    higher = [v for v in candidates if v > pinned]
    lower = [v for v in candidates if v < pinned]
    if higher:
        return PinDecision(pin, RELAXED, str(higher[0]), f"{pin.line} has no wheel for {target}; using {higher[0]}")
    if lower:
        return PinDecision(pin, RELAXED, str(lower[-1]),
                           f"{pin.line} has no wheel for {target}; using {lower[-1]} (no later version has one)")
    return PinDecision(pin, NO_WHEEL, pin.version,
                       f"{pin.line} has no wheel for {target}, nor has any other version of {pin.name}; "
                       "it is not built from source unasked")


@dataclass(frozen=True)
class RelaxPlan:
    requirements: list[str]  # the lines to install, in the planned order
    decisions: list[PinDecision]  # one per exact pin that was looked at

    @property
    def relaxed(self) -> list[PinDecision]:
        return [d for d in self.decisions if d.outcome == RELAXED]

    @property
    def no_build(self) -> list[str]:
        """Packages uv must not build from source (no version has a wheel for the interpreter)."""
        return [d.pin.name for d in self.decisions if d.outcome == NO_WHEEL]


def relax_requirements(requirements: Sequence[str], files: Mapping[str, Sequence[IndexFile]], tags: Iterable[str],
                       python: Sequence[int], target: str) -> RelaxPlan:
    """Every exact pin of `requirements` whose project's files are in `files` (keyed by normalised
    name; a project the index could not be asked about is absent and kept as written) decided."""
    accepted = list(tags)
    lines: list[str] = []
    decisions: list[PinDecision] = []
    for line in requirements:
        pin = parse_exact_pin(line)
        project_files = files.get(normalise(pin.name)) if pin else None
        if pin is None or project_files is None:
            lines.append(line)
            continue
        decision = decide_pin(pin, project_files, accepted, python, target)
        decisions.append(decision)
        lines.append(decision.line)
    return RelaxPlan(lines, decisions)


def exact_pins(requirements: Sequence[str]) -> list[ExactPin]:
    return [p for p in (parse_exact_pin(line) for line in requirements) if p is not None]
