"""The linter and the type checker (configured in pyproject.toml), and the lazy packages' TYPE_CHECKING imports."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*command: str) -> None:
    done = subprocess.run([sys.executable, "-m", *command], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_ruff_finds_nothing():
    _run("ruff", "check", "torchzebra", "benchmarks", "tests", "examples")


@pytest.mark.slow  # about 20 s on 2 cores without a cache
def test_mypy_finds_nothing():
    _run("mypy", "torchzebra", "benchmarks")


def _lazy_exports(tree: ast.Module) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """What a package's ``lazy_package`` call exports, and what its ``if TYPE_CHECKING:`` block imports."""
    exports: dict[str, set[str]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "lazy_package":
            exports = {module: set(names) for module, names in ast.literal_eval(node.args[1]).items()}
    imported: dict[str, set[str]] = {}
    for node in tree.body:
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            for statement in node.body:
                assert isinstance(statement, ast.ImportFrom) and statement.level == 1 and statement.module
                imported.setdefault(statement.module, set()).update(alias.name for alias in statement.names)
    return exports, imported


def test_each_lazy_package_imports_its_names_for_type_checkers():
    """Type checkers, IDEs and readers follow a lazy package's names through its TYPE_CHECKING imports: they must
    be exactly the names ``lazy_package`` loads, from the same submodules."""
    packages = [path for path in sorted((ROOT / "torchzebra").rglob("__init__.py"))
                if "lazy_package(" in path.read_text()]
    assert len(packages) >= 6
    for path in packages:
        exports, imported = _lazy_exports(ast.parse(path.read_text()))
        assert exports and imported == exports, path.relative_to(ROOT)
