"""Writes the first draft of an API page: ``python docs/api/write_page.py flaxopt.curvature``.

Prints ``docs/api/<name>.md`` for a package (or module): one section per submodule that
defines its public names (``__all__``, or the non-underscore names it defines or re-exports
from flaxopt), each with an autosummary table and the autodoc entries. Edit the draft freely
(titles, order, grouping); add its line to the toctree of docs/api/index.md.
tests/docs/test_api_pages.py keeps every page equal to its package's public names.
"""

import importlib
import inspect
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "docs"))
from api_names import public_names  # pylint: disable=g-import-not-at-top,wrong-import-position


def _directive(obj) -> str:
  if inspect.isclass(obj):
    return "autoclass"
  if callable(obj):
    return "autofunction"
  return "py:data"  # a constant (a registry table): its type, not the type's docstring


def _home(package, name: str) -> str:
  """The submodule that defines (or first binds) ``name``."""
  obj = getattr(package, name)
  module = getattr(obj, "__module__", None)
  if inspect.isclass(obj) or inspect.isfunction(obj):
    if module and module.startswith(package.__name__ + "."):
      return module
  for sub in _submodules(package) if hasattr(package, "__path__") else []:
    if name in vars(sub) and vars(sub)[name] is obj:
      return sub.__name__
  return package.__name__


def _submodules(package):
  import pkgutil  # pylint: disable=g-import-not-at-top
  return [importlib.import_module(f"{package.__name__}.{m.name}")
          for m in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name)]


def page(package_name: str) -> str:
  package = importlib.import_module(package_name)
  names = public_names(package)
  groups: dict[str, list[str]] = {}
  for name in names:
    groups.setdefault(_home(package, name), []).append(name)
  summary = (inspect.getdoc(package) or "").split("\n")[0]
  out = [f"# `{package_name}`", "", summary, "", "```{eval-rst}",
         f".. currentmodule:: {package_name}", "```", ""]
  for module in sorted(groups):
    if module != package_name:
      doc = (inspect.getdoc(importlib.import_module(module)) or "").split("\n")[0]
      title = module.rsplit(".", 1)[1].replace("_", " ").capitalize()
      out += [f"## {title}", "", f"`{module}`: {doc}", ""]
    out += ["```{eval-rst}"]
    documented = [n for n in groups[module] if _directive(getattr(package, n)) != "py:data"]
    if documented:
      out += [".. autosummary::", "   :nosignatures:", "", *(f"   {n}" for n in documented), ""]
    for name in groups[module]:
      obj = getattr(package, name)
      directive = _directive(obj)
      out.append(f".. {directive}:: {name}")
      if directive == "py:data":
        out.append(f"   :type: {type(obj).__name__}")
      out.append("")
    out[-1:] = ["```", ""]
  return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
  print(page(sys.argv[1]), end="")
