"""A package's exported name wins over its same-named submodule, in every import order (README examples such as
`from pipelines.diffusion import generate` must give the function, not the module)."""

from __future__ import annotations

import importlib
import subprocess
import sys
import textwrap

import pytest

# (package, exported name that is also a submodule's name)
CLASHES = [("pipelines.diffusion", "generate"), ("pipelines.style_finetune", "train"),
           ("pipelines.style_finetune", "evaluate"), ("pipelines.landmark_faces", "train"),
           ("pipelines.single_image", "train")]


def run_fresh(code: str) -> str:
    """In a new interpreter: whether a submodule was imported before decides what the package attribute holds."""
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.parametrize(("package", "name"), CLASHES)
def test_the_export_is_the_function_whether_or_not_the_submodule_was_imported_first(package, name):
    out = run_fresh(f"""
        import importlib, inspect, types
        submodule = importlib.import_module("{package}.{name}")   # first: the import system binds the submodule
        from {package} import {name} as after
        import {package} as package
        print(inspect.isfunction(after), getattr(package, "{name}") is submodule.{name},
              isinstance(importlib.import_module("{package}.{name}"), types.ModuleType))
    """)
    assert out.split() == ["True", "True", "True"]


def test_the_export_is_the_function_when_the_package_is_used_first():
    out = run_fresh("""
        import inspect
        from pipelines.diffusion import generate                     # first: through the package
        from pipelines.diffusion.generate import GenerateRequest     # then the submodule's own names
        from pipelines.diffusion import generate as again
        print(inspect.isfunction(generate), again is generate, GenerateRequest.__name__)
    """)
    assert out.split() == ["True", "True", "GenerateRequest"]


def test_names_that_are_not_exports_still_raise_attribute_error():
    package = importlib.import_module("pipelines.diffusion")
    with pytest.raises(AttributeError):
        package.no_such_name  # noqa: B018
