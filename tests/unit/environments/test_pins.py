"""Exact pins without a wheel for the interpreter -> the nearest version with one (cible.core.environments.pins).

The file lists are PyPI's (Linux wheels and sdists of those releases, as the JSON simple API gave
them); no network here.
"""

from __future__ import annotations

import pytest

from cible.core.environments import pins
from cible.core.environments.pins import IndexFile

MANYLINUX_2014 = ("manylinux_2_17_x86_64.manylinux2014_x86_64", "manylinux_2_17_aarch64.manylinux2014_aarch64")


def wheels(dist: str, version: str, pythons: list[str], platforms=MANYLINUX_2014, requires: str | None = ">=3.8",
           build: str = "") -> list[IndexFile]:
    files = []
    for py in pythons:
        abi = py + ("m" if py in ("cp36", "cp37") else "")
        for plat in platforms:
            files.append(IndexFile(f"{dist}-{version}{build}-{py}-{abi}-{plat}.whl", requires))
    return files


def sdist(project: str, version: str, requires: str | None = ">=3.8", ext: str = ".tar.gz", **kw) -> IndexFile:
    return IndexFile(f"{project}-{version}{ext}", requires, **kw)


SKLEARN = [
    *(sdist("scikit-learn", v) for v in ("1.1.1", "1.1.2", "1.1.3", "1.2.0rc1")),
    *wheels("scikit_learn", "1.1.1", ["cp38", "cp39", "cp310"]),
    *wheels("scikit_learn", "1.1.2", ["cp38", "cp39", "cp310"]),
    *wheels("scikit_learn", "1.1.3", ["cp38", "cp39", "cp310", "cp311"]),
    *wheels("scikit_learn", "1.2.0rc1", ["cp38", "cp39", "cp310", "cp311"]),
]
NUMPY = [
    *wheels("numpy", "1.21.6", ["cp310"], requires=">=3.7,<3.11"),
    *wheels("numpy", "1.21.6", ["cp37", "cp38", "cp39"], ("manylinux_2_12_x86_64.manylinux2010_x86_64",
                                                        "manylinux_2_17_aarch64.manylinux2014_aarch64"), ">=3.7,<3.11"),
    sdist("numpy", "1.21.6", ">=3.7,<3.11", ".zip"),
    *wheels("numpy", "1.22.4", ["cp38", "cp39", "cp310"]), sdist("numpy", "1.22.4", ext=".zip"),
    *wheels("numpy", "1.23.1", ["cp38", "cp39", "cp310"]), sdist("numpy", "1.23.1"),
    *wheels("numpy", "1.23.2", ["cp38", "cp39", "cp310", "cp311"]), sdist("numpy", "1.23.2"),
]
PANDAS = [
    *wheels("pandas", "1.4.3", ["cp38", "cp39", "cp310"]), sdist("pandas", "1.4.3"),
    *wheels("pandas", "1.4.4", ["cp38", "cp39", "cp310"]), sdist("pandas", "1.4.4"),
    *wheels("pandas", "1.5.0", ["cp38", "cp39", "cp310", "cp311"]), sdist("pandas", "1.5.0"),
]
TORCH = [
    # torch 1.13.0 gained a cp311 wheel for x86_64 only; aarch64 has cp311 from 2.0.0
    *wheels("torch", "1.13.0", ["cp37", "cp38", "cp39", "cp310"], ("manylinux1_x86_64", "manylinux2014_aarch64"), ">=3.7.0"),
    *wheels("torch", "1.13.0", ["cp311"], ("manylinux1_x86_64",), ">=3.7.0"),
    *wheels("torch", "2.0.0", ["cp38", "cp39", "cp310", "cp311"], ("manylinux2014_aarch64",), ">=3.8.0", build="-1"),
    *wheels("torch", "2.0.0", ["cp38", "cp39", "cp310", "cp311"], ("manylinux1_x86_64", "manylinux2014_aarch64"), ">=3.8.0"),
]
XGBOOST = [
    IndexFile("xgboost-1.3.3-py3-none-manylinux2010_x86_64.whl", ">=3.6"),
    IndexFile("xgboost-1.3.3-py3-none-manylinux2014_aarch64.whl", ">=3.6"),
    sdist("xgboost", "1.3.3", ">=3.6"),
]
INDEX = {"scikit-learn": SKLEARN, "numpy": NUMPY, "pandas": PANDAS, "torch": TORCH, "xgboost": XGBOOST}


