"""The imports of ``s2lpo/`` point one way: every module's imports of our own modules (function-level ones
included, so none can hide a cycle) go to a strictly lower layer or stay inside the module's own package,
and the module graph has no cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "s2lpo"

# entry points -> (study | sweep | eval driver) -> trainer -> (rollout | eval | tracking | models | rewards | data)
# -> algo; the longest matching prefix gives a module's layer
LAYERS = {
    "s2lpo.algo": 0, "s2lpo.config.paths": 0,
    "s2lpo.data": 1,
    "s2lpo.models": 2, "s2lpo.rewards": 2, "s2lpo.tracking": 2,
    "s2lpo.config": 3, "s2lpo.rollout": 3,
    "s2lpo.eval": 4,
    "s2lpo.verl_ext": 5,
    "s2lpo.trainer": 6, "s2lpo.analysis": 6,
    "s2lpo.study": 7, "s2lpo.sweep": 7, "s2lpo.eval.driver": 7,
    "s2lpo.cli": 8,
    "s2lpo": 9,  # the package's __init__ (sets the offline environment only)
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def our_imports(path: Path) -> set[str]:
    """Every ``s2lpo`` module ``path`` imports, at any depth of the file (``from a import b`` counts as
    ``a.b`` when that is a module)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "s2lpo"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "s2lpo":
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                out.add(sub if sub in MODULES else node.module)
    return out


MODULES = {module_name(p): p for p in PKG.rglob("*.py")}
GRAPH = {m: our_imports(p) - {m} for m, p in MODULES.items()}


def layer(module: str) -> int:
    best = max((k for k in LAYERS if module == k or module.startswith(k + ".")), key=len)
    return LAYERS[best]


def package(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2])


def test_every_module_has_a_layer_and_imports_exist():
    for m, deps in GRAPH.items():
        layer(m)
        assert all(d in MODULES for d in deps), f"{m} imports a module that does not exist: {deps - set(MODULES)}"


def test_imports_point_down():
    bad = [f"{m} (layer {layer(m)}) imports {d} (layer {layer(d)})"
           for m, deps in sorted(GRAPH.items()) for d in sorted(deps)
           if package(m) != package(d) and layer(d) >= layer(m)]
    assert not bad, "imports that point up or sideways:\n" + "\n".join(bad)


def test_algo_imports_nothing_of_ours_but_algo():
    for m, deps in GRAPH.items():
        if package(m) == "s2lpo.algo":
            assert all(package(d) == "s2lpo.algo" for d in deps), (m, deps)


def test_analysis_reads_runs_only_through_trackings_readers():
    for m, deps in GRAPH.items():
        if package(m) == "s2lpo.analysis":
            outside = {d for d in deps if package(d) not in ("s2lpo.analysis", "s2lpo.algo")}  # algo: pure names
            # config.yaml_file reads the spec files (no run): their YAML errors named as a sweep file's are
            assert outside <= {"s2lpo.tracking.readers", "s2lpo.config.yaml_file"}, (m, outside)


def test_no_cycles():
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(GRAPH[m]):
            if state.get(d) == 1:
                pytest.fail("import cycle: " + " -> ".join(stack[stack.index(d):] + [d]))
            if d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(GRAPH):
        if m not in state:
            visit(m)


def test_only_the_cli_prints_or_exits():
    offenders = []
    for m, p in MODULES.items():
        if package(m) == "s2lpo.cli":
            continue
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.Call):
                f = node.func
                name = f.id if isinstance(f, ast.Name) else f"{getattr(f.value, 'id', '?')}.{f.attr}" \
                    if isinstance(f, ast.Attribute) else ""
                if name in ("print", "sys.exit", "exit", "os._exit", "console.print"):
                    offenders.append(f"{m}:{node.lineno} {name}()")
    assert not offenders, "library code that prints or exits:\n" + "\n".join(offenders)


def test_a_layer_violation_is_caught(monkeypatch):
    """The check itself can fail: an algo module importing the trainer is reported."""
    monkeypatch.setitem(GRAPH, "s2lpo.algo.schedule", GRAPH["s2lpo.algo.schedule"] | {"s2lpo.trainer.local"})
    with pytest.raises(AssertionError, match="s2lpo.algo.schedule .layer 0. imports s2lpo.trainer.local"):
        test_imports_point_down()


def test_every_module_says_what_it_owns():
    missing = [m for m, p in MODULES.items() if not ast.get_docstring(ast.parse(p.read_text()))]
    assert not missing, f"modules without a docstring: {missing}"


def test_modules_stay_small():
    big = {m: n for m, p in MODULES.items() if (n := len(p.read_text().splitlines())) > 300}
    assert not big, f"modules over 300 lines: {big}"
