"""The node side's code as a folder a host with nothing but Python 3 can run: the bundle.

cible copies to an attached host the modules its agent and launcher import (found by an AST walk
of the entry points' imports, lazy ones included: a job's run reaches some only inside functions)
and runs `python3 -m cible.agent.detach …` with the bundle's folder on the path. Not a zipapp:
the launcher symlinks and bind-mounts the package folder (`_cible_only_path`, the sandbox), so it
must be a real folder.

The folder is `<cache_dir>/agent-<sha>/cible/…`, `sha` a hash of every file's path and bytes, so an
unchanged node side is built once and sent once (a host keeps each sha it was sent).

A package the node side only passes through (it imports submodules of it, never names from it)
whose `__init__` imports more than the standard library gets a stand-in `__init__` holding only a
docstring (and `__version__` for `cible` itself): `cible/__init__.py` reaches the SDK lazily, and
`cible/core/environments/__init__.py` imports PyYAML, while the launcher needs only
`cible.core.environments.pins`. A node-side import of names from such a package makes its real
`__init__` part of the bundle, and the import rule below then names what it reaches.

tests/unit/test_import_rules.py holds the rule that keeps the bundle runnable: every module in it
imports only the standard library and modules of the bundle (`NodeSide.outside`).
"""

from __future__ import annotations

import ast
import gzip
import hashlib
import io
import os
import shutil
import sys
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

PACKAGE = "cible"
# The node side's entry points: the agent (`python -m cible.agent`, started by `cible.agent.detach`)
# and the launcher (`python -m cible.launch`), which the agent starts for each job.
ENTRY_POINTS = ("cible.agent.__main__", "cible.agent.agent", "cible.agent.detach", "cible.agent.remote",
                "cible.agent.pilot",
                "cible.launch.__main__", "cible.launch.launcher")
# Third-party imports the node side may make because it copes without them: (module, import) → why.
OPTIONAL_IMPORTS = {
    ("cible.launch.environments", "uv"): "a venv build falls back to the uv on PATH",
    ("cible.node.gpus", "pynvml"): "without NVML a host's GPUs are its /dev/nvidiaN files, not read in use",
}
# Packages that run in a job's own environment, not on the node's bare Python, copied whole: the
# scoring server of a replica and the batch runner (`python -m cible.serving…`), whose third-party
# imports (uvicorn, httptools, orjson) come with the replica's environment (core/environments/serving.py).
JOB_SIDE_PACKAGES = ("cible.serving",)
BUNDLE_PREFIX = "agent-"
SHA_LENGTH = 16  # hex digits of the content hash in the folder's name


@dataclass(frozen=True)
class Import:
    line: int
    module: str  # absolute, relative imports resolved
    names: tuple[str, ...] = ()  # `from module import names` (empty for `import module`)


@dataclass
class NodeSide:
    """The node side's modules as the walk found them."""

    sources: dict[str, Path] = field(default_factory=dict)  # module → its file, copied as is
    stand_ins: dict[str, Path] = field(default_factory=dict)  # package → the __init__ replaced by a stand-in
    outside: list[str] = field(default_factory=list)  # "module:line imports X": third-party, not optional
    problems: list[str] = field(default_factory=list)  # imports the bundle cannot satisfy

    def files(self, package_dir: Path) -> dict[str, bytes]:
        """Every file of the bundle by its path under the folder (`cible/...`): sources, stand-ins, data."""
        root = package_dir.parent
        out = {path.relative_to(root).as_posix(): path.read_bytes() for path in self.sources.values()}
        for package, init in self.stand_ins.items():
            out[init.relative_to(root).as_posix()] = _stand_in(package, init)
        for path in self.sources.values():  # a package used whole brings the data files beside it
            if path.name == "__init__.py":
                for data in sorted(path.parent.iterdir()):
                    if data.is_file() and not data.name.endswith((".py", ".pyc")) and not data.name.startswith("."):
                        out[data.relative_to(root).as_posix()] = data.read_bytes()
        return dict(sorted(out.items()))


@dataclass(frozen=True)
class Bundle:
    path: Path  # the folder to put on the path: it holds `cible/`
    sha: str
    files: tuple[str, ...]

    def tar_bytes(self) -> bytes:
        """The folder as a .tar.gz (`cible/...` inside), the same bytes for the same content."""
        buffer = io.BytesIO()
        with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w",
                                                                                  format=tarfile.PAX_FORMAT) as tar:
            for rel in self.files:
                data = (self.path / rel).read_bytes()
                info = tarfile.TarInfo(rel)
                info.size, info.mode, info.mtime = len(data), 0o644, 0
                tar.addfile(info, io.BytesIO(data))
        return buffer.getvalue()


def package_dir() -> Path:
    """The folder of the `cible` package this server runs (a source tree's or site-packages')."""
    import cible

    return Path(cible.__file__).resolve().parent


