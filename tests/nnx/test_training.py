"""Training NNX models: nnx.Optimizer with every flaxopt optimizer, and the linen adapter.

* ``nnx.Optimizer(model, tx, wrt=nnx.Param)`` + ``optimizer.update(model, grads,
  value=, grad=, value_fn=)`` lowers the loss with every registry optimizer and, for Adam
  and the second-order methods, takes exactly the steps that ``tx`` takes on the plain
  parameter pytree (the reference).
* ``LinenAdapter``: from the same initial variables, ``flaxopt.training.steps.train_step``
  with Adam gives the linen model's losses step by step (100 steps, float32, 1e-6).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import flaxopt.nnx as fnnx
from flaxopt import registry
from flaxopt.nn import models as linen_models
from flaxopt.training import state as state_lib
from flaxopt.training import steps

RNG = np.random.default_rng(0)
XS = jnp.asarray(RNG.normal(size=(16, 6)), jnp.float32)
YS = jnp.asarray(RNG.integers(0, 3, 16))
# First trial steps that suit a tiny MLP (second-order methods: 1.0, their natural step).
LEARNING_RATES = {"sgd": 0.5, "momentum": 0.2, "nesterov": 0.2, "adagrad": 0.3,
                  "adadelta": 1.0, "adafactor": 0.1, "shampoo": 0.005}
# Constructor arguments an optimizer needs on this model: Muon orthogonalizes matrices only,
# so the biases go to its AdamW through the mask (as its users configure it).
KWARGS = {"muon": {"mask": "matrices"}}


def _loss(model, x, y):
  return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(model(x), y))


def _make(name):
  model = fnnx.build_model({"name": "mlp", "width": 4, "depth": 1, "activation": "tanh"}, 3,
                           (6,), nnx.Rngs(0))
  tx = registry.get("optimizer", name, learning_rate=LEARNING_RATES.get(name, 0.05),
                    **KWARGS.get(name, {}))
  return model, tx


@nnx.jit
def _nnx_step(model, optimizer, x, y):
  """The documented pattern: value, grad and value_fn for the second-order methods."""
  graphdef, _, rest = nnx.split(model, nnx.Param, ...)
  value_fn = lambda params: _loss(nnx.merge(graphdef, params, rest), x, y)
  loss, grads = nnx.value_and_grad(_loss)(model, x, y)
  optimizer.update(model, grads, value=loss, grad=grads, value_fn=value_fn)
  return loss


@functools.partial(jax.jit, static_argnums=(0, 1))
def _reference_step(graphdef, tx, params, opt_state, x, y):
  """The same tx on the plain parameter pytree."""
  loss_of = lambda p: _loss(nnx.merge(graphdef, p), x, y)
  loss, grads = jax.value_and_grad(loss_of)(params)
  updates, opt_state = tx.update(grads, opt_state, params, value=loss, grad=grads,
                                 value_fn=loss_of)
  return optax.apply_updates(params, updates), opt_state, loss


# Checked step by step against the plain-pytree reference: one first-order optimizer (the
# wiring is the same for all of them) and the second-order ones that use value_fn.
REFERENCE_CHECKED = ("adam", "newton", "lbfgs", "conjugate_gradient")


SECOND_ORDER = ("newton", "newton_cg", "bfgs", "lbfgs", "conjugate_gradient")


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=[pytest.mark.slow] if n in SECOND_ORDER else [])
    for n in registry.names("optimizer")])
def test_nnx_optimizer_runs_every_flaxopt_optimizer(name):
  model, tx = _make(name)
  tx = optax.with_extra_args_support(tx)
  graphdef, params = nnx.split(model, nnx.Param)
  params = nnx.to_pure_dict(params)
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
  opt_state = tx.init(params)
  losses = []
  for _ in range(3):
    losses.append(float(_nnx_step(model, optimizer, XS, YS)))
    if name in REFERENCE_CHECKED:
      params, opt_state, ref_loss = _reference_step(graphdef, tx, params, opt_state, XS, YS)
      np.testing.assert_allclose(losses[-1], ref_loss, rtol=1e-6)
  if name in REFERENCE_CHECKED:
    jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-5, atol=1e-6),
                 fnnx.linen_variables(model)["params"], params)
  final = float(_loss(model, XS, YS))
  assert final < losses[0], (name, losses, final)
  assert int(optimizer.step[...]) == 3


def _mnist1d_like(num, seed):
  rng = np.random.default_rng(seed)
  return {"x": jnp.asarray(rng.normal(size=(num, 40, 1)), jnp.float32),
          "y": jnp.asarray(rng.integers(0, 10, num), jnp.int32)}


@pytest.mark.slow
@pytest.mark.parametrize("config", [
    {"name": "mlp", "width": 16, "norm": "batch"},
    {"name": "cnn", "channels": 8},
], ids=["mlp-batch", "cnn"])
def test_adapter_trains_like_linen_through_train_step(config):
  linen = linen_models.build_model(config, 10)
  adapter = fnnx.LinenAdapter.from_config(config, 10, (40, 1))
  batches = _mnist1d_like(4 * 32, 1)  # 4 batches, cycled: 100 steps fit them.
  rngs = {"params": jax.random.PRNGKey(0)}
  variables = jax.jit(lambda r, x: linen.init(r, x, train=False))(rngs, batches["x"][:32])
  ours = jax.eval_shape(adapter.init, rngs, batches["x"][:32])
  assert jax.tree.structure(ours) == jax.tree.structure(dict(variables))
  tx = registry.get("optimizer", "adam", learning_rate=3e-3)
  losses = {}
  for api, model in (("linen", linen), ("nnx", adapter)):
    state = state_lib.create_train_state(variables, tx, jax.random.PRNGKey(1))

    def run(state):
      def body(state, i):
        batch = jax.tree.map(lambda a: jax.lax.dynamic_slice_in_dim(a, i % 4 * 32, 32), batches)
        state, metrics = steps.train_step(state, batch, apply_fn=model.apply, tx=tx,
                                          num_classes=10)
        return state, metrics["loss"]
      return jax.lax.scan(body, state, jnp.arange(100))
    state, losses[api] = jax.jit(run)(state)
    evaluate = jax.jit(functools.partial(steps.eval_step, apply_fn=model.apply,
                                         num_classes=10))
    losses[api + "_eval"] = evaluate(state.params, state.batch_stats,
                                     {**_mnist1d_like(64, 2), "mask": jnp.ones(64)})
  np.testing.assert_allclose(losses["nnx"], losses["linen"], rtol=1e-6)
  assert losses["nnx"][-1] < 0.7 * losses["nnx"][0]  # it trains (fits the random labels).
  jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-6),
               losses["nnx_eval"], losses["linen_eval"])
