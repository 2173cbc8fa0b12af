"""Shared properties of every first-order optimizer in flaxopt.optim.alias.

One table of (name, kwargs); every case goes through every property. Adding an
optimizer to ``alias.REGISTRY`` without a case here fails ``test_table_covers_registry``.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import chex
import jax
import jax.test_util  # pylint: disable=unused-import
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from flaxopt import optim
from flaxopt import registry
from flaxopt.optim import alias


@dataclasses.dataclass(frozen=True)
class Case:
  name: str
  kwargs: dict
  steps: int  # Steps for the parabola and Rosenbrock properties.

  def make(self, **overrides: Any) -> optax.GradientTransformation:
    return alias.REGISTRY[self.name](**{**self.kwargs, **overrides})

  def __str__(self) -> str:
    extra = ",".join(f"{k}" for k in self.kwargs if k != "learning_rate")
    return f"{self.name}({extra})"


CASES = [
    Case("sgd", dict(learning_rate=1e-3), 20000),
    Case("momentum", dict(learning_rate=1e-3, momentum=0.9), 5000),
    Case("nesterov", dict(learning_rate=1e-3, momentum=0.9), 5000),
    Case("adagrad", dict(learning_rate=0.5), 10000),
    Case("adadelta", dict(learning_rate=optax.cosine_decay_schedule(0.2, 10000)), 10000),
    Case("rmsprop", dict(learning_rate=1e-3), 10000),
    Case("rmsprop", dict(learning_rate=1e-3, centered=True, momentum=0.9), 5000),
    Case("adam", dict(learning_rate=1e-2), 5000),
    Case("adamax", dict(learning_rate=1e-2), 5000),
    Case("nadam", dict(learning_rate=1e-2), 5000),
    Case("nadam", dict(learning_rate=1e-2, constant_momentum=True), 5000),
    Case("amsgrad", dict(learning_rate=1e-2), 5000),
    Case("adafactor", dict(learning_rate=0.05), 50000),
    Case("adafactor", dict(learning_rate=1e-2, beta1=0.9), 5000),
]
IDS = [str(c) for c in CASES]
ONE_CASE_PER_NAME = list({c.name: c for c in reversed(CASES)}.values())

PARABOLA_TARGET = {"w": jnp.array([[1.0, -1.0, 0.5], [2.0, 0.0, -0.5]]),
                   "b": jnp.array([1.0, -1.0, 1.0])}


def _parabola(params):
  return sum(jnp.sum((params[k] - PARABOLA_TARGET[k]) ** 2) for k in params)


def _rosenbrock(xy):
  return (1.0 - xy[0]) ** 2 + 100.0 * (xy[1] - xy[0] ** 2) ** 2


def _minimize(tx, objective, x0, steps):
  @jax.jit
  def run(x):
    def body(_, carry):
      x, state = carry
      updates, state = tx.update(jax.grad(objective)(x), state, x)
      return optax.apply_updates(x, updates), state
    return jax.lax.fori_loop(0, steps, body, (x, tx.init(x)))[0]
  return run(x0)


def _small_problem(dtype=jnp.float32):
  params = {"w": jnp.linspace(-1.0, 1.0, 6).reshape(2, 3).astype(dtype),
            "b": jnp.array([0.5, -0.25, 2.0], dtype)}
  grads = [jax.tree.map(lambda p, s=s: (s * (p + 0.3)).astype(dtype), params)
           for s in (1.0, -0.5, 2.0)]
  return params, grads


def _random_grads(params, num_steps=20):
  """Fixed gradients whose scale changes by 100x, so max/EMA branches switch."""
  rng = np.random.default_rng(0)
  return [jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape) * 10.0 ** (t % 3 - 1),
                                             jnp.float32), params) for t in range(num_steps)]


def _run_updates(tx, params, grads, jit=True):
  update = jax.jit(tx.update) if jit else tx.update
  state = tx.init(params)
  out = []
  for g in grads:
    u, state = update(g, state, params)
    params = optax.apply_updates(params, u)
    out.append(u)
  return out, state


def test_table_covers_registry() -> None:
  assert {c.name for c in CASES} == set(alias.REGISTRY)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_minimizes_parabola_and_rosenbrock(case: Case) -> None:
  tx = case.make()
  x = _minimize(tx, _parabola, jax.tree.map(jnp.zeros_like, PARABOLA_TARGET), case.steps)
  chex.assert_trees_all_close(x, PARABOLA_TARGET, atol=1e-2)
  xy = _minimize(tx, _rosenbrock, jnp.zeros(2), case.steps)
  chex.assert_trees_all_close(xy, jnp.ones(2), atol=1e-2)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_keeps_dtype_and_state_structure(case: Case) -> None:
  for dtype in (jnp.float32, jnp.bfloat16, jnp.float64):
    with jax.enable_x64(dtype == jnp.float64):
      params, grads = _small_problem(dtype)
      tx = case.make()
      state0 = tx.init(params)
      updates, state = _run_updates(tx, params, grads, jit=False)
      for u in updates:
        chex.assert_trees_all_equal_dtypes(u, params)
        chex.assert_tree_all_finite(u)
      chex.assert_trees_all_equal_structs(state0, state)
      chex.assert_trees_all_equal_dtypes(state0, state)
      chex.assert_tree_all_finite(state)
      # Moments (every state array shaped like a parameter) are in param dtype.
      shaped = [x for x in jax.tree.leaves(state) if x.ndim > 0]
      assert all(x.dtype == dtype for x in shaped), (dtype, [x.dtype for x in shaped])


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_no_recompilation_on_second_update(case: Case) -> None:
  tx = case.make()
  params, grads = _small_problem()
  traces = []

  @jax.jit
  def update(g, state, params):
    traces.append(1)  # Python side effect: runs once per trace.
    return tx.update(g, state, params)

  state = tx.init(params)
  for g in grads:
    _, state = update(g, state, params)
  assert len(traces) == 1
  assert update._cache_size() == 1  # pylint: disable=protected-access


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_vmap_over_independent_problems(case: Case) -> None:
  tx = case.make()
  params, grads = _small_problem()
  other = jax.tree.map(lambda p: 2.0 * p - 1.0, params)
  stack = lambda a, b: jax.tree.map(lambda x, y: jnp.stack([x, y]), a, b)
  both = stack(params, other)

  @jax.jit
  def batched(g, params):
    update = jax.vmap(tx.update)
    state = jax.vmap(tx.init)(params)
    return update(g, state, params)[0]

  got = batched(stack(grads[0], grads[1]), both)
  for i, (p, g) in enumerate(((params, grads[0]), (other, grads[1]))):
    want, _ = tx.update(g, tx.init(p), p)
    chex.assert_trees_all_close(jax.tree.map(lambda x, i=i: x[i], got), want, rtol=1e-6)


@pytest.mark.parametrize("case", ONE_CASE_PER_NAME, ids=str)
def test_differentiable_through_updates(case: Case) -> None:
  """Gradients through two optimizer steps match finite differences (float64)."""
  with jax.enable_x64(True):
    tx = case.make()
    params, _ = _small_problem(jnp.float64)

    def loss_after_two_steps(p):
      state = tx.init(p)
      for _ in range(2):
        updates, state = tx.update(jax.grad(_parabola)(p), state, p)
        p = optax.apply_updates(p, updates)
      return _parabola(p)

    jax.test_util.check_grads(loss_after_two_steps, (params,), order=1, modes=["rev"],
                              eps=1e-6, rtol=1e-4)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_inject_hyperparams_matches_plain(case: Case) -> None:
  params, grads = _small_problem()
  injected = optax.inject_hyperparams(alias.REGISTRY[case.name])(**case.kwargs)
  got, state = _run_updates(injected, params, grads)
  want, _ = _run_updates(case.make(), params, grads)
  chex.assert_trees_all_close(got, want, rtol=1e-5, atol=1e-7)
  if callable(case.kwargs["learning_rate"]):
    return  # A scheduled value is recomputed every step, not stored.
  # The stored learning rate is live: the first update is linear in it.
  state = injected.init(params)
  u_full, _ = injected.update(grads[0], state, params)
  state.hyperparams["learning_rate"] = state.hyperparams["learning_rate"] / 2
  u_half, _ = injected.update(grads[0], state, params)
  chex.assert_trees_all_close(u_half, jax.tree.map(lambda u: u / 2, u_full), rtol=1e-6)


def test_inject_hyperparams_bfloat16_rounding_is_caught() -> None:
  # inject_hyperparams casts hyperparameters to the params' dtype: bf16(0.999) == 1.
  params = jnp.ones(3, jnp.bfloat16)
  with pytest.raises(ValueError, match="b2.*hyperparam_dtype"):
    optax.inject_hyperparams(alias.adam)(learning_rate=1e-3).init(params)
  # With float32 hyperparameters every optimizer still returns bfloat16 updates.
  for case in ONE_CASE_PER_NAME:
    tx = optax.inject_hyperparams(alias.REGISTRY[case.name],
                                  hyperparam_dtype=jnp.float32)(**case.kwargs)
    u, _ = tx.update(jnp.ones(3, jnp.bfloat16), tx.init(params), params)
    assert u.dtype == jnp.bfloat16, case
    chex.assert_tree_all_finite(u)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_composes_with_clipping_and_masks(case: Case) -> None:
  params, grads = _small_problem()
  tx = optax.chain(optax.clip_by_global_norm(1.0),
                   optax.masked(case.make(), {"w": True, "b": False}))
  got, _ = _run_updates(tx, params, grads)
  clip = optax.clip_by_global_norm(1.0)
  clipped = [clip.update(g, clip.init(params))[0] for g in grads]
  want, _ = _run_updates(case.make(), {"w": params["w"]}, [{"w": c["w"]} for c in clipped])
  for t in range(len(grads)):
    chex.assert_trees_all_close(got[t]["w"], want[t]["w"], rtol=1e-6)
    chex.assert_trees_all_close(got[t]["b"], clipped[t]["b"])  # Masked out: untouched.


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_none_leaves_pass_through(case: Case) -> None:
  params, grads = _small_problem()
  with_none = lambda t: {**t, "frozen": None}
  got, _ = _run_updates(case.make(), with_none(params), [with_none(g) for g in grads],
                        jit=False)
  want, _ = _run_updates(case.make(), params, grads, jit=False)
  assert got[-1]["frozen"] is None
  chex.assert_trees_all_close({k: got[-1][k] for k in params}, want[-1])


@pytest.mark.parametrize("name", sorted(alias.REGISTRY))
def test_learning_rate_is_required_and_positive(name: str) -> None:
  for bad in (None, 0.0, -1e-3, float("nan")):
    with pytest.raises(ValueError, match="learning_rate"):
      alias.REGISTRY[name](learning_rate=bad)
  with pytest.raises(TypeError):
    alias.REGISTRY[name]()  # pylint: disable=no-value-for-parameter


@pytest.mark.parametrize("name,kwargs,arg", [
    ("momentum", dict(momentum=1.0), "momentum"),
    ("nesterov", dict(momentum=-0.1), "momentum"),
    ("adagrad", dict(initial_accumulator_value=-1.0), "initial_accumulator_value"),
    ("adagrad", dict(eps=-1e-3), "eps"),
    ("adadelta", dict(rho=1.5), "rho"),
    ("rmsprop", dict(decay=1.0), "decay"),
    ("rmsprop", dict(momentum=2.0), "momentum"),
    ("rmsprop", dict(eps_root=-1.0), "eps_root"),
    ("adam", dict(b1=1.0), "b1"),
    ("adam", dict(b2=-0.5), "b2"),
    ("adam", dict(eps=-1e-8), "eps"),
    ("adamax", dict(b2=1.0), "b2"),
    ("nadam", dict(momentum_decay=-1.0), "momentum_decay"),
    ("amsgrad", dict(b1=2.0), "b1"),
    ("adafactor", dict(decay_rate=0.0), "decay_rate"),
    ("adafactor", dict(clipping_threshold=0.0), "clipping_threshold"),
    ("adafactor", dict(beta1=1.0), "beta1"),
    ("adafactor", dict(eps2=-1.0), "eps2"),
])
def test_bad_hyperparameters_raise(name: str, kwargs: dict, arg: str) -> None:
  with pytest.raises(ValueError, match=arg):
    alias.REGISTRY[name](learning_rate=1e-3, **kwargs)


def test_registry_builds_every_optimizer_and_rejects_unknown() -> None:
  params, grads = _small_problem()
  for name in alias.REGISTRY:
    tx = registry.get("optimizer", name, learning_rate=1e-3)
    assert isinstance(tx, optax.GradientTransformation)
    assert optim.REGISTRY[name] is alias.REGISTRY[name]
    u, _ = tx.update(grads[0], tx.init(params), params)
    chex.assert_tree_all_finite(u)
  with pytest.raises(ValueError, match="optimizer"):
    registry.get("optimizer", "adamm", learning_rate=1e-3)


def test_schedule_learning_rate_equals_float() -> None:
  params, grads = _small_problem()
  for case in CASES:
    if callable(case.kwargs["learning_rate"]):
      continue
    lr = case.kwargs["learning_rate"]
    got, _ = _run_updates(case.make(learning_rate=optax.constant_schedule(lr)), params, grads,
                          jit=False)
    want, _ = _run_updates(case.make(), params, grads, jit=False)
    chex.assert_trees_all_close(got, want, rtol=1e-6, custom_message=str(case))


def test_states_checkpoint_with_orbax(tmp_path) -> None:
  params, grads = _small_problem()
  states = {}
  for i, case in enumerate(CASES):
    _, states[f"{i}_{case.name}"] = _run_updates(case.make(), params, grads[:1], jit=False)
  ckpt = ocp.StandardCheckpointer()
  ckpt.save(tmp_path / "opt_states", states)
  ckpt.wait_until_finished()
  restored = ckpt.restore(tmp_path / "opt_states",
                          jax.tree.map(ocp.utils.to_shape_dtype_struct, states))
  chex.assert_trees_all_equal_structs(restored, states)
  chex.assert_trees_all_equal(restored, states)


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
  params, _ = _small_problem()
  grads = _random_grads(params)
  got, _ = _run_updates(alias.REGISTRY[name](**kwargs), params, grads, jit=False)
  want, _ = _run_updates(reference, params, grads, jit=False)
  chex.assert_trees_all_close(got, want, rtol=2e-5, atol=1e-7)


def test_defaults_differ_from_optax_where_documented() -> None:
  """The documented differences are real: the defaults do not agree with optax's."""
  params, _ = _small_problem()
  grads = _random_grads(params)
  pairs = [(alias.adagrad(0.1), optax.adagrad(0.1)),
           (alias.rmsprop(0.01, decay=0.9, eps=0.1), optax.rmsprop(0.01, eps=0.1)),
           (alias.nadam(0.01), optax.nadam(0.01)),
           (alias.amsgrad(0.01, b2=0.5), optax.amsgrad(0.01, b2=0.5))]
  for ours, theirs in pairs:
    got, _ = _run_updates(ours, params, grads, jit=False)
    want, _ = _run_updates(theirs, params, grads, jit=False)
    trajectory = lambda updates: np.stack([u["w"] for u in updates])
    assert not np.allclose(trajectory(got), trajectory(want), rtol=1e-2)


