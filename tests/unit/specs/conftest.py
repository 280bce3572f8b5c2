"""Helpers for spec tests: write YAML into tmp_path and load it."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from cible.core.errors import InvalidSpecError
from cible.core.specs.azureml.loader import LoadedSpec, load_spec


@pytest.fixture
def write(tmp_path: Path):
    """write("job.yml", yaml_text) -> path; text is dedented."""

    def _write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return path

    return _write


@pytest.fixture
def load(write, tmp_path, monkeypatch):
    """load(yaml_text, kind="job", **kwargs) -> LoadedSpec, via ./job.yml so messages say "job.yml:L:C"."""
    monkeypatch.chdir(tmp_path)

    def _load(text: str, kind: str = "job", file_name: str = "job.yml", **kwargs) -> LoadedSpec:
        write(file_name, text)
        return load_spec(file_name, kind, **kwargs)

    return _load


@pytest.fixture
def load_error(load):
    """load_error(yaml_text, kind="job") -> the InvalidSpecError raised."""

    def _load_error(text: str, kind: str = "job", **kwargs) -> InvalidSpecError:
        with pytest.raises(InvalidSpecError) as info:
            load(text, kind, **kwargs)
        return info.value

    return _load_error
