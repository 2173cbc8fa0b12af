"""The examples (``>>>``) in flaxopt's docstrings run, in every module that has them.

Modules are found by walking the package, so a new example runs without touching this file.
"""

import doctest
import importlib
import pkgutil

import pytest

import flaxopt


def _modules_with_examples() -> list[str]:
  names = []
  for info in pkgutil.walk_packages(flaxopt.__path__, prefix="flaxopt."):
    module = importlib.import_module(info.name)
    if any(t.examples for t in doctest.DocTestFinder().find(module)):
      names.append(info.name)
  return names


MODULES = _modules_with_examples()


def test_some_modules_have_examples():
  assert "flaxopt.optim.alias" in MODULES


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
  module = importlib.import_module(name)
  failed, attempted = doctest.testmod(module, optionflags=doctest.ELLIPSIS, report=False)
  assert attempted > 0 and failed == 0, f"{failed} of {attempted} examples failed in {name}"
