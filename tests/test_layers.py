"""pqd's modules in layers, and imports that only go down them (issue 22 item 4).

The package stays flat (one folder of modules, plus ``models/`` and ``stages/``): moving a module
renames it, and module names are among every rule's params (``params.track``, the modules whose
code a job depends on), so Snakemake's params trigger would rerun every cached job of every user
for a rename. The layers are declared here instead, and checked: every module is in exactly
one, and no module imports from a layer above its own (a stage policy imports no other stage).
docs/stages.md draws the same map.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# lowest first; a module may import from its own layer and the ones before it
LAYERS: dict[str, tuple[str, ...]] = {
    # read by the Snakefile while the DAG is built: no torch
    "workflow": (
        "pqd",
        "pqd.errors",
        "pqd.constants",
        "pqd.registry",
        "pqd.catalog",
        "pqd.pipeline",
        "pqd.params",
        "pqd.config",
        "pqd.codehash",
        "pqd.capability",
        "pqd.interrupts",
        "pqd.latency_budget",
        "pqd.results",
    ),
    "core mechanics": (
        "pqd.models",
        "pqd.models.*",
        "pqd.checkpoint",
        "pqd.data",
        "pqd.resume",
        "pqd.train",
        "pqd.losses",
        "pqd.masks",
        "pqd.macs",
        "pqd.channels",
        "pqd.blocks",
        "pqd.factorize",
        "pqd.arch",
        "pqd.qat",
        "pqd.model_io",
    ),
    "stage policies": ("pqd.stages", "pqd.stages.*"),
    "deployment and measurement": ("pqd.runtimes", "pqd.measure", "pqd.latency_curve", "pqd.probe"),
    "results": ("pqd.stats", "pqd.verdict", "pqd.report"),
    "entry points": ("pqd.runner", "pqd.cli", "pqd.__main__"),
}
TORCH_FREE = "workflow"


def modules() -> list[str]:
    out = []
    for f in sorted((ROOT / "pqd").rglob("*.py")):
        out.append(".".join(f.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"))
    return out


def layer_of(module: str) -> list[int]:
    hits = []
    for i, members in enumerate(LAYERS.values()):
        for m in members:
            if module == m or (m.endswith(".*") and module.startswith(m[:-1])):
                hits.append(i)
    return hits


def imports(module: str) -> set[str]:
    """The pqd modules ``module`` imports anywhere in its file (function-level imports included)."""
    path = ROOT / Path(*module.split("."))
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    known = set(modules())
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.startswith("pqd"):
            out |= {n for n in (node.module, *(f"{node.module}.{a.name}" for a in node.names)) if n in known}
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in known}
    return out - {module}


def test_every_module_is_in_exactly_one_layer():
    placed = {m: layer_of(m) for m in modules()}
    assert {m: hits for m, hits in placed.items() if len(hits) != 1} == {}


def test_imports_only_go_down_the_layers_and_no_stage_imports_another():
    names = list(LAYERS)
    bad = []
    for m in modules():
        (own,) = layer_of(m)
        for dep in imports(m):
            (theirs,) = layer_of(dep)
            if theirs > own:
                bad.append(f"{m} ({names[own]}) imports {dep} ({names[theirs]})")
            if m.startswith("pqd.stages.") and dep.startswith("pqd.stages."):
                bad.append(f"stage {m} imports stage {dep}")
    assert bad == []


def test_the_layer_check_sees_an_upward_import(tmp_path, monkeypatch):
    """The check can fail: a core module that imported the report would be caught."""
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    (tmp_path / "pqd").mkdir()
    for name in ("__init__", "report", "masks"):
        (tmp_path / "pqd" / f"{name}.py").write_text("")
    (tmp_path / "pqd/masks.py").write_text("def f():\n    from pqd.report import summary\n")
    with pytest.raises(AssertionError, match=r"pqd.masks \(core mechanics\) imports pqd.report \(results\)"):
        test_imports_only_go_down_the_layers_and_no_stage_imports_another()


def test_the_workflow_layer_imports_without_torch():
    """The Snakefile imports these while the DAG is built, on login nodes too: torch stays out."""
    code = f"import sys; import {', '.join(LAYERS[TORCH_FREE])}; print('torch' in sys.modules)"
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == "False"
