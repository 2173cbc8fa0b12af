"""flaxopt.optim.alias against optax where the conventions match, and its traced arguments.

The properties every optimizer shares (convergence, dtypes, state structure, one
compilation, inject_hyperparams under vmap, masks, orbax, bad input) run over the one table
of ``tests/optim/properties.py`` in ``tests/optim/test_properties.py``.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from flaxopt.optim import alias
from tests.optim import properties as props


def _random_grads(params, num_steps=20):
  """Fixed gradients whose scale changes by 100x, so max/EMA branches switch."""
  rng = np.random.default_rng(0)
  return [jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape) * 10.0 ** (t % 3 - 1),
                                             jnp.float32), params) for t in range(num_steps)]


def _run_updates(tx, params, grads):
  """Eager updates of ``tx`` over ``grads`` (parameters move)."""
  state = tx.init(params)
  out = []
  for g in grads:
    u, state = tx.update(g, state, params)
    params = optax.apply_updates(params, u)
    out.append(u)
  return out, state


# Where our conventions coincide with optax's (flags chosen to match), the
# trajectories agree; the defaults that differ are documented in transform.py.
OPTAX_AGREEMENT = [
    ("sgd", dict(learning_rate=0.1), optax.sgd(0.1)),
    ("momentum", dict(learning_rate=0.1), optax.sgd(0.1, momentum=0.9)),
    ("nesterov", dict(learning_rate=0.1), optax.sgd(0.1, momentum=0.9, nesterov=True)),
    ("adagrad", dict(learning_rate=0.1, initial_accumulator_value=0.1, eps=0.0, eps_root=1e-7),
     optax.adagrad(0.1)),
    ("adadelta", dict(learning_rate=1.0), optax.adadelta(1.0)),
    ("rmsprop", dict(learning_rate=0.01, decay=0.9, eps=0.0, eps_root=1e-8),
     optax.rmsprop(0.01)),
    ("rmsprop", dict(learning_rate=0.01, decay=0.9, eps=0.0, eps_root=1e-2, centered=True,
                     momentum=0.9), optax.rmsprop(0.01, eps=1e-2, centered=True, momentum=0.9)),
    ("rmsprop", dict(learning_rate=0.01, eps=0.1, bias_correction=True),
     optax.rmsprop(0.01, decay=0.99, eps=0.1, eps_in_sqrt=False, bias_correction=True)),
    ("adam", dict(learning_rate=0.01, eps=0.1, eps_root=0.01),
     optax.adam(0.01, eps=0.1, eps_root=0.01)),
    ("adamax", dict(learning_rate=0.01, eps=0.1), optax.adamax(0.01, eps=0.1)),
    ("nadam", dict(learning_rate=0.01, eps=0.1, constant_momentum=True),
     optax.nadam(0.01, eps=0.1)),
    ("amsgrad", dict(learning_rate=0.01, b2=0.5, eps=0.1, correct_before_max=True),
     optax.amsgrad(0.01, b2=0.5, eps=0.1)),
    ("adafactor", dict(learning_rate=0.01, relative_step=False),
     optax.adafactor(0.01, min_dim_size_to_factor=1)),
]


@pytest.mark.parametrize("name,kwargs,reference", OPTAX_AGREEMENT,
                         ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(OPTAX_AGREEMENT)])
def test_agrees_with_optax_where_conventions_match(name, kwargs, reference) -> None:
  params, _ = props.small_problem()
  grads = _random_grads(params)
  got, _ = _run_updates(alias.REGISTRY[name](**kwargs), params, grads)
  want, _ = _run_updates(reference, params, grads)
  chex.assert_trees_all_close(got, want, rtol=2e-5, atol=1e-7)


def test_defaults_differ_from_optax_where_documented() -> None:
  """The documented differences are real: the defaults do not agree with optax's."""
  params, _ = props.small_problem()
  grads = _random_grads(params)
  pairs = [(alias.adagrad(0.1), optax.adagrad(0.1)),
           (alias.rmsprop(0.01, decay=0.9, eps=0.1), optax.rmsprop(0.01, eps=0.1)),
           (alias.nadam(0.01), optax.nadam(0.01)),
           (alias.amsgrad(0.01, b2=0.5), optax.amsgrad(0.01, b2=0.5))]
  for ours, theirs in pairs:
    got, _ = _run_updates(ours, params, grads)
    want, _ = _run_updates(theirs, params, grads)
    trajectory = lambda updates: np.stack([u["w"] for u in updates])
    assert not np.allclose(trajectory(got), trajectory(want), rtol=1e-2)


def test_traced_explicit_arguments_match_solo_runs() -> None:
  """The constructors themselves take traced values (no inject_hyperparams)."""
  params, grads = props.small_problem()
  names = ("learning_rate", "b1", "b2", "eps")
  stacked = {n: jnp.asarray(props.MEMBER_VALUES[n], jnp.float32) for n in names}
  got = jax.jit(jax.vmap(lambda hps: _run_updates(alias.adam(**hps), params, grads)[0]))(
      stacked)
  for m in range(3):
    want, _ = _run_updates(alias.adam(**{n: v[m] for n, v in stacked.items()}), params, grads)
    chex.assert_trees_all_close(jax.tree.map(lambda x, m=m: x[m], got), want, rtol=1e-6)


def test_stacked_concrete_values_are_validated_before_tracing() -> None:
  """Every member of a concrete stacked value is checked; traced values are not compared."""
  with pytest.raises(ValueError, match=r"b1 must be in \[0.0, 1.0\)"):
    alias.adam(1e-3, b1=jnp.array([0.9, 1.5, 0.5]))
  with pytest.raises(ValueError, match="learning_rate"):
    alias.sgd(np.array([1e-2, -1e-2]))
  jax.jit(lambda b1: alias.adam(1e-3, b1=b1).init(jnp.zeros(2)))(jnp.float32(1.5))  # no check
