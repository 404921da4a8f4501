"""The layering the README promises: libraries never import the experiments layer, the engine
knows models only through the trainable-model protocol, the tune modules import in one direction,
every import between top-level units goes down one declared order (:data:`LAYERS`), whatever
defines a registered kind of thing is in its registry, and only a class's own package asks
``isinstance`` of a concrete predictor or model class."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__import__("ensemblekit").__file__).parent
LIBRARY = ("methods", "training", "nas", "varhyper", "curves", "metrics", "models", "data")


def _from_module(node: ast.ImportFrom, path: Path) -> str:
    """The absolute module of ``from ... import`` in ``path`` (relative imports resolved)."""
    if not node.level:
        return node.module or ""
    package = ("ensemblekit", *path.relative_to(ROOT).parent.parts)
    return ".".join(package[: len(package) - node.level + 1] + ((node.module,) if node.module else ()))


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, as an absolute dotted name (relative imports resolved)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            mod = _from_module(node, path)
            out.add(mod)
            out.update(f"{mod}.{a.name}" for a in node.names)
    return out


@pytest.mark.parametrize("layer", LIBRARY)
def test_no_library_layer_imports_the_experiments_layer(layer):
    offenders = {str(p.relative_to(ROOT)): sorted(m for m in _imports(p) if m.startswith(("ensemblekit.experiments", "ensemblekit.cli")))
                 for p in (ROOT / layer).rglob("*.py")}
    assert not {k: v for k, v in offenders.items() if v}


def test_the_engine_knows_no_model_class():
    for p in sorted((ROOT / "training").glob("*.py")):
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


# ----------------------------------------------------------------- the layers
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors", "_version"),
    ("registry", "seeding", "hashing", "serialization", "_runtime", "threads", "schema"),
    ("predictors",),
    ("data",),
    ("metrics",),
    ("evaluation",),
    ("models",),
    ("training",),
    ("ensemble",),
    ("efficient", "nas", "varhyper", "curves", "laplace", "distance", "distill"),
    ("export",),
    ("report",),
    ("methods",),
    ("config",),
    ("experiments",),
    ("cli",),
    ("__init__", "__main__"),
)
"""The top-level units of ``ensemblekit`` (subpackages and top-level modules; ``__init__`` is the
root package, whose public names ``from ensemblekit import x`` reaches), low to high. A unit may
import only units of lower tiers, never one of its own tier nor a higher one:

0. ``errors``, ``_version``: import nothing of ensemblekit.
1. the base: ``registry``, ``seeding``, ``hashing``, ``serialization``, ``_runtime``, ``threads``,
   ``schema`` (mechanisms every layer uses, knowing no layer);
2. ``predictors``: the predictor surface and the registry of predictor kinds (the kinds register
   themselves in it; it never imports them);
3. ``data`` < 4. ``metrics`` (pure functions of predictives and targets) < 5. ``evaluation`` (the one
   prediction pass; predictors only through their inference logits) < 6. ``models`` (the model
   and wrapper registries and the zoo) < 7. ``training`` (the engine and the trainable-model
   protocol; no model class);
8. ``ensemble``: the stacked Ensemble, the first predictor kind (also the members other kinds are
   made of) < 9. the other kinds, side by side: ``efficient``, ``nas``, ``varhyper``, ``curves``,
   ``laplace`` (Laplace approximations), ``distance`` (SNGP's and DDU's distance-aware pieces);
10. ``export`` (writes whatever module a kind exports) < 11. ``report`` (tables and plots) <
    12. ``methods`` (the algorithms, which may draw their own plots) < 13. ``config`` (typed run
    configs over methods) < 14. ``experiments`` (runs, comparisons, tuning) < 15. ``cli`` <
    16. the root ``__init__`` (the public API) and ``__main__``.

Registries find their entries by importing packages named as strings (``Registry(discover=...)``),
which is no import statement: a low registry never imports the higher packages that fill it.
"""

EXCEPTIONS: dict[tuple[str, str], str] = {
    # (importer, imported): why the upward or sideways edge is allowed. Empty: every edge goes down.
}


def _unit(module: str) -> str | None:
    """The top-level unit a dotted module name (or a name of the root package) belongs to."""
    parts = module.split(".")
    if parts[0] != "ensemblekit":
        return None
    if len(parts) == 1:
        return "__init__"
    if (ROOT / parts[1]).is_dir() or (ROOT / f"{parts[1]}.py").is_file():
        return parts[1]
    return "__init__"  # from ensemblekit import __version__: a name the root package defines


def _import_sites(path: Path) -> list[tuple[str, int]]:
    """``(module, line)`` of every import in ``path``, inside functions too (relative ones resolved;
    ``from ensemblekit import a`` names ``ensemblekit.a``)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            mod = _from_module(node, path)
            out += [(f"{mod}.{a.name}", node.lineno) for a in node.names] if mod == "ensemblekit" else [(mod, node.lineno)]
    return out


