"""The layering the README promises: libraries never import the experiments layer, the engine
knows models only through the trainable-model protocol, and the tune modules import in one direction."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__import__("ensemblekit").__file__).parent
LIBRARY = ("methods", "training", "nas", "varhyper", "curves", "metrics", "models", "data")


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, as an absolute dotted name (relative imports resolved)."""
    package = ".".join(("ensemblekit", *path.relative_to(ROOT).parent.parts))
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.add(mod)
            out.update(f"{mod}.{a.name}" for a in node.names)
    return out


@pytest.mark.parametrize("layer", LIBRARY)
def test_no_library_layer_imports_the_experiments_layer(layer):
    offenders = {str(p.relative_to(ROOT)): sorted(m for m in _imports(p) if m.startswith(("ensemblekit.experiments", "ensemblekit.cli")))
                 for p in (ROOT / layer).rglob("*.py")}
    assert not {k: v for k, v in offenders.items() if v}


def test_the_engine_knows_no_model_class():
    # training/bn.py is a utility for stacked Ensembles (BatchNorm recomputation), not part of the engine
    for p in sorted(set((ROOT / "training").glob("*.py")) - {ROOT / "training" / "bn.py"}):
        mods = _imports(p)
        assert not any(m.startswith(("ensemblekit.ensemble", "ensemblekit.curves", "ensemblekit.varhyper")) for m in mods), p.name
        assert "isinstance(" not in p.read_text() or "Ensemble)" not in p.read_text(), p.name


def test_tune_config_does_not_import_its_users():
    assert not any(m.startswith("ensemblekit.experiments.tune.") and not m.startswith("ensemblekit.experiments.tune.config")
                   for m in _imports(ROOT / "experiments" / "tune" / "config.py"))


def test_the_schema_package_is_the_bottom_of_every_config():
    """schema/ (the strict base, one-line errors, config files) imports nothing of ensemblekit but
    its errors, and the section schemas below the run config never import the run config back."""
    for p in (ROOT / "schema").glob("*.py"):
        theirs = {m for m in _imports(p) if m.startswith("ensemblekit.") and not m.startswith("ensemblekit.schema")}
        assert theirs <= {"ensemblekit.errors", "ensemblekit.errors.ConfigError"}, (p.name, theirs)
    for section in ("evaluation", "training", "methods", "models", "data", "varhyper", "nas"):
        for p in (ROOT / section).rglob("*.py"):
            assert not any(m == "ensemblekit.config" or m.startswith("ensemblekit.config.") for m in _imports(p)), p


def test_no_module_imports_a_private_name_of_another():
    """What one module shares with another is public (no ``from .x import _y``): a private name
    can change without a look outside its module."""
    offenders = []
    for p in ROOT.rglob("*.py"):
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom):
                offenders += [f"{p.relative_to(ROOT)}: {node.module}.{a.name}" for a in node.names
                              if a.name.startswith("_") and not a.name.startswith("__")]
    assert not offenders, offenders
