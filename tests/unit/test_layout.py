"""The layout is the architecture: which package may import which, and the operator's runtime never loads the simulator.

Read from the source (every `import` of every module) and from a fresh interpreter that imports what `specserve run` runs.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT

PACKAGE = ROOT / "operator" / "specserve"
LAYERS = ("api", "catalog", "engine", "rendering", "decision", "observation", "cluster", "cli")
# What each layer may not import; shared modules (settings, telemetry) sit beside the layers.
FORBIDDEN = {
    "api": {"engine", "rendering", "decision", "observation", "cluster", "cli", "telemetry", "settings"},
    "catalog": {"api", "engine", "rendering", "decision", "observation", "cluster", "cli", "telemetry", "settings"},
    "engine": {"rendering", "decision", "observation", "cluster", "cli", "telemetry", "settings"},
    "rendering": {"observation", "cluster", "cli", "telemetry", "settings"},
    "decision": {"observation", "cluster", "cli", "telemetry", "settings"},
    "observation": {"cluster", "cli"},
    "cluster": {"cli"},
}


def imported_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "specserve" and len(parts) > 1 else None


def modules_of(layer: str) -> list[Path]:
    where = PACKAGE / layer
    return sorted(where.rglob("*.py")) if where.is_dir() else [PACKAGE / f"{layer}.py"]


def test_every_module_of_the_operator_sits_in_a_layer_or_is_shared():
    top = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir() if p.suffix == ".py" or (p.is_dir() and (p / "__init__.py").exists())}
    assert top == {"__init__", *LAYERS, "settings", "telemetry"}


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_a_layer_imports_nothing_from_the_layers_above_it(layer):
    crossings = [
        f"{path.relative_to(ROOT)} imports {module}"
        for path in modules_of(layer)
        for module in sorted(imported_modules(path))
        if layer_of(module) in FORBIDDEN[layer]
    ]
    assert crossings == []


def test_nothing_in_the_operator_imports_the_simulator_but_the_simulate_command():
    importers = sorted(
        str(path.relative_to(ROOT)) for path in PACKAGE.rglob("*.py") if any(m.split(".")[0] == "specserve_simulator" for m in imported_modules(path))
    )
    assert importers == ["operator/specserve/cli/commands.py"]


def test_the_operators_runtime_never_loads_the_simulator():
    """What `specserve run` imports: the command line and the cluster side with every handler registered."""
    code = (
        "import sys, specserve.cli.commands, specserve.cluster.lifecycle; "
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] == 'specserve_simulator'); "
        "print(','.join(loaded))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert result.stdout.strip() == ""


def test_the_simulator_is_a_package_of_its_own_with_its_readme():
    simulator = ROOT / "operator" / "specserve_simulator"
    assert (simulator / "__init__.py").exists() and (simulator / "README.md").exists()
    assert not (PACKAGE / "simulator").exists()


def readme_module_map() -> set[str]:
    """The paths the README's Layout block names, from its indentation (two spaces a level)."""
    text = (ROOT / "README.md").read_text()
    block = text.split("## Layout\n", 1)[1].split("```\n", 2)[1]
    named: set[str] = set()
    folders: list[str] = []
    for line in block.splitlines():
        entry = line.split()[0]
        depth = (len(line) - len(line.lstrip())) // 2
        folders = folders[:depth]
        path = "/".join([*folders, entry.rstrip("/")])
        named.add(path)
        if entry.endswith("/"):
            folders.append(entry.rstrip("/"))
    return named


def test_the_readmes_module_map_matches_the_tree():
    named = readme_module_map()
    modules = {
        str(path.relative_to(ROOT)) for path in PACKAGE.rglob("*.py") if path.name not in ("__init__.py", "__main__.py")
    }
    assert sorted(modules - named) == [], "modules the README's Layout does not name"
    assert sorted(p for p in named if not (ROOT / p).exists()) == [], "paths the README's Layout names that do not exist"


def test_no_two_modules_of_the_operator_differ_only_by_a_suffix():
    """render/rendering, health/healthloop, plan/plan_report: one name per idea."""
    names = sorted({path.stem for path in PACKAGE.rglob("*.py") if path.stem not in ("__init__", "__main__")} | {p.name for p in PACKAGE.iterdir() if p.is_dir()})
    pairs = [(a, b) for a in names for b in names if a != b and b.startswith(a)]
    assert pairs == []