def _unit_edges() -> dict[tuple[str, str], list[str]]:
    """``(importer, imported) -> ["file:line", ...]`` between different top-level units."""
    edges: dict[tuple[str, str], list[str]] = {}
    for p in sorted(ROOT.rglob("*.py")):
        rel = p.relative_to(ROOT)
        src = rel.stem if len(rel.parts) == 1 and rel.stem in ("__init__", "__main__") else rel.parts[0].removesuffix(".py")
        for mod, line in _import_sites(p):
            dst = _unit(mod)
            if dst is not None and dst != src:
                edges.setdefault((src, dst), []).append(f"{rel}:{line}")
    return edges


def _cycle(edges: set[tuple[str, str]]) -> list[str] | None:
    """One cycle of the directed graph ``edges`` (its nodes in order), or None."""
    graph: dict[str, list[str]] = {}
    for a, b in sorted(edges):
        graph.setdefault(a, []).append(b)
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in graph.get(node, []):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        path.pop()
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_every_unit_has_a_layer():
    units = {p.stem for p in ROOT.glob("*.py")} | {p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file()}
    declared = [u for tier in LAYERS for u in tier]
    assert len(declared) == len(set(declared)), "a unit is declared twice"
    assert units == set(declared), {"undeclared": sorted(units - set(declared)), "gone": sorted(set(declared) - units)}


def test_imports_go_down_the_layers_without_cycles():
    rank = {u: i for i, tier in enumerate(LAYERS) for u in tier}
    edges = _unit_edges()
    unknown = {e: w for e, w in edges.items() if e[1] not in rank}
    assert not unknown, f"imports of no declared unit: {unknown}"
    upward = {f"{a} -> {b}": w[:5] for (a, b), w in sorted(edges.items()) if rank[b] >= rank[a] and (a, b) not in EXCEPTIONS}
    assert not upward, f"imports that do not go down LAYERS: {upward}"
    stale = sorted(e for e in EXCEPTIONS if e not in edges)
    assert not stale, f"exceptions for edges that no longer exist (remove them): {stale}"
    cycle = _cycle(set(edges))
    assert cycle is None, " -> ".join(cycle or [])


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")}) == ["a", "b", "c", "a"]
    assert _cycle({("a", "b"), ("b", "c"), ("a", "c")}) is None


# ----------------------------------------------------------------- registrations
@pytest.fixture(scope="module")
def every_module() -> list[ModuleType]:
    """Every module of ensemblekit, imported (``__main__`` would run the CLI)."""
    import ensemblekit

    return [importlib.import_module(info.name) for info in pkgutil.walk_packages(ensemblekit.__path__, "ensemblekit.")
            if info.name.rsplit(".", 1)[-1] != "__main__"]


def _classes(modules: list[ModuleType]) -> list[type]:
    """Every class defined (not only imported) in ``modules``."""
    return [c for m in modules for c in vars(m).values() if inspect.isclass(c) and c.__module__ == m.__name__]


METHOD_BASES = ("OneNetworkMethod", "SharedNetworkMethod", "NasMethod", "FamilyMethod", "TrajectoryMethod", "PostHocMethod")
"""The public Method subclasses meant for subclassing, not for use (no name of their own)."""


def _method_bases_rule(cls: type) -> bool:
    """The documented rule: a Method subclass is a base meant for subclassing when its name is
    private (``_Single``) or listed in :data:`METHOD_BASES`; every other one defined in
    ensemblekit is a method and must be registered under its ``name``."""
    return cls.__name__.startswith("_") or cls.__name__ in METHOD_BASES


def test_every_method_class_is_registered(every_module):
    from ensemblekit.methods.base import METHODS, Method

    classes = [c for c in _classes(every_module) if issubclass(c, Method) and c is not Method]
    bases = [c for c in classes if _method_bases_rule(c)]
    assert sorted(c.__name__ for c in bases if not c.__name__.startswith("_")) == sorted(METHOD_BASES), "METHOD_BASES names a class that is gone"
    for base in bases:
        assert "name" not in vars(base) and not any(METHODS.get(n) is base for n in METHODS.names()), f"{base.__name__} is registered: not a base"
        assert any(issubclass(c, base) and c is not base for c in classes), f"{base.__name__} has no subclass: not a base"
    missing = [f"{c.__module__}.{c.__qualname__} (name {c.name!r})" for c in classes
               if not _method_bases_rule(c) and not (c.name in METHODS and METHODS.get(c.name) is c)]
    assert not missing, f"Method subclasses missing from METHODS (a @register_method decorator forgotten?): {missing}"