# Stacked runs (a leading "member" axis, as the sweep engine trains them): every float
# hyperparameter enters as a traced value. Three per-member values for each.
MEMBER_VALUES = {
    "learning_rate": (1e-2, 3e-3, 3e-2),
    "momentum": (0.9, 0.5, 0.1),
    "initial_accumulator_value": (0.0, 0.1, 1.0),
    "eps": (1e-8, 1e-4, 1e-2),
    "eps_root": (0.0, 1e-6, 1e-3),
    "rho": (0.9, 0.95, 0.5),
    "decay": (0.99, 0.9, 0.5),
    "b1": (0.9, 0.8, 0.6),
    "b2": (0.999, 0.99, 0.9),
    "momentum_decay": (4e-3, 1e-2, 0.1),
    "decay_rate": (0.8, 0.5, 1.0),
    "clipping_threshold": (1.0, 0.5, 2.0),
    "beta1": (0.9, 0.6, 0.1),
    "eps1": (1e-30, 1e-10, 1e-3),
    "eps2": (1e-3, 1e-2, 0.1),
}


def _float_hyperparameters(case: Case) -> list[str]:
  """learning_rate and every argument of the case whose value is a float (not a bool or None)."""
  params = inspect.signature(alias.REGISTRY[case.name]).parameters
  return [n for n, p in params.items() if n == "learning_rate"
          or isinstance(case.kwargs.get(n, p.default), float)]