def tags(machine: str = "x86_64", minor: int = 11, glibc: str = "glibc 2.35") -> list[str]:
    return pins.interpreter_tags({"implementation": "cpython", "version": [3, minor, 7], "abiflags": "",
                                  "machine": machine, "glibc": glibc})


def decide(line: str, machine: str = "x86_64", minor: int = 11) -> pins.PinDecision:
    pin = pins.parse_exact_pin(line)
    assert pin is not None
    return pins.decide_pin(pin, INDEX[pins.normalise(pin.name)], tags(machine, minor), (3, minor, 7),
                           f"CPython 3.{minor} (linux {machine})")


@pytest.mark.parametrize("machine", ["x86_64", "aarch64"])
@pytest.mark.parametrize(("line", "version"), [
    ("scikit-learn==1.1.2", "1.1.3"),  # cp38-cp310 only; 1.1.3 adds cp311 (the 1.2.0rc1 pre-release is never chosen)
    ("scikit-learn==1.1.1", "1.1.3"),
    ("numpy==1.21.6", "1.23.2"),  # its wheels stop at cp310 (and Requires-Python <3.11); 1.23.2 is the first cp311
    ("numpy==1.23.1", "1.23.2"),
    ("pandas==1.4.3", "1.5.0"),  # 1.4.4 has no cp311 either
])
def test_a_pin_without_a_wheel_moves_to_the_nearest_higher_version_with_one(line: str, version: str, machine: str):
    decision = decide(line, machine)
    assert decision.outcome == pins.RELAXED and decision.version == version
    assert decision.line == f"{line.split('==')[0]}=={version}"
    assert decision.reason == f"{line} has no wheel for CPython 3.11 (linux {machine}); using {version}"


@pytest.mark.parametrize(("line", "machine", "outcome", "version"), [
    ("xgboost==1.3.3", "x86_64", pins.KEPT, "1.3.3"),  # py3-none-manylinux2010: any CPython 3
    ("xgboost==1.3.3", "aarch64", pins.KEPT, "1.3.3"),
    ("torch==1.13.0", "x86_64", pins.KEPT, "1.13.0"),  # a cp311 manylinux1 wheel was added later
    ("torch==1.13.0", "aarch64", pins.RELAXED, "2.0.0"),
    ("scikit-learn==1.1.3", "x86_64", pins.KEPT, "1.1.3"),
])
def test_pins_with_a_compatible_wheel_are_kept(line: str, machine: str, outcome: str, version: str):
    decision = decide(line, machine)
    assert (decision.outcome, decision.version) == (outcome, version)
    if outcome == pins.KEPT:
        assert decision.line == line and "has a wheel for CPython 3.11" in decision.reason


def test_on_the_requested_python_nothing_moves():
    for line in ("scikit-learn==1.1.2", "numpy==1.21.6", "pandas==1.4.3", "torch==1.13.0", "xgboost==1.3.3"):
        assert decide(line, minor=8).outcome == pins.KEPT, line


def test_with_no_higher_version_the_nearest_lower_one_is_used():
    files = [*wheels("oldpkg", "1.0", ["cp311"]), *wheels("oldpkg", "1.1", ["cp311"]), *wheels("oldpkg", "2.0", ["cp312"])]
    pin = pins.parse_exact_pin("oldpkg==2.0")
    decision = pins.decide_pin(pin, files, tags(), (3, 11, 7), "CPython 3.11 (linux x86_64)")
    assert (decision.outcome, decision.version) == (pins.RELAXED, "1.1")
    assert decision.reason.endswith("using 1.1 (no later version has one)")