def node_side(package: Path | None = None, entry_points: tuple[str, ...] = ENTRY_POINTS) -> NodeSide:
    """Walk the imports from `entry_points` (lazy ones included) through the `cible` package at `package`."""
    package = package or package_dir()
    found = NodeSide()
    passed: set[str] = set()  # packages only passed through: parents, `from package import submodule`
    todo = list(entry_points)
    while todo:
        name = todo.pop()
        if name in found.sources:
            continue
        path = _file_of(package, name)
        if path is None:
            found.problems.append(f"{name} is imported by the node side but is no module of {package}")
            continue
        found.sources[name] = path
        passed.update(_parents(name))
        for imp in imports_of(path, name):
            top = imp.module.split(".")[0]
            if top != PACKAGE:
                if top not in sys.stdlib_module_names and top != "__future__" \
                        and (name, top) not in OPTIONAL_IMPORTS:
                    found.outside.append(f"{_shown(path, package)}:{imp.line} imports {imp.module}")
                continue
            submodules = [f"{imp.module}.{n}" for n in imp.names if _file_of(package, f"{imp.module}.{n}")]
            todo += submodules
            if imp.names and len(submodules) == len(imp.names):
                passed.add(imp.module)
            elif not imp.names and _is_package(package, imp.module):
                passed.add(imp.module)  # a bare `import package`: its __file__ at most
            else:
                todo.append(imp.module)  # a module, or names a package's __init__ defines: the real file
    for pkg in sorted(passed - set(found.sources)):
        init = _file_of(package, pkg)
        if init is not None and _stdlib_only(init, pkg):
            found.sources[pkg] = init
        elif init is not None:
            found.stand_ins[pkg] = init
    found.sources = dict(sorted(found.sources.items()))
    return found


def build_bundle(cache_dir: Path, package: Path | None = None) -> Bundle:
    """The bundle of this server's node side under `cache_dir`, built unless one of the same content is there."""
    package = package or package_dir()
    side = node_side(package)
    if side.problems:
        raise RuntimeError("the node side cannot be bundled: " + "; ".join(side.problems))
    files = {**side.files(package), **job_side_files(package)}
    digest = hashlib.sha256()
    for rel, data in files.items():
        digest.update(rel.encode() + b"\0" + hashlib.sha256(data).digest())
    sha = digest.hexdigest()[:SHA_LENGTH]
    target = cache_dir / f"{BUNDLE_PREFIX}{sha}"
    if not target.is_dir():
        cache_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{BUNDLE_PREFIX}{sha}-", dir=cache_dir))
        try:
            for rel, data in files.items():
                dest = staging / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(data)
            staging.chmod(0o755)
            try:
                os.rename(staging, target)  # whole or not at all: a folder of this name is complete
            except OSError:
                if not target.is_dir():  # not another builder that got there first
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return Bundle(path=target, sha=sha, files=tuple(files))


def job_side_files(package: Path) -> dict[str, bytes]:
    """The files of JOB_SIDE_PACKAGES by their path in the bundle (sources and data, no caches)."""
    out = {}
    for name in JOB_SIDE_PACKAGES:
        folder = package.joinpath(*name.split(".")[1:])
        for path in sorted(folder.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and not path.name.endswith(".pyc"):
                out[path.relative_to(package.parent).as_posix()] = path.read_bytes()
    return out


# -- the walk ---------------------------------------------------------------------------------------
def imports_of(path: Path, module: str) -> list[Import]:
    """Every import in the file of `module` (in functions too), relative ones made absolute."""
    tree = ast.parse(path.read_bytes(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [Import(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            found.append(Import(node.lineno, base, tuple(alias.name for alias in node.names if alias.name != "*")))
    return found


def _file_of(package: Path, module: str) -> Path | None:
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return None
    base = package.joinpath(*parts[1:])
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    source = base.with_suffix(".py") if len(parts) > 1 else None
    return source if source is not None and source.is_file() else None


def _is_package(package: Path, module: str) -> bool:
    path = _file_of(package, module)
    return path is not None and path.name == "__init__.py"


def _parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _stdlib_only(init: Path, package: str) -> bool:
    return all(imp.module.split(".")[0] in sys.stdlib_module_names or imp.module == "__future__"
               for imp in imports_of(init, package))


def _stand_in(package: str, init: Path) -> bytes:
    where = package.replace(".", "/") + "/__init__.py"
    text = (f'"""Stand-in for {where} in the node-side bundle (see cible.backends.ssh.bundle): the node side\n'
            'imports only submodules of this package, and the real file imports modules the bundle leaves out."""\n')
    version = _version(init)
    if version is not None:
        text += f"\n__version__ = {version!r}\n"
    return text.encode()


def _version(init: Path) -> str | None:
    for node in ast.parse(init.read_bytes()).body:
        names = [t.id for t in node.targets if isinstance(t, ast.Name)] if isinstance(node, ast.Assign) else []
        if "__version__" in names and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            return node.value.value
    return None


def _shown(path: Path, package: Path) -> str:
    return path.relative_to(package.parent).as_posix()