def test_member_values_cover_every_float_hyperparameter() -> None:
  for case in CASES:
    assert set(_float_hyperparameters(case)) <= set(MEMBER_VALUES), case


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_stacked_hyperparameters_match_solo_runs(case: Case) -> None:
  """vmap over 3 members of ``inject_hyperparams(opt)`` with traced per-member values gives
  each member the updates of the unvmapped optimizer built with its values (float32)."""
  names = _float_hyperparameters(case)
  members = [{n: jnp.float32(MEMBER_VALUES[n][m]) for n in names} for m in range(3)]
  stacked = {n: jnp.stack([hp[n] for hp in members]) for n in names}
  fixed = {k: v for k, v in case.kwargs.items() if k not in names}
  make = optax.inject_hyperparams(alias.REGISTRY[case.name])
  params, grads = _small_problem()

  @jax.jit
  @jax.vmap
  def stacked_run(hps):
    return _run_updates(make(**fixed, **hps), params, grads, jit=False)[0]

  got = stacked_run(stacked)
  for m, hps in enumerate(members):
    want, _ = _run_updates(case.make(**{**fixed, **hps}), params, grads, jit=False)
    chex.assert_trees_all_close(jax.tree.map(lambda x, m=m: x[m], got), want, rtol=1e-6)


def test_traced_explicit_arguments_match_solo_runs() -> None:
  """The constructors themselves take traced values (no inject_hyperparams)."""
  params, grads = _small_problem()
  names = ("learning_rate", "b1", "b2", "eps")
  stacked = {n: jnp.asarray(MEMBER_VALUES[n], jnp.float32) for n in names}
  got = jax.jit(jax.vmap(lambda hps: _run_updates(alias.adam(**hps), params, grads,
                                                  jit=False)[0]))(stacked)
  for m in range(3):
    want, _ = _run_updates(alias.adam(**{n: v[m] for n, v in stacked.items()}), params, grads,
                           jit=False)
    chex.assert_trees_all_close(jax.tree.map(lambda x, m=m: x[m], got), want, rtol=1e-6)


def test_stacked_concrete_values_are_validated_before_tracing() -> None:
  """Every member of a concrete stacked value is checked; traced values are not compared."""
  with pytest.raises(ValueError, match=r"b1 must be in \[0.0, 1.0\)"):
    alias.adam(1e-3, b1=jnp.array([0.9, 1.5, 0.5]))
  with pytest.raises(ValueError, match="learning_rate"):
    alias.sgd(np.array([1e-2, -1e-2]))
  jax.jit(lambda b1: alias.adam(1e-3, b1=b1).init(jnp.zeros(2)))(jnp.float32(1.5))  # no check