def test_requires_python_and_yanked_files_rule_versions_out():
    files = [*wheels("pkg", "1.0", ["cp310"]),
             IndexFile("pkg-1.1-py3-none-any.whl", ">=3.12"),  # pure, but not for 3.11
             IndexFile("pkg-1.2-py3-none-any.whl", ">=3.8", yanked=True),
             IndexFile("pkg-1.3-py3-none-any.whl", ">=3.8")]
    decision = pins.decide_pin(pins.parse_exact_pin("pkg==1.0"), files, tags(), (3, 11, 7), "T")
    assert decision.version == "1.3"
    # an exact pin of a yanked release is still installable (PEP 592): kept
    kept = pins.decide_pin(pins.parse_exact_pin("pkg==1.2"), files, tags(), (3, 11, 7), "T")
    assert kept.outcome == pins.KEPT


def test_source_only_and_unknown_pins_are_left_to_the_installer():
    files = [sdist("puresrc", "0.3"), IndexFile("puresrc-0.4-py3-none-any.whl")]
    src = pins.decide_pin(pins.parse_exact_pin("puresrc==0.3"), files, tags(), (3, 11, 7), "T")
    assert src.outcome == pins.KEPT and "source distribution only" in src.reason
    missing = pins.decide_pin(pins.parse_exact_pin("puresrc==9.9"), files, tags(), (3, 11, 7), "T")
    assert missing.outcome == pins.KEPT and "not on the index" in missing.reason


def test_a_compiled_package_with_no_wheel_anywhere_is_not_built_from_source():
    files = [*wheels("oldc", "0.1", ["cp38"]), sdist("oldc", "0.1"), *wheels("oldc", "0.2", ["cp39"]), sdist("oldc", "0.2")]
    plan = pins.relax_requirements(["oldc==0.1"], {"oldc": files}, tags(), (3, 11, 7), "T")
    assert plan.requirements == ["oldc==0.1"] and plan.no_build == ["oldc"]
    assert plan.decisions[0].outcome == pins.NO_WHEEL and "not built from source unasked" in plan.decisions[0].reason


def test_relax_requirements_keeps_order_extras_markers_and_other_lines():
    reqs = ["--extra-index-url https://example.org/simple", "scikit-learn==1.1.2", "numpy==1.21.6",
            "pandas[performance]==1.4.3; python_version >= '3.8'", "numpy>=1.20", "azureml-defaults==1.48.0",
            "xgboost==1.3.3", "mlflow==2.*"]
    index = {k: v for k, v in INDEX.items()}  # azureml-defaults: the index was not asked -> kept as written
    plan = pins.relax_requirements(reqs, index, tags(), (3, 11, 7), "CPython 3.11 (linux x86_64)")
    assert plan.requirements == [
        "--extra-index-url https://example.org/simple", "scikit-learn==1.1.3", "numpy==1.23.2",
        "pandas[performance]==1.5.0; python_version >= '3.8'", "numpy>=1.20", "azureml-defaults==1.48.0",
        "xgboost==1.3.3", "mlflow==2.*",
    ]
    assert [(d.pin.name, d.version) for d in plan.relaxed] == [("scikit-learn", "1.1.3"), ("numpy", "1.23.2"), ("pandas", "1.5.0")]
    assert [d.pin.name for d in plan.decisions if d.outcome == pins.KEPT] == ["xgboost"]


@pytest.mark.parametrize("line", ["numpy", "numpy>=1.2", "numpy==1.21.*", "numpy~=1.21.0", "-e .", "https://x/y.whl",
                                  "numpy==1.2,<2", ""])
def test_only_single_exact_versions_are_pins(line: str):
    assert pins.parse_exact_pin(line) is None


def test_versions_order_as_pep_440():
    order = ["1.0.dev1", "1.0a1", "1.0b2", "1.0rc1", "1.0", "1.0.post1", "1.0.1", "1.1", "2!0.1"]
    parsed = [pins.parse_version(v) for v in order]
    assert all(p is not None for p in parsed)
    assert sorted(parsed) == parsed
    assert pins.parse_version("1.0") == pins.parse_version("1.0.0")
    assert pins.parse_version("1.2rc1").pre and not pins.parse_version("1.2.post1").pre


