"""AZUREML_MODEL_DIR for a staged model (stdlib only): shared by the online scoring server (serving/main.py)
and the batch runner (serving/batch), which runs where uvicorn may not be installed."""

from __future__ import annotations

import os
import shutil
import tempfile


def model_folder(model_path: str, model_name: str | None, state_file: str | None) -> str:
    """The AZUREML_MODEL_DIR of `--model-path`: `<state file's folder>/azureml-models` holding `<model name>`,
    a copy of the staged model's tree made without copying the data where the file system allows.

    Not one link to the staged folder: MLflow refuses a model whose folder, or whose MLmodel file, is a
    link resolving outside it ("resolved path is outside the artifact directory"), and loading
    `AZUREML_MODEL_DIR/<name>` with `mlflow.pyfunc.load_model` is what Azure's MLflow scoring scripts
    do. So folders are real folders, and each file is a hard link (same data, no copy), else a copy
    when small (MLmodel and other metadata), else a symbolic link (big weights on another file
    system or a read-only mount). A restarted replica rebuilds it."""
    base = os.path.dirname(os.path.abspath(state_file)) if state_file else tempfile.mkdtemp(prefix="cible-serving-")
    folder = os.path.join(base, "azureml-models")
    os.makedirs(folder, exist_ok=True)
    source = os.path.realpath(model_path)
    name = model_name or os.path.basename(os.path.normpath(model_path)) or "model"
    target = os.path.join(folder, name)
    temporary = f"{target}.{os.getpid()}.tmp"
    _remove(temporary)
    if os.path.isdir(source):
        for root, _, files in os.walk(source, followlinks=True):
            mirror = os.path.join(temporary, os.path.relpath(root, source))
            os.makedirs(mirror, exist_ok=True)
            for file in files:
                _place(os.path.join(root, file), os.path.join(mirror, file))
    else:
        _place(source, temporary)
    old = f"{target}.{os.getpid()}.old"
    if os.path.lexists(target):  # from an earlier start: set aside, then swapped (a folder cannot be replaced)
        os.rename(target, old)
    os.rename(temporary, target)
    _remove(old)
    return folder


SMALL_FILE = 1 << 20


def _place(source: str, destination: str) -> None:
    """`destination` shows `source`: a hard link, else a copy of a small file, else a symbolic link."""
    try:
        os.link(source, destination)
        return
    except OSError:  # another file system, a read-only mount, a missing file, or no permission
        pass
    try:
        if os.path.getsize(source) <= SMALL_FILE:
            shutil.copy2(source, destination)
            return
    except OSError:
        pass
    os.symlink(source, destination)


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)  # links and copies only: what they point at is untouched
    elif os.path.lexists(path):
        os.unlink(path)
