"""The package's shape: each sub-package imports only those of lower layers (docs/CONTRIBUTING.md's layout section,
in the same order; function-level imports included), and functions stay small."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "torchzebra"
MAX_LINES, MAX_PARAMETERS = 60, 8
ARGPARSE_BUILDERS = {("parser.py", "build_parser")}


def _modules() -> dict[str, ast.Module]:
    return {str(path.relative_to(PACKAGE)): ast.parse(path.read_text()) for path in sorted(PACKAGE.rglob("*.py"))}


def _unit(parts: tuple[str, ...]) -> str:
    """The sub-package (or top-level module) a module path belongs to: ``workflows/run.py`` -> ``workflows``."""
    return parts[0].removesuffix(".py")


def _imported_units(path: str, tree: ast.Module) -> set[str]:
    """Every unit of torchzebra that ``path`` imports, at module level or inside functions."""
    package = Path(path).parent.parts
    units = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[:len(package) - (node.level - 1)] if node.level > 1 else package
            target = base + tuple(node.module.split(".")) if node.module else base
            names = [target + (alias.name,) for alias in node.names] if not node.module else [target]
            units |= {_unit(name) for name in names if name}
            if not target:  # `from .. import x` at the top: x is a unit itself
                units |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("torchzebra."):
            units.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            units |= {alias.name.split(".")[1] for alias in node.names if alias.name.startswith("torchzebra.")}
    return units


def dependency_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path, tree in _modules().items():
        parts = Path(path).parts
        if parts == ("__init__.py",) or parts[0] == "cli":
            continue  # the package facade and the command line sit on top of everything
        unit = _unit(parts)
        graph.setdefault(unit, set()).update(_imported_units(path, tree) - {unit})
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path + [node, nxt]
            if nxt not in state and (found := visit(nxt, path + [node])):
                return found
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node, [])):
            return found
    return None


# Lowest first; a unit may import units of lower layers only (the CLI, on top, joins workflows and reports).
LAYERS = [
    {"errors", "_io", "_lazy", "_numbers", "_defaults"},
    {"_checks"},  # the one way to check a user's value: raises the project's error
    {"core", "data", "models"},  # tensor functions; data sets; models
    {"nn"},  # the ZebraLayer, prepare/remove, ZebraConfig
    {"analysis", "codec", "slim"},  # functions over prepared models; byte streams; Network Slimming
    {"recipe", "export", "results"},  # the recipe for any loop; hardware artefacts; the method registry and results
    {"accelerator", "config"},  # estimates; the run configuration (which reads the method registry)
    {"training"},  # the training loop
    {"workflows", "reports"},  # what the verbs do; what zebra report draws
]


def test_sub_packages_import_only_lower_layers():
    graph = dependency_graph()
    layer = {unit: rank for rank, units in enumerate(LAYERS) for unit in units}
    assert set(graph) == set(layer), "a unit the layout does not place: " + str(set(graph) ^ set(layer))
    upward = {f"{unit} -> {other}" for unit, others in graph.items() for other in others if layer[other] >= layer[unit]}
    assert not upward, sorted(upward)
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_the_layout_is_the_contributors_guide_s():
    """docs/CONTRIBUTING.md's layout section lists the sub-packages in the layers' order."""
    readme = (PACKAGE.parent / "docs" / "CONTRIBUTING.md").read_text().split("## Layout", 1)[1].split("\n## ", 1)[0]
    positions = {unit: readme.find(f"`{unit}/`" if (PACKAGE / unit).is_dir() else f"`{unit}.py`")
                 for units in LAYERS for unit in units}
    assert all(p >= 0 for p in positions.values()), [u for u, p in positions.items() if p < 0]
    for lower, upper in zip(LAYERS, LAYERS[1:]):
        assert max(positions[u] for u in lower) < min(positions[u] for u in upper), (lower, upper)


def test_the_cycle_finder_finds_cycles():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) is not None and _cycle({"a": {"b"}, "b": set()}) is None


def _running_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """The imports that run: at module level or inside functions, not those for type checkers only."""
    checker_only = {id(inner) for node in ast.walk(tree)
                    if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")
                    for statement in node.body for inner in ast.walk(statement)}
    return [node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
            and id(node) not in checker_only]


def _imported_files(name: tuple[str, ...], tree: ast.Module, files: set[tuple[str, ...]]) -> set[tuple[str, ...]]:
    """The files of torchzebra (module paths without ``.py``, as in ``files``) that the file ``name`` imports."""
    package = name[:-1]
    targets = []
    for node in _running_imports(tree):
        if isinstance(node, ast.Import):
            modules = [tuple(alias.name.split(".")) for alias in node.names]
            targets += [module[1:] for module in modules if module[0] == "torchzebra"]
        elif node.level or (node.module or "").split(".")[0] == "torchzebra":
            base = package[:len(package) - node.level + 1] if node.level else ()
            module = base + tuple(node.module.split(".")) if node.module else base
            module = module if node.level else module[1:]
            # `from . import x`, `from .pkg import x`: x may be a file
            targets += [module + (alias.name,) if module + (alias.name,) in files else module for alias in node.names]
    return {target if target in files else target + ("__init__",) for target in targets} & files - {name}


def test_no_two_files_of_a_package_import_each_other():
    """Inside a package, file-level imports go one way: no circle through the package's files, function-level
    imports included (only ``if TYPE_CHECKING:`` imports, which never run, may point back)."""
    trees = {Path(path).with_suffix("").parts: tree for path, tree in _modules().items()}
    graph = {"/".join(name): {"/".join(other) for other in _imported_files(name, tree, set(trees))
                              if other[:-1] == name[:-1]}
             for name, tree in trees.items()}
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def _functions():
    for path, tree in _modules().items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield path, node


@pytest.mark.parametrize("limit", ["lines", "parameters"])
def test_functions_stay_small(limit):
    too_big = []
    for path, node in _functions():
        if (Path(path).name, node.name) in ARGPARSE_BUILDERS:
            continue
        if limit == "parameters" and any(ast.unparse(d) == "triton.jit" for d in node.decorator_list):
            continue  # a Triton kernel's arguments are its pointers, sizes and strides: no struct can carry them
        args = node.args
        parameters = len(args.posonlyargs + args.args + args.kwonlyargs) + bool(args.vararg) + bool(args.kwarg)
        parameters -= bool(args.args and args.args[0].arg in ("self", "cls"))
        lines = node.end_lineno - node.lineno + 1
        if (limit == "lines" and lines > MAX_LINES) or (limit == "parameters" and parameters > MAX_PARAMETERS):
            too_big.append(f"{path}:{node.lineno} {node.name} ({lines} lines, {parameters} parameters)")
    assert not too_big, too_big


def test_nothing_refers_to_files_outside_the_repository():
    """The repository carries its own spec (docs/METHOD.md): no pointer to the developers' shared folder."""
    root = PACKAGE.parent
    texts = [root / "README.md", *(root / "docs").glob("*.md"), *PACKAGE.rglob("*.py"), *PACKAGE.rglob("*.yaml"),
             *(root / "benchmarks").glob("*.py")]
    outside = "../" + "shared"  # split so that this file does not match itself
    assert not [str(p) for p in texts if outside in p.read_text() or "DESIGN" + ".md" in p.read_text()]
    assert (root / "docs" / "METHOD.md").is_file()


def test_every_import_in_the_docs_python_examples_resolves():
    """A renamed module breaks the examples users copy: each of their torchzebra imports must work."""
    import re

    root = PACKAGE.parent
    lines = [line.split("#")[0].strip() for doc in [root / "README.md", *(root / "docs").glob("*.md")]
             for block in re.findall(r"```python\n(.*?)```", doc.read_text(), re.S) for line in block.splitlines()
             if re.match(r"\s*(from torchzebra\S* import|import torchzebra)", line)]
    assert lines
    for line in lines:  # run as written: ``from package import submodule`` imports the submodule, as for users
        try:
            exec(line, {})
        except ImportError as error:
            pytest.fail(f"{line}: {error}")