def _predictor_kind_classes(classes: list[type]) -> list[type]:
    """Classes with a ``save`` method and a classmethod ``load``: the predictor kinds."""
    return [c for c in classes if callable(getattr(c, "save", None)) and isinstance(inspect.getattr_static(c, "load", None), classmethod)]


def test_every_predictor_kind_is_registered_under_its_format(every_module):
    from ensemblekit.predictors import PREDICTORS, format_family

    kinds = [PREDICTORS.get(n) for n in PREDICTORS.names()]
    missing = []
    for c in _predictor_kind_classes(_classes(every_module)):
        fmt = vars(c).get("file_format")
        if fmt is None and any(issubclass(c, k) for k in kinds):
            continue  # a subclass writing its registered base's file (PlacedEnsemble saves an Ensemble)
        family = format_family(fmt)
        if family is None or family not in PREDICTORS or PREDICTORS.get(family) is not c:
            missing.append(f"{c.__module__}.{c.__qualname__} (file_format {fmt!r})")
    assert not missing, f"predictor kinds missing from PREDICTORS (a @register_predictor forgotten?): {missing}"
    assert {k.__name__ for k in kinds} >= {"Ensemble", "SharedEnsemble", "MCDropout"}


def test_registries_find_entries_no_module_imports_for_them():
    """No package __init__ imports modules only so that they register (the registries discover them)."""
    for init in (ROOT / "models" / "__init__.py", ROOT / "methods" / "__init__.py", ROOT / "efficient" / "__init__.py"):
        tree = ast.parse(init.read_text())
        side_effect = [a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module is None for a in n.names]
        assert not side_effect, (init.relative_to(ROOT), side_effect)


# ----------------------------------------------------------------- isinstance on concrete classes
ISINSTANCE_EXCEPTIONS: dict[str, str] = {
    # "path/of/file.py:ClassName": why that file may ask isinstance of another package's class.
}


def _concrete_model_classes(classes: list[type]) -> dict[str, type]:
    """The concrete predictor and model classes by name: the predictor kinds and their subclasses,
    and every class that implements the trainable-model protocol (``param_groups``; Protocols aside)."""
    from ensemblekit.predictors import PREDICTORS

    kinds = tuple(PREDICTORS.get(n) for n in PREDICTORS.names())
    return {c.__name__: c for c in classes if not getattr(c, "_is_protocol", False)
            and (issubclass(c, kinds) or callable(getattr(c, "param_groups", None)))}


def _isinstance_class_names(tree: ast.AST) -> list[tuple[int, str, ast.expr]]:
    """``(line, name, node)`` of every class named in the second argument of an isinstance call."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "isinstance" and len(node.args) == 2:
            arg = node.args[1]
            for el in (arg.elts if isinstance(arg, ast.Tuple) else [arg]):
                if isinstance(el, ast.Name):
                    out.append((node.lineno, el.id, el))
                elif isinstance(el, ast.Attribute):
                    out.append((node.lineno, el.attr, el))
    return out


def _imported_names(path: Path) -> dict[str, str]:
    """Local name -> the name it was imported as (``MCDropout as MCDropoutPredictor``), over the whole file."""
    out = {}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            out.update({a.asname or a.name: a.name for a in node.names})
    return out


def test_only_a_class_s_own_package_asks_isinstance_of_it(every_module):
    concrete = _concrete_model_classes(_classes(every_module))
    assert {"Ensemble", "PlacedEnsemble", "SharedEnsemble", "MCDropout", "CurveModel", "HyperModel"} <= set(concrete)
    offenders = []
    for p in sorted(ROOT.rglob("*.py")):
        rel = p.relative_to(ROOT)
        names = _imported_names(p)
        for line, local, _ in _isinstance_class_names(ast.parse(p.read_text())):
            cls = concrete.get(names.get(local, local))
            if cls is None:
                continue
            owner = cls.__module__.split(".")[1]
            if rel.parts[0] != owner and f"{rel.as_posix()}:{cls.__name__}" not in ISINSTANCE_EXCEPTIONS:
                offenders.append(f"{rel}:{line} isinstance(..., {cls.__name__}) (defined in {owner}/)")
    assert not offenders, offenders
