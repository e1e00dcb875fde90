"""Packages that import their public names on first use (PEP 562), so ``zebra --help`` never loads torch."""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types


def lazy_package(name: str, exports: dict[str, list[str]]) -> list[str]:
    """Make package ``name`` load each public name from its submodule (``exports``: submodule -> names) the
    first time it is read. Returns ``__all__``.

    A public function named like its own submodule (``torchzebra.measure``) keeps its name: when the import
    system binds the submodule to the package, the function is bound instead, as an eager
    ``from .measure import measure`` would leave it.
    """
    owner = {attr: submodule for submodule, names in exports.items() for attr in names}

    class LazyPackage(types.ModuleType):
        def __getattr__(self, attr: str):
            if attr not in owner:  # a submodule not imported yet (``torchzebra.core``), or nothing
                if attr.startswith("__") or importlib.util.find_spec(f"{name}.{attr}") is None:
                    raise AttributeError(f"module {name!r} has no attribute {attr!r}")
                return importlib.import_module(f"{name}.{attr}")
            value = getattr(importlib.import_module(f"{name}.{owner[attr]}"), attr)
            types.ModuleType.__setattr__(self, attr, value)
            return value

        def __setattr__(self, attr: str, value) -> None:
            if isinstance(value, types.ModuleType) and owner.get(attr) == attr:
                value = getattr(value, attr)  # the submodule has run: bind its function of the same name
            types.ModuleType.__setattr__(self, attr, value)

        def __dir__(self) -> list[str]:
            return sorted({*types.ModuleType.__dir__(self), *owner})

    sys.modules[name].__class__ = LazyPackage
    return sorted(owner)
