"""The entry script: found, imported, checked and initialised as Azure's inference server does
(azureml-spec §7.1), and the input mode of its `run()` decided once.

- The script is `AML_APP_ROOT/AZUREML_ENTRY_SCRIPT` (an absolute entry script wins), imported under
  Azure's module name `entry_module` with the app root first on `sys.path`; without an entry
  script, the module `main` is imported, as Azure does.
- It must define `init()` and `run()`; `run` may not take `*args`, `**kwargs` or positional-only
  parameters, and needs one input parameter besides `request_headers`. Any of these, an import
  that raises, or an `init()` that raises is a startup error: the server stays up, unready, and
  says why (`start()` returns the message, the traceback goes to the log).
- Modes: `rawhttp` (`@rawhttp`: run(AMLRequest)), `schema` (`@input_schema`: run(**parameters
  taken from the JSON body)) and `raw` (run(body as text)); `@rawhttp` with `@input_schema` is an
  error, as on Azure.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import logging
import os
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any, Protocol

from cible.serving import shims

MODULE_NAME = "entry_module"  # Azure's name for the imported script (inference-schema keys its schemas by it)
logger = logging.getLogger("cible.serving")


class ScriptError(Exception):
    """The script cannot be served (it does not import, lacks init/run, or its run has the wrong shape)."""


class BadInput(Exception):
    """The request does not fit the script's input: 400 with this message."""


class UnsupportedInput(Exception):
    """The request's content type does not fit the script's input: 415 with this message."""


class Scorer(Protocol):
    """What the app serves: an entry script, or an MLflow model without one (mlflow_model.py)."""

    mode: str  # "raw" | "schema" | "rawhttp" | "mlflow"
    path: str | None
    run: Callable[..., Any] | None

    def init(self) -> None: ...

    def describe(self) -> str: ...


class EntryScript:
    """A loaded scoring script and how its run() is called."""

    def __init__(self, path: str | None, module: ModuleType) -> None:
        self.path, self.module = path, module
        where = path or getattr(module, "__file__", None) or module.__name__
        if not callable(getattr(module, "init", None)):
            raise ScriptError(f"User script at {where} does not have a init() function defined.")
        if not callable(getattr(module, "run", None)):
            raise ScriptError(f"User script at {where} does not have a run() function defined.")
        self.init_fn = module.init
        # Some SDKs generate a driver module that forwards to the real script; call the real run(), whose
        # signature and decorators are the ones that count (Azure does the same).
        driver = getattr(module, "driver_module", None)
        self.run = driver.run if isinstance(driver, ModuleType) and callable(getattr(driver, "run", None)) \
            else module.run
        self._analyse_run()

    def _analyse_run(self) -> None:
        try:
            params = list(inspect.signature(self.run).parameters.values())
        except (TypeError, ValueError) as exc:
            raise ScriptError(f"run() has no signature that can be read: {exc}") from None
        allowed = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        if any(param.kind not in allowed for param in params):
            raise ScriptError("run() cannot accept positional-only arguments, *args, or **kwargs.")
        self.wants_headers = any(param.name == "request_headers" for param in params)
        self.input_params = [param for param in params if param.name != "request_headers"]
        if not self.input_params:
            raise ScriptError('run() needs to accept an argument other than "request_headers".'
                              if self.wants_headers else "run() needs to accept an argument for input data.")
        first = self.input_params[0]
        self.input_name = first.name
        # run(data) skips building a kwargs dict on the hot path; keyword-only parameters need the keyword.
        self.positional = first.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD and not self.wants_headers
        decorated = schema_decorated(self.run)
        if shims.rawhttp_requested() and decorated:
            raise ScriptError("run() cannot be decorated with both @rawhttp and @input_schema")
        self.mode = "rawhttp" if shims.rawhttp_requested() else "schema" if decorated else "raw"

    def init(self) -> None:
        self.init_fn()

    def schema_arguments(self, body: dict[str, Any]) -> dict[str, Any]:
        """run()'s keyword arguments from a JSON object: each parameter from the key of its name, else its
        default; a parameter with neither is a 400 (Azure's message)."""
        arguments = {}
        for param in self.input_params:
            value = body.get(param.name, param.default)
            if value is inspect.Parameter.empty:
                raise BadInput(f"A value is not provided for the {param.name!r} parameter.")
            arguments[param.name] = value
        return arguments

    def describe(self) -> str:
        return f"{self.path or self.module.__name__} ({self.mode})"


