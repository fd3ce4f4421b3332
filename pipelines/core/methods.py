"""What the core knows about method packages: their cards, and how it finds their registrations.

A method is a package `pipelines/<method>/`. It declares a METHOD_CARD (the About tab renders it), and at the end
of its `__init__.py` registers with the core everything the core looks up by name (see pipelines/neural_style):

    from pipelines.core.loader import register_architecture  # builder(config, state_dict) -> nn.Module
    from pipelines.core.runs import register_rerunner  # History's re-run: fn(params, store) -> RunRecord
    from pipelines.core.tiny_models import TinySpec, register_tiny  # "tiny:NAME"
    register_architecture("johnson_transformer_net", lazy(f"{__name__}.network", "build_transformer_net"))
    register_tiny(TinySpec("style", "torch_module", "fast style transfer network", 2,
                           lazy(f"{__name__}.network", "save_tiny_style")))
    register_rerunner(TAB, rerun)

The `__init__.py` stays import-light (no torch or numpy): `lazy(module, name)` imports the heavy module on its
first call. (Import the register functions, not the core modules: a name such as `runs` bound in the package
would hide its own `runs` submodule.) The core never names a method: when a lookup misses, it calls
`discover_methods()`, which imports every subpackage of `pipelines` except `core` (once per process), and
looks again.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
import sys
import threading
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

CORE_PACKAGE = __name__.rpartition(".")[0]  # pipelines.core: never imported as a method


@dataclass(frozen=True)
class Reference:
    title: str
    url: str


@dataclass(frozen=True)
class MethodCard:
    """What a method does, as input → model → output, with its strengths, limits and sources."""

    name: str
    tab: str
    summary: str
    inputs: str
    model: str
    output: str
    good_at: tuple[str, ...]
    bad_at: tuple[str, ...]
    references: tuple[Reference, ...] = field(default_factory=tuple)
    seed_document: str = ""

    def to_markdown(self) -> str:
        lines = [
            f"### {self.name}",
            self.summary,
            "",
            f"**Input** {self.inputs} → **Model** {self.model} → **Output** {self.output}",
            "",
            "**Good at:** " + "; ".join(self.good_at),
            "",
            "**Weak at:** " + "; ".join(self.bad_at),
        ]
        if self.references:
            lines += ["", "**Builds on:**"] + [f"- [{ref.title}]({ref.url})" for ref in self.references]
        if self.seed_document:
            lines += ["", f"*Source document: {self.seed_document}*"]
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- registration
def lazy(module: str, name: str) -> Callable[..., Any]:
    """A stand-in for `module.name` that imports `module` on its first call, so that a method's __init__ can
    register a builder that lives in a heavy module (torch at import) without importing it."""

    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(module), name)(*args, **kwargs)

    call.__name__ = name
    call.__qualname__ = f"lazy({module}.{name})"
    call.__doc__ = f"{module}.{name}, imported on first call."
    return call


# ---------------------------------------------------------------------------------------------- discovery
_discovered = False
_discovering = threading.local()  # set while this thread imports method packages: a nested miss returns at once
DISCOVERY_PROBLEMS: dict[str, str] = {}  # package -> why it could not be imported


def method_packages() -> list[str]:
    """Every subpackage of `pipelines` except the core, found on disk (no method is named here)."""
    root = importlib.import_module(CORE_PACKAGE.rpartition(".")[0])  # pipelines
    names = (f"{root.__name__}.{info.name}" for info in pkgutil.iter_modules(root.__path__)
             if info.ispkg and not info.name.startswith("_"))
    return sorted(name for name in names if name != CORE_PACKAGE)


def lazy_exports(package: str, exports: dict[str, str]) -> Callable[[str], Any]:
    """A package's module `__getattr__` that imports the submodule defining a public name on its first use, so
    importing the package stays light: `__getattr__ = lazy_exports(__name__, {"compare": "comparison", ...})`.

    An exported name may equal its submodule's name (`generate` in `diffusion/generate.py`). Python's import
    system binds a submodule as an attribute of its package once it is loaded, and a module `__getattr__` is asked
    only for missing attributes, so after any import of the submodule `from pipelines.diffusion import generate`
    would give the module. The package's module therefore becomes an `_ExportingPackage`, which binds the export
    instead whenever the import system binds such a submodule (as an eager `from .generate import generate` in
    `__init__` would leave it). The submodule itself stays reachable through `importlib.import_module` and
    `from pipelines.diffusion.generate import ...`."""
    module = sys.modules[package]
    module.__dict__[_EXPORTS_ATTRIBUTE] = dict(exports)
    if type(module) is types.ModuleType:
        module.__class__ = _ExportingPackage
    for name, submodule in exports.items():  # submodules imported before this call (by __init__ itself)
        if name == submodule and isinstance(module.__dict__.get(name), types.ModuleType):
            module.__dict__[name] = getattr(module.__dict__[name], name)

    def module_getattr(name: str) -> Any:
        if name in exports:
            return getattr(importlib.import_module(f"{package}.{exports[name]}"), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return module_getattr


_EXPORTS_ATTRIBUTE = "__lazy_exports__"


class _ExportingPackage(types.ModuleType):
    """A package module whose exported names win over its same-named submodules (see lazy_exports)."""

    def __setattr__(self, name: str, value: Any) -> None:
        exports = self.__dict__.get(_EXPORTS_ATTRIBUTE, {})
        if (isinstance(value, types.ModuleType) and exports.get(name) == name
                and value.__name__ == f"{self.__name__}.{name}"):
            value = getattr(value, name)  # the import system binding the loaded submodule: bind its export
        super().__setattr__(name, value)


def discover_methods() -> None:
    """Import every method package once, so that their registrations are in the core's registries.

    Cheap (method __init__s are light) and safe to call from anywhere: after one complete pass it returns at
    once; a call made while this thread is already discovering (a method package looking something up while it
    is imported) returns at once instead of recursing; other threads simply import too (Python's per-module
    import locks make them wait for a package another thread is importing, and never deadlock on a lock of
    ours, since none is held). A package that fails to import is logged and noted in DISCOVERY_PROBLEMS, and
    the others still register.
    """
    global _discovered
    if _discovered or getattr(_discovering, "active", False):
        return
    _discovering.active = True
    try:
        for package in method_packages():
            try:
                importlib.import_module(package)
            except Exception as err:  # one broken method must not hide the others' models
                DISCOVERY_PROBLEMS[package] = f"{type(err).__name__}: {err}"
                log.warning("Method package %s could not be imported: %s", package, err)
            else:
                DISCOVERY_PROBLEMS.pop(package, None)
        _discovered = True
    finally:
        _discovering.active = False


def discovery_note() -> str:
    """For "unknown name" errors: the method packages that could not be imported, if any ("" when none)."""
    if not DISCOVERY_PROBLEMS:
        return ""
    return " (not imported: " + "; ".join(f"{name}: {why}" for name, why in DISCOVERY_PROBLEMS.items()) + ")"
