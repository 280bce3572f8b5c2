"""Conda environment files -> PyPI requirements (cible.core.environments.conda)."""

from __future__ import annotations

import pytest

from cible.core.environments import is_conda_only, parse_conda, pypi_name
from cible.core.errors import InvalidSpecError


def reqs(*deps):
    return parse_conda({"dependencies": list(deps)}).requirements


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("numpy", "numpy"),
        ("numpy=1.21.2", "numpy==1.21.2"),
        ("numpy=1.21", "numpy==1.21.*"),
        ("numpy=1", "numpy==1.*"),
        ("numpy=1.21.*", "numpy==1.21.*"),
        ("numpy=1.21*", "numpy==1.21.*"),
        ("numpy==1.21.2", "numpy==1.21.2"),
        ("numpy==1.21", "numpy==1.21"),
        ("numpy==1.21.*", "numpy==1.21.*"),
        ("scikit-learn>=1.0", "scikit-learn>=1.0"),
        ("scikit-learn >=1.0", "scikit-learn>=1.0"),
        ("pandas>=1.0,<2", "pandas<2,>=1.0"),
        ("pandas >=1.0, <2", "pandas<2,>=1.0"),
        ("scipy!=1.5.0", "scipy!=1.5.0"),
        ("scipy<1.11", "scipy<1.11"),
        ("numpy=1.21.2=py39_0", "numpy==1.21.2"),
        ("numpy==1.21.2=py39_0", "numpy==1.21.2"),
        ("numpy 1.21.2 py39_0", "numpy==1.21.2"),
        ("numpy 1.21", "numpy==1.21.*"),
        ("conda-forge::numpy=1.21.2", "numpy==1.21.2"),
        ("conda-forge/linux-64::numpy", "numpy"),
        ("defaults::scipy>=1.5", "scipy>=1.5"),
        ("numpy[version='>=1.20,<2']", "numpy<2,>=1.20"),
        ('numpy[version=">=1.20", build=py39*]', "numpy>=1.20"),
        ("pytorch", "torch"),
        ("pytorch=1.13.1", "torch==1.13.1"),
        ("py-xgboost=1.7", "xgboost==1.7.*"),
        ("python-graphviz", "graphviz"),
        ("msgpack-python", "msgpack"),
        ("matplotlib-base=3.5", "matplotlib==3.5.*"),
        ("PyYAML", "PyYAML"),
        ("some-unknown-package=2.0.1", "some-unknown-package==2.0.1"),
    ],
)
def test_conda_spec_becomes_pep508(spec, expected):
    assert reqs(spec) == [expected]


def test_pip_list_is_kept_in_order_after_conda_packages():
    plan = parse_conda({
        "name": "project_environment",
        "channels": ["conda-forge"],
        "dependencies": [
            "python=3.10",
            "pip=23.0",
            "numpy=1.24",
            {"pip": ["mlflow", "azureml-mlflow==1.51.0", "pandas >= 1.5; python_version >= '3.8'",
                     "--extra-index-url https://example.org/simple", "pkg @ https://example.org/pkg.whl"]},
        ],
    })
    assert plan.python == "3.10"
    assert plan.requirements == [
        "numpy==1.24.*", "mlflow", "azureml-mlflow==1.51.0", 'pandas>=1.5; python_version >= "3.8"',
        "--extra-index-url https://example.org/simple", "pkg @ https://example.org/pkg.whl",
    ]
    assert plan.conda_only == []


def test_pip_and_python_are_not_requirements():
    plan = parse_conda({"dependencies": ["pip", "pip>=21", "python", "conda-forge::pip=23.1"]})
    assert plan.requirements == [] and plan.conda_only == [] and plan.python is None


@pytest.mark.parametrize(
    ("spec", "python", "noted"),
    [
        ("python=3.10", "3.10", False),
        ("python=3.8", "3.8", False),
        ("python==3.11", "3.11", False),
        ("python=3.10.4", "3.10", True),
        ("python 3.9", "3.9", False),
        ("python=3.10.*", "3.10", False),
        ("python>=3.8", None, True),
        ("python=3", None, True),
        ("python", None, False),
    ],
)
def test_python_pin(spec, python, noted):
    plan = parse_conda({"dependencies": [spec]})
    assert plan.python == python
    assert bool(plan.notes) is noted