def schema_decorated(func: Callable[..., Any]) -> bool:
    """Whether `func` carries inference-schema decorators (without inference-schema installed, none can)."""
    if "inference_schema" not in sys.modules:
        return False
    from inference_schema.schema_util import is_schema_decorated

    try:
        return bool(is_schema_decorated(func))
    except Exception:  # noqa: BLE001 - an odd callable is simply not decorated
        return False


def entry_script_path(app_root: str, entry_script: str | None) -> str | None:
    """The script's file: `entry_script` under `app_root` (an absolute one wins); None means module `main`."""
    if not entry_script:
        return None
    return os.path.abspath(os.path.join(app_root, entry_script.replace("/", os.sep)))


def load_entry_script(app_root: str, entry_script: str | None) -> EntryScript:
    """Import the script (again, on reload) and check its shape; ScriptError says what is wrong."""
    app_root = os.path.abspath(app_root)
    if app_root not in sys.path[:1]:
        sys.path.insert(0, app_root)
    shims.reset_rawhttp()
    _forget_schemas()
    path = entry_script_path(app_root, entry_script)
    try:
        if path is None:
            sys.modules.pop("main", None)
            module = importlib.import_module("main")
        else:
            if not os.path.isfile(path):
                raise ScriptError(f"The entry script {path} does not exist.")
            spec = importlib.util.spec_from_file_location(MODULE_NAME, path)
            if spec is None or spec.loader is None:
                raise ScriptError(f"The entry script {path} cannot be imported (not a Python file?).")
            module = importlib.util.module_from_spec(spec)
            # Registered while it runs, so dataclasses, pickle and typing can find the module by name.
            sys.modules[MODULE_NAME] = module
            spec.loader.exec_module(module)
    except ScriptError:
        raise
    except (Exception, SystemExit) as exc:
        sys.modules.pop(MODULE_NAME, None)
        logger.error("Failed to import the scoring script %s", path or "main", exc_info=True)
        raise ScriptError(f"Failed to import the scoring script {path or 'main'}: "
                          f"{type(exc).__name__}: {exc}") from exc
    return EntryScript(path, module)


def forget_modules_under(app_root: str) -> None:
    """Drop the modules imported from the app root (the script's helpers), so a reload imports them anew.
    Never an installed package, the standard library or cible itself, wherever the app root is."""
    root = os.path.abspath(app_root).rstrip(os.sep) + os.sep
    installed = tuple({os.path.abspath(p).rstrip(os.sep) + os.sep
                       for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(os.__file__))})
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if not file or name.split(".")[0] in ("cible", *sys.stdlib_module_names):
            continue
        file = os.path.abspath(file)
        if (file.startswith(root) and not file.startswith(installed)
                and "site-packages" not in file and "dist-packages" not in file):
            del sys.modules[name]


def _forget_schemas() -> None:
    """inference-schema keeps every decorated function's schema in module globals keyed by module and name;
    a reloaded script would find its old entry (and its output_schema decorator refuses a second one)."""
    util = sys.modules.get("inference_schema.schema_util")
    if util is None:
        return
    for table in (getattr(util, "__functions_schema__", {}), getattr(util, "__versions__", {})):
        for key in [key for key in table if key.startswith(MODULE_NAME + ".")]:
            del table[key]


def start(load: Callable[[], Scorer]) -> tuple[Scorer | None, str | None]:
    """Load a scorer and run its init(): (scorer, None) when ready, (None, message) when not. The traceback
    goes to the log (stderr), so a replica's output says what broke."""
    try:
        scorer = load()
    except ScriptError as exc:
        logger.error("The scoring script cannot be served: %s", exc)
        return None, str(exc)
    logger.info("Invoking the user's init() of %s", scorer.describe())
    try:
        scorer.init()
    except (Exception, SystemExit) as exc:
        logger.error("init() raised an exception", exc_info=True)
        return None, f"init() failed: {type(exc).__name__}: {exc}"
    logger.info("init() has completed")
    return scorer, None
