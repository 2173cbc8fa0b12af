"""The public names of a flaxopt package, as its API page must list them.

A package's ``__all__`` where it defines one; otherwise (the packages that star-import their
submodules, and flaxopt.registry) every non-underscore name bound in it that is not a module
and not imported from outside flaxopt (``Any``, ``annotations``, ...).
"""

import types


def public_names(module: types.ModuleType) -> list[str]:
  if hasattr(module, "__all__"):
    return list(module.__all__)
  names = []
  for name, obj in vars(module).items():
    if name.startswith("_") or isinstance(obj, types.ModuleType):
      continue
    home = getattr(obj, "__module__", None)
    if home is None or home.startswith("flaxopt"):
      names.append(name)
  return names
