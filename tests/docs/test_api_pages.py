"""Each API page (docs/api/<page>.md) lists exactly its package's public names.

The packages are the toctree of docs/api/index.md (the one list: a new package is one line
there plus its page). Parses the Markdown sources; no Sphinx build.
"""

import importlib
import pathlib
import pkgutil
import re

import pytest

import flaxopt
from tests.docs.api_names import public_names

API = pathlib.Path(__file__).resolve().parents[2] / "docs" / "api"
_TOCTREE = re.compile(r"```\{toctree\}\n(.*?)```", re.DOTALL)
_DIRECTIVE = re.compile(r"^\.\. ([\w:]+)::[ \t]*(\S*)", re.MULTILINE)
_AUTOSUMMARY = re.compile(r"^\.\. autosummary::\n((?:[ \t]+\S.*\n|[ \t]*\n)*)", re.MULTILINE)
_ENTRIES = ("autofunction", "autoclass", "autodata", "py:data")
# Modules of flaxopt with no API page, on purpose (none yet).
NO_PAGE: tuple[str, ...] = ()


def listed_pages() -> list[str]:
  """The page names in docs/api/index.md's toctree."""
  (body,) = _TOCTREE.findall((API / "index.md").read_text())
  return [line.strip() for line in body.splitlines()
          if line.strip() and not line.strip().startswith(":")]


def parse_page(text: str) -> tuple[str, list[str], list[str]]:
  """(currentmodule, names in autosummary tables, names of autodoc / py:data entries)."""
  module = next((arg for kind, arg in _DIRECTIVE.findall(text) if kind == "currentmodule"), None)
  table = [line.strip() for body in _AUTOSUMMARY.findall(text) for line in body.splitlines()
           if line.strip() and not line.strip().startswith(":")]
  entries = [arg for kind, arg in _DIRECTIVE.findall(text) if kind in _ENTRIES]
  return module, table, entries


def test_parse_page_reads_tables_and_entries():
  text = ("# x\n\n```{eval-rst}\n.. currentmodule:: flaxopt.x\n```\n\n```{eval-rst}\n"
          ".. autosummary::\n   :nosignatures:\n\n   f\n   C\n\n.. py:data:: T\n   :type: dict\n\n"
          ".. autofunction:: f\n\n.. autoclass:: C\n```\n")
  assert parse_page(text) == ("flaxopt.x", ["f", "C"], ["T", "f", "C"])


def test_every_package_has_a_page():
  packages = {f"flaxopt.{m.name}" for m in pkgutil.iter_modules(flaxopt.__path__)}
  documented = {parse_page((API / f"{page}.md").read_text())[0] for page in listed_pages()}
  assert sorted(packages - documented - set(NO_PAGE)) == []


@pytest.mark.parametrize("page", listed_pages())
def test_page_lists_the_public_names(page):
  module_name, table, entries = parse_page((API / f"{page}.md").read_text())
  assert module_name, f"docs/api/{page}.md has no {{currentmodule}}"
  names = public_names(importlib.import_module(module_name))
  module = importlib.import_module(module_name)
  assert len(table) == len(set(table)) and len(entries) == len(set(entries))
  assert sorted(entries) == sorted(names), f"autodoc entries of docs/api/{page}.md"
  # The summary tables list every function and class (constants have no docstring of their own).
  documented = [n for n in names if callable(getattr(module, n))]
  assert sorted(table) == sorted(documented), f"autosummary of docs/api/{page}.md"


def test_a_missing_name_fails():
  _, table, entries = parse_page((API / "optim.md").read_text())
  names = public_names(importlib.import_module("flaxopt.optim"))
  assert "adam" in table and "adam" in entries and "REGISTRY" in entries
  assert sorted(e for e in entries if e != "adam") != sorted(names)
