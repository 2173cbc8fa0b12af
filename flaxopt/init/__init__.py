"""Data-dependent initialization that needs a model and a batch: LSUV, RBM pre-training.

``apply_data_dependent_init(config, model, variables, x_batch, key)`` runs after
``model.init`` and before training:

* LSUV (Mishkin & Matas 2016) when ``config.model.kernel_init == 'lsuv'``: the model was
  built with orthogonal kernels (the registry entry ``'lsuv'``), and each Dense/Conv kernel
  (WeightNorm gain ``g``) is rescaled, in forward order, until its output variance on
  ``x_batch`` is 1 within ``config.init.lsuv_tol`` (default 0.1) in at most
  ``config.init.lsuv_max_iters`` (10) rescalings.
* RBM pre-training (Hinton & Salakhutdinov 2006) when ``config.init.pretrain == 'rbm'``:
  the hidden Dense layers of an MLP get the weights and hidden biases of a greedily trained
  stack of RBMs (CD-k). Fields: ``init.rbm_steps`` (CD updates per layer, default 1000),
  ``init.rbm_batch_size`` (100), ``init.rbm_k`` (1), ``init.rbm_learning_rate`` (0.01),
  ``init.rbm_visible`` ('gaussian' for standardized inputs | 'bernoulli' for [0, 1] inputs).
  The RBMs train on mini-batches drawn from ``x_batch`` alone, so pass a large batch.

When both are asked for, RBM pre-training runs first, then LSUV; with neither, ``variables`` is returned
unchanged (the same object).

Naming: ``flaxopt.init.lsuv`` is the LSUV *function* (the package re-exports it); import the
module's other names with ``from flaxopt.init.lsuv import ...``. ``flaxopt.init.rbm`` is the
module.
"""

from __future__ import annotations

from typing import Any, Callable

import jax

from flaxopt.init.lsuv import LayerReport, kernel_layers, layer_outputs, lsuv, lsuv_base_init
from flaxopt.init.rbm import (RBMParams, cd_gradients, cd_update, hidden_probs, pretrain_mlp,
                              pretrain_stack, rbm_init, reconstruction_error, train_rbm,
                              visible_mean)

__all__ = [
    "REGISTRY", "PRETRAIN", "DATA_DEPENDENT_STEPS", "LSUV_FIELDS", "RBM_FIELDS",
    "apply_data_dependent_init",
    "LayerReport", "kernel_layers", "layer_outputs", "lsuv", "lsuv_base_init",
    "RBMParams", "cd_gradients", "cd_update", "hidden_probs", "pretrain_mlp", "pretrain_stack",
    "rbm_init", "reconstruction_error", "train_rbm", "visible_mean",
]

# Registry entries merged into the "initializer" family: the base initializer a model gets
# from `kernel_init='lsuv'` (orthogonal); the data-dependent part runs in
# apply_data_dependent_init.
REGISTRY: dict[str, Callable[..., Any]] = {"lsuv": lsuv_base_init}

_MISSING = object()
# config.init.<field> -> keyword argument of lsuv / pretrain_mlp. A field the config lacks
# takes that function's own keyword default (the one source of these defaults).
LSUV_FIELDS = {"lsuv_tol": "tol", "lsuv_max_iters": "max_iters"}
RBM_FIELDS = {"rbm_visible": "visible", "rbm_steps": "steps", "rbm_batch_size": "batch_size",
              "rbm_k": "k", "rbm_learning_rate": "learning_rate"}


def _field(config: Any, dotted: str, default: Any = _MISSING) -> Any:
  """``config.a.b`` or ``default`` when any part is missing (ConfigDict, dict or object)."""
  node = config
  for name in dotted.split("."):
    if isinstance(node, dict) or hasattr(node, "get") and not hasattr(node, name):
      node = node.get(name, _MISSING)
    else:
      node = getattr(node, name, _MISSING)
    if node is _MISSING or node is None:
      return default
  return node


def _kwargs(config: Any, fields: dict[str, str]) -> dict[str, Any]:
  """The keyword arguments ``config.init`` sets (missing fields are left out)."""
  out = {kw: _field(config, f"init.{field}") for field, kw in fields.items()}
  return {kw: value for kw, value in out.items() if value is not _MISSING}


def _eval_apply(model: Any) -> Callable[[Any, jax.Array], Any]:
  return lambda v, x: model.apply(v, x, train=False)


def _run_lsuv(config, model, variables, x_batch, key):
  del key
  variables, _ = lsuv(_eval_apply(model), variables, x_batch, **_kwargs(config, LSUV_FIELDS))
  return variables


def _run_rbm(config, model, variables, x_batch, key):
  variables, _ = pretrain_mlp(_eval_apply(model), variables, x_batch, key,
                              **_kwargs(config, RBM_FIELDS))
  return variables


# config.init.pretrain value -> runner ('none' runs nothing).
PRETRAIN: dict[str, Callable[..., Any] | None] = {"none": None, "rbm": _run_rbm}


def _pretrain_runner(config):
  name = _field(config, "init.pretrain", "none")  # 'none': the absence of pre-training
  if name not in PRETRAIN:
    raise ValueError(f"Unknown init.pretrain {name!r}; valid: {', '.join(PRETRAIN)}.")
  return PRETRAIN[name]


def _lsuv_runner(config):
  return _run_lsuv if _field(config, "model.kernel_init", None) == "lsuv" else None


# The data-dependent steps, in the order they run: config -> runner or None.
DATA_DEPENDENT_STEPS: tuple[Callable[[Any], Any], ...] = (_pretrain_runner, _lsuv_runner)


def apply_data_dependent_init(config: Any, model: Any, variables: Any, x_batch: jax.Array,
                              key: jax.Array) -> Any:
  """Runs the data-dependent initializers ``config`` asks for; ``variables`` otherwise.

  RBM pre-training when ``config.init.pretrain == 'rbm'`` (hidden Dense layers of an MLP),
  then LSUV when ``config.model.kernel_init == 'lsuv'``. ``model.apply(v, x, train=False)``
  is the forward pass used. Missing ``init.*`` fields take the keyword defaults of ``lsuv``
  and ``pretrain_mlp`` (see the module docstring).

  Raises:
    ValueError: on an unknown ``init.pretrain``, or from the steps (e.g. RBM pre-training of
      a conv model).
  """
  runners = [r for r in (step(config) for step in DATA_DEPENDENT_STEPS) if r is not None]
  for runner, step_key in zip(runners, jax.random.split(key, max(len(runners), 1))):
    variables = runner(config, model, variables, x_batch, step_key)
  return variables

