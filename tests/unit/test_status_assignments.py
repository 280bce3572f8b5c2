"""Only an entity's transition function changes its state (docs/architecture.md, rule 1).

The check is syntactic: it walks the AST of every module under src/cible and collects each
place that sets a state field of another object (`x.status = …`, `x.provisioning_state = …`,
`x.state = …`, `setattr(x, "status", …)`), or an instance's power (`InstanceState(power=…)`,
`x.model_copy(update={"power": …})`, `x.power = …`). An object setting its own field
(`self.state = …`, e.g. the launcher's) is its own business and not collected. A row created
with its first state (`ComputeRow(provisioning_state=…)`) is no move and not collected either.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import cible

SRC = Path(cible.__file__).resolve().parent
STATE_FIELDS = ("provisioning_state", "status", "state", "power")

# field -> the functions (module path under cible/ :: qualified name) allowed to set it.
ALLOWED: dict[str, set[str]] = {
    # A compute's provisioning state (cible.core.lifecycle.computes).
    # An online endpoint's or deployment's (cible.core.lifecycle.endpoints).
    "provisioning_state": {"server/services/lifecycle.py::move_compute", "server/services/lifecycle.py::move_endpoint"},
    # A job's status (cible.core.lifecycle.jobs) and a quota request's (cible.core.lifecycle.quota_requests).
    "status": {"server/services/jobs.py::set_status", "server/services/lifecycle.py::move_quota_request"},
    # A cluster node's state (cible.core.lifecycle.nodes): the cluster pass applies its plan's moves.
    # A Ray node's life in the Ray provider: its own table (cible.backends.ray), its one `_move`.
    "state": {"server/clusters/cluster_pass.py::move_node",
              "backends/ray/provider.py::RayNodeProvider._move"},
    # An instance's power (cible.core.lifecycle.instance_power).
    "power": {"server/services/lifecycle.py::move_power"},
}


@dataclass(frozen=True)
class StateWrite:
    module: str  # path under cible/
    function: str  # qualified name of the enclosing function ("" at module level)
    field: str
    line: int

    @property
    def where(self) -> str:
        return f"{self.module}::{self.function}"


class _Finder(ast.NodeVisitor):
    def __init__(self, module: str) -> None:
        self.module = module
        self.scope: list[str] = []
        self.found: list[StateWrite] = []

    def _add(self, field: str, node: ast.AST) -> None:
        self.found.append(StateWrite(self.module, ".".join(self.scope), field, node.lineno))

    def _scoped(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> None:
        self.scope.append(node.name)
        self.generic_visit(node)
        self.scope.pop()

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _scoped

    def _target(self, target: ast.expr, node: ast.AST) -> None:
        if isinstance(target, (ast.Tuple, ast.List)):
            for element in target.elts:
                self._target(element, node)
        elif isinstance(target, ast.Starred):
            self._target(target.value, node)
        elif (isinstance(target, ast.Attribute) and target.attr in STATE_FIELDS
              and not (isinstance(target.value, ast.Name) and target.value.id == "self")):
            self._add(target.attr, node)

    def visit_Assign(self, node: ast.Assign) -> None:
        for target in node.targets:
            self._target(target, node)
        self.generic_visit(node)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        self._target(node.target, node)
        self.generic_visit(node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if node.value is not None:
            self._target(node.target, node)
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
        if name == "setattr" and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant) \
                and node.args[1].value in STATE_FIELDS:
            self._add(node.args[1].value, node)
        if name == "InstanceState" and any(k.arg == "power" for k in node.keywords):
            self._add("power", node)
        if name == "model_copy":
            for keyword in node.keywords:
                if keyword.arg == "update" and isinstance(keyword.value, ast.Dict):
                    if any(isinstance(k, ast.Constant) and k.value == "power" for k in keyword.value.keys):
                        self._add("power", node)
        self.generic_visit(node)


def state_writes(source: str, module: str) -> list[StateWrite]:
    finder = _Finder(module)
    finder.visit(ast.parse(source))
    return finder.found


def all_state_writes() -> list[StateWrite]:
    found: list[StateWrite] = []
    for path in sorted(SRC.rglob("*.py")):
        found += state_writes(path.read_text(encoding="utf-8"), path.relative_to(SRC).as_posix())
    return found


def test_only_the_transition_functions_set_a_state():
    strays = [f"cible/{w.module}:{w.line} ({w.function or 'module level'}) sets .{w.field}"
              for w in all_state_writes() if w.where not in ALLOWED[w.field]]
    assert not strays, "a state changes only through its transition function:\n" + "\n".join(strays)


def test_the_walk_sees_the_transition_functions_themselves():
    # So the test above can fail: the walk does find the writes it allows.
    seen = {(w.where, w.field) for w in all_state_writes()}
    assert ("server/services/lifecycle.py::move_compute", "provisioning_state") in seen
    assert ("server/services/lifecycle.py::move_quota_request", "status") in seen
    assert ("server/services/lifecycle.py::move_power", "power") in seen
    assert ("server/services/jobs.py::set_status", "status") in seen


def test_the_walk_flags_every_way_of_setting_a_state():
    source = '''
def sneaky(row, job, node, instance):
    row.provisioning_state = "Deleting"
    job.status, job.updated_at = "Failed", now
    setattr(node, "state", "idle")
    instance.model_copy(update={"power": "off"})
    InstanceState(power="off")

class Launcher:
    def __init__(self):
        self.state = "Preparing"  # its own field: not collected

def created():
    return ComputeRow(provisioning_state="Succeeded")  # a first state: not collected
'''
    found = [(w.function, w.field, w.line) for w in state_writes(source, "example.py")]
    assert found == [("sneaky", "provisioning_state", 3), ("sneaky", "status", 4), ("sneaky", "state", 5),
                     ("sneaky", "power", 6), ("sneaky", "power", 7)]