@pytest.mark.parametrize(("spec", "python", "ok"), [
    (">=3.7,<3.11", (3, 11, 7), False), (">=3.7,<3.11", (3, 10, 13), True), (">=3.8.0", (3, 11, 7), True),
    ("~=3.8", (3, 11, 0), True), ("~=3.8.1", (3, 9, 0), False), ("!=3.11.*", (3, 11, 7), False),
    ("==3.*", (3, 11, 7), True), (">3.11", (3, 11, 7), True), ("<=3.11", (3, 11, 7), False), (None, (3, 11, 7), True),
    ("garbage", (3, 11, 7), True),
])
def test_requires_python(spec, python, ok):
    assert pins.python_allows(spec, python) is ok


def test_file_names():
    assert pins.wheel_info("torch-2.0.0-1-cp311-cp311-manylinux2014_aarch64.whl") == (
        "torch", "2.0.0", frozenset({"cp311-cp311-manylinux2014_aarch64"}))
    assert pins.wheel_info("numpy-1.23.2-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl")[2] == frozenset(
        {"cp311-cp311-manylinux_2_17_x86_64", "cp311-cp311-manylinux2014_x86_64"})
    assert pins.sdist_version("scikit-learn-1.1.2.tar.gz", "scikit_learn") == "1.1.2"
    assert pins.sdist_version("azureml_defaults-1.48.0.tar.gz", "azureml-defaults") == "1.48.0"
    assert pins.sdist_version("numpy-1.21.6.zip", "numpy") == "1.21.6"
    assert pins.sdist_version("other-1.0.tar.gz", "numpy") is None


def test_interpreter_tags_worked_out_with_the_standard_library():
    x86 = tags("x86_64", glibc="glibc 2.17")
    assert x86[0] == "cp311-cp311-manylinux_2_17_x86_64"
    for tag in ("cp311-cp311-manylinux2014_x86_64", "cp311-cp311-manylinux2010_x86_64", "cp311-cp311-manylinux1_x86_64",
                "cp311-abi3-manylinux_2_5_x86_64", "cp38-abi3-manylinux2014_x86_64", "py3-none-manylinux2010_x86_64",
                "cp311-cp311-linux_x86_64", "py3-none-any", "py311-none-any", "cp311-none-any", "py30-none-any"):
        assert tag in x86, tag
    for tag in ("cp311-cp311-manylinux_2_18_x86_64", "cp310-cp310-manylinux2014_x86_64", "cp312-abi3-linux_x86_64"):
        assert tag not in x86, tag
    arm = tags("aarch64", glibc="glibc 2.31")
    assert "cp311-cp311-manylinux2014_aarch64" in arm and "cp311-cp311-manylinux_2_31_aarch64" in arm
    assert not any("manylinux1" in t or "manylinux2010" in t or "manylinux_2_16" in t for t in arm)
    # free-threaded CPython takes no abi3 wheels
    ft = pins.interpreter_tags({"version": [3, 13], "abiflags": "t", "machine": "x86_64", "glibc": "glibc 2.35"})
    assert "cp313-cp313t-manylinux_2_17_x86_64" in ft and not any("abi3" in t for t in ft)
    # no glibc (musl unknown): only linux_<arch> and pure wheels
    bare = pins.interpreter_tags({"version": [3, 11], "machine": "x86_64"})
    assert not any("manylinux" in t for t in bare) and "cp311-cp311-linux_x86_64" in bare


def test_tags_given_by_packaging_are_taken_as_they_are():
    assert pins.interpreter_tags({"version": [3, 11], "tags": ["cp311-cp311-foo", "py3-none-any"]}) == [
        "cp311-cp311-foo", "py3-none-any"]


def test_the_stdlib_tags_match_packaging_for_this_interpreter():
    packaging_tags = pytest.importorskip("packaging.tags")
    import os
    import platform
    import sys

    if sys.platform != "linux" or sys.implementation.name != "cpython":
        pytest.skip("the stdlib tags are worked out for CPython on Linux")
    facts = {"implementation": "cpython", "version": list(sys.version_info[:2]), "abiflags": sys.abiflags,
             "machine": platform.machine(), "glibc": os.confstr("CS_GNU_LIBC_VERSION")}
    assert set(pins.interpreter_tags(facts)) == {str(t) for t in packaging_tags.sys_tags()}