@pytest.mark.parametrize(
    "name",
    ["cudatoolkit", "cudatoolkit=11.3", "mkl", "mkl-service", "libgcc", "libgcc-ng", "openmpi=4.1", "cudnn",
     "_libgcc_mutex", "_openmp_mutex", "cuda-nvcc", "r-base", "gxx_linux-64", "nccl", "openssl", "blas=*=mkl",
     "conda-forge::libstdcxx-ng"],
)
def test_conda_only_packages_are_reported_not_installed(name):
    plan = parse_conda({"dependencies": [name, "numpy"]})
    assert plan.requirements == ["numpy"]
    assert len(plan.conda_only) == 1
    assert is_conda_only(plan.conda_only[0])


def test_conda_only_names_are_reported_once_in_order():
    plan = parse_conda({"dependencies": ["mkl", "cudatoolkit=11.3", "mkl=2021", "scipy"]})
    assert plan.conda_only == ["mkl", "cudatoolkit"]


def test_name_map_and_notes():
    assert pypi_name("pytorch") == "torch"
    assert pypi_name("py_xgboost") == "xgboost"  # normalised lookup
    assert pypi_name("scikit-learn") == "scikit-learn"
    plan = parse_conda({"dependencies": ["pytorch=2.1", "numpy=1.2.3=py_0"]})
    assert any("'pytorch' is installed as 'torch'" in n for n in plan.notes)
    assert any("build string 'py_0'" in n for n in plan.notes)


def test_conda_file_as_text_is_parsed():
    text = "name: x\ndependencies:\n  - python=3.10\n  - pip:\n    - six\n"
    plan = parse_conda(text)
    assert plan.python == "3.10" and plan.requirements == ["six"]


def test_empty_and_missing_dependencies():
    assert parse_conda({"name": "x"}).requirements == []
    assert parse_conda({"dependencies": None}).requirements == []


@pytest.mark.parametrize(
    ("conda", "where", "what"),
    [
        ({"dependencies": ["numpy", 3.8]}, "conda_file.dependencies[1]", "expected a conda package spec"),
        ({"dependencies": ["numpy", {"pip": ["six", 7]}]}, "conda_file.dependencies[1].pip[1]", "must be a string"),
        ({"dependencies": [{"pip": ["numpy=1.2"]}]}, "conda_file.dependencies[0].pip[0]", "pip pins with '=='"),
        ({"dependencies": [{"pip": [""]}]}, "conda_file.dependencies[0].pip[0]", "empty pip requirement"),
        ({"dependencies": [{"pip": ["-r requirements.txt"]}]}, "conda_file.dependencies[0].pip[0]", "refers to a file"),
        ({"dependencies": [{"pip": "six"}]}, "conda_file.dependencies[0].pip", "expected a list"),
        ({"dependencies": [{"conda": ["six"]}]}, "conda_file.dependencies[0]", "only a 'pip:' list"),
        ({"dependencies": ["numpy", "scipy >=1.0|<0.5"]}, "conda_file.dependencies[1]", "'|' alternatives"),
        ({"dependencies": ["numpy=abc"]}, "conda_file.dependencies[0]", "is not a version"),
        ({"dependencies": ["!!!"]}, "conda_file.dependencies[0]", "is not a conda package spec"),
        ({"dependencies": "numpy"}, "conda_file.dependencies", "expected a list"),
        (["numpy"], "conda_file", "expected a mapping"),
        ("./environment.yml", "conda_file", "expected the conda file's content"),
    ],
)
def test_errors_name_the_field(conda, where, what):
    with pytest.raises(InvalidSpecError) as info:
        parse_conda(conda)
    assert info.value.message.startswith(where + ":"), info.value.message
    assert what in info.value.message
    assert info.value.details == {"field": where}


def test_error_field_prefix():
    with pytest.raises(InvalidSpecError) as info:
        parse_conda({"dependencies": [1]}, field="environment.conda_file")
    assert info.value.message.startswith("environment.conda_file.dependencies[0]:")
