"""Issue 17 part A: adamw, radam, lion, lamb, lars, adopt, ademamix, schedule-free SGD/AdamW,
lookahead, sam.

1. Float64 trajectories (30 steps, a (4, 3) matrix and a (3,) bias on a least-squares loss)
   against the reference implementations, recorded by ``references/generate_a.py`` into
   ``references/a_<name>.npz`` (always), and run live when torch and the reference packages
   are importable (skipped otherwise). Tolerances: ``REFERENCE_RTOL`` (1e-8 unless stated).
2. Lookahead and SAM against float64 NumPy transcriptions of the papers' algorithms.
3. Schedule-free's evaluation point and BatchNorm recomputation, the wrappers' degenerate
   settings, agreement with optax where conventions match. The shared properties
   (convergence, dtypes, one compilation, inject_hyperparams under vmap, bad hyperparameters)
   run over the one table of ``tests/optim/properties.py`` (test_properties.py).
"""

from __future__ import annotations

import importlib.util
import json
import pathlib

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from flaxopt import optim
from flaxopt import registry
import flaxopt.nn as fnn
from tests.optim import properties as props

REFERENCES = pathlib.Path(__file__).resolve().parent / "references"
PART_A = ("adamw", "radam", "lion", "lamb", "lars", "adopt", "ademamix", "schedule_free_sgd",
          "schedule_free_adamw", "lookahead", "sam")

# Per-optimizer tolerance against the recorded reference (relative, plus atol = rtol * 1e-3).
REFERENCE_RTOL = {name: 1e-8 for name in PART_A}
# pytorch-optimizer's SAM takes the global gradient norm in float32 even for float64
# parameters (utils/gradient.py: get_global_gradient_norm returns a float32 tensor), so the
# perturbation radius carries a ~6e-8 relative rounding that grows to ~5e-7 over 30 steps.
# The float64 NumPy transcription below checks SAM to 1e-10.
REFERENCE_RTOL["sam"] = 2e-6


def _reference_meta(name: str) -> dict:
  with np.load(REFERENCES / f"a_{name}.npz") as z:
    return json.loads(str(z["meta"]))


def _least_squares(data):
  x, y = jnp.asarray(data["X"]), jnp.asarray(data["Y"])

  def loss(p):
    r = x @ p["w"] + p["b"] - y
    return 0.5 * jnp.mean(jnp.sum(r * r, axis=-1))

  def grad(p):
    r = x @ p["w"] + p["b"] - y
    return {"w": x.T @ r / x.shape[0], "b": r.sum(axis=0) / x.shape[0]}

  return loss, grad


def _our_trajectories(specs: dict[str, tuple[str, dict]], data, steps: int
                      ) -> dict[str, dict[str, np.ndarray]]:
  """flaxopt's float64 trajectories (y, and x for schedule-free), all cases in one jit.

  ``specs``: case -> (registry name, kwargs). One compilation per optimizer, not per case.
  """
  loss, grad = _least_squares(data)
  p0 = {"w": jnp.asarray(data["w0"]), "b": jnp.asarray(data["b0"])}
  txs = {case: optax.with_extra_args_support(registry.get("optimizer", name, **kwargs))
         for case, (name, kwargs) in specs.items()}

  def one(tx, schedule_free, p0):
    def body(carry, _):
      p, s = carry
      u, s = tx.update(grad(p), s, p, value_fn=loss)
      p = optax.apply_updates(p, u)
      x = optim.schedule_free_eval_params(p, s) if schedule_free else p
      return (p, s), (p, x)
    (_, state), (ps, xs) = jax.lax.scan(body, (p0, tx.init(p0)), None, length=steps)
    cat = lambda first, rest: jax.tree.map(lambda a, b: jnp.concatenate([a[None], b]),
                                           first, rest)
    return cat(p0, ps), cat(p0, xs), state

  run = jax.jit(lambda p0: {case: one(tx, specs[case][0].startswith("schedule_free"), p0)
                            for case, tx in txs.items()})
  out = {}
  for case, (ps, xs, state) in run(p0).items():
    # float64 in, float64 out: updates and every parameter-shaped state array.
    assert ps["w"].dtype == xs["w"].dtype == jnp.float64
    assert all(x.dtype == jnp.float64 for x in jax.tree.leaves(state) if x.ndim > 0)
    out[case] = {"w": np.asarray(ps["w"]), "b": np.asarray(ps["b"])}
    if specs[case][0].startswith("schedule_free"):
      out[case].update(x_w=np.asarray(xs["w"]), x_b=np.asarray(xs["b"]))
  return out


def _our_trajectory(name: str, kwargs: dict, data, steps: int) -> dict[str, np.ndarray]:
  return _our_trajectories({"case": (name, kwargs)}, data, steps)["case"]


def _compare(ours: dict, ref: dict, rtol: float, case: str) -> None:
  for key in ref:
    np.testing.assert_allclose(ours[key], ref[key], rtol=rtol, atol=rtol * 1e-3,
                               err_msg=f"{case}: {key}")


@pytest.mark.parametrize("name", PART_A)
def test_matches_recorded_reference(name: str) -> None:
  with np.load(REFERENCES / f"a_{name}.npz") as z:
    arrays = {k: z[k] for k in z.files}
  meta = json.loads(str(arrays["meta"]))
  assert {"torch", "pytorch_optimizer", "schedulefree", "lion-pytorch"} <= set(
      meta["versions"])
  assert meta["steps"] >= 25 and len(meta["cases"]) >= 2
  specs = {case: (c["name"], c["kwargs"]) for case, c in meta["cases"].items()}
  with jax.enable_x64(True):
    ours = _our_trajectories(specs, arrays, meta["steps"])
  for case in specs:
    ref = {k.split("__", 1)[1]: v for k, v in arrays.items() if k.startswith(f"{case}__")}
    assert ref["w"].shape == (meta["steps"] + 1, 4, 3)
    # The reference moved: the test is not comparing two copies of the start.
    assert np.max(np.abs(ref["w"][-1] - ref["w"][0])) > 0.05, case
    _compare(ours[case], ref, REFERENCE_RTOL[name], case)


def _reference_packages_available() -> bool:
  return all(importlib.util.find_spec(m) is not None
             for m in ("torch", "lion_pytorch", "schedulefree", "pytorch_optimizer"))


@pytest.mark.skipif(not _reference_packages_available(),
                    reason="torch / lion-pytorch / schedulefree / pytorch-optimizer not installed")
@pytest.mark.parametrize("name", PART_A)
def test_matches_live_reference(name: str) -> None:
  import torch  # pylint: disable=g-import-not-at-top
  from tests.optim.references import generate_a  # pylint: disable=g-import-not-at-top
  torch.set_default_dtype(torch.float64)
  cases = generate_a._cases()[name]  # pylint: disable=protected-access
  specs = {case: (n, kwargs) for case, (n, kwargs, _) in cases.items()}
  with jax.enable_x64(True):
    ours = _our_trajectories(specs, generate_a.problem(), generate_a.STEPS)
  for case in cases:
    _compare(ours[case], generate_a.reference_trajectory(name, case), REFERENCE_RTOL[name],
             case)


# ----------------------------------------------------------------------------
# Lookahead and SAM against NumPy transcriptions of the papers' algorithms.
# ----------------------------------------------------------------------------


def _np_problem():
  rng = np.random.default_rng(3)
  data = {"X": rng.normal(size=(12, 4)), "Y": rng.normal(size=(12, 3)),
          "w0": rng.normal(size=(4, 3)), "b0": rng.normal(size=3)}

  def grad(w, b):
    r = data["X"] @ w + b - data["Y"]
    return data["X"].T @ r / 12, r.sum(0) / 12

  return data, grad


def _np_lookahead(data, grad, lr, mu, k, alpha, steps):
  """Zhang et al. 2019, Algorithm 1, with heavy-ball SGD (v = mu v + g) as the inner A."""
  theta = [data["w0"].copy(), data["b0"].copy()]
  phi = [t.copy() for t in theta]
  v = [np.zeros_like(t) for t in theta]
  out = [[t.copy() for t in theta]]
  for t in range(1, steps + 1):
    g = grad(*theta)
    v = [mu * vi + gi for vi, gi in zip(v, g)]
    theta = [th - lr * vi for th, vi in zip(theta, v)]
    if t % k == 0:
      phi = [p + alpha * (th - p) for p, th in zip(phi, theta)]
      theta = [p.copy() for p in phi]
    out.append([th.copy() for th in theta])
  return out


def _np_sam(data, grad, lr, rho, steps, adaptive=False):
  """Foret et al. 2021, Algorithm 1 (p = 2) with SGD; ASAM (Kwon et al. 2021) if adaptive."""
  w = [data["w0"].copy(), data["b0"].copy()]
  out = [[x.copy() for x in w]]
  for _ in range(steps):
    g = grad(*w)
    scaled = [gi * np.abs(wi) for gi, wi in zip(g, w)] if adaptive else g
    norm = np.sqrt(sum(np.sum(s * s) for s in scaled))
    e = [rho * (wi ** 2 if adaptive else 1.0) * gi / (norm + 1e-12) for gi, wi in zip(g, w)]
    g_sam = grad(*[wi + ei for wi, ei in zip(w, e)])
    w = [wi - lr * gi for wi, gi in zip(w, g_sam)]
    out.append([x.copy() for x in w])
  return out


@pytest.mark.parametrize("which", ["lookahead", "sam", "asam"])
def test_wrappers_match_numpy_transcription(which: str) -> None:
  data, np_grad = _np_problem()
  steps = 25
  if which == "lookahead":
    want = _np_lookahead(data, np_grad, lr=0.05, mu=0.9, k=4, alpha=0.6, steps=steps)
    kwargs = dict(learning_rate=0.05, base="momentum", momentum=0.9, sync_period=4,
                  alpha=0.6)
    name = "lookahead"
  else:
    adaptive = which == "asam"
    want = _np_sam(data, np_grad, lr=0.1, rho=0.5 if adaptive else 0.05, steps=steps,
                   adaptive=adaptive)
    kwargs = dict(learning_rate=0.1, base="sgd", rho=0.5 if adaptive else 0.05,
                  adaptive=adaptive)
    name = "sam"
  with jax.enable_x64(True):
    ours = _our_trajectory(name, kwargs, data, steps)
  np.testing.assert_allclose(ours["w"], np.stack([s[0] for s in want]), rtol=1e-10,
                             atol=1e-13)
  np.testing.assert_allclose(ours["b"], np.stack([s[1] for s in want]), rtol=1e-10,
                             atol=1e-13)
  assert np.max(np.abs(ours["w"][-1] - ours["w"][0])) > 0.05


# ----------------------------------------------------------------------------
# Helpers for the optimizer-specific checks below.
# ----------------------------------------------------------------------------


def _update(tx, g, state, params, objective):
  return optax.with_extra_args_support(tx).update(g, state, params, value_fn=objective)


def _trajectories(txs, params, grad_fn, steps, objective=None):
  """Iterates ``grad_fn(params, t)`` for each transform in ``txs``, all in one jitted scan.

  Returns, per transform, the stacked parameters after each step and the final state.
  """
  def one(tx, params):
    def body(carry, t):
      p, state = carry
      u, state = _update(tx, grad_fn(p, t), state, p, objective)
      p = optax.apply_updates(p, u)
      return (p, state), p
    (_, state), ps = jax.lax.scan(body, (params, tx.init(params)), jnp.arange(steps))
    return ps, state
  return jax.jit(lambda params: [one(tx, params) for tx in txs])(params)


def _wavy_grads(p, t):
  """Fixed, parameter-dependent gradients whose scale changes 100x with t."""
  return jax.tree.map(lambda x: jnp.sin(3.0 * x + t) * 10.0 ** (t % 3 - 1), p)


def test_reference_files_cover_part_a_and_the_shared_table() -> None:
  """Every part-A optimizer has recorded cases and a row in tests/optim/properties.py."""
  assert {c.name for c in props.CASES if c.family == "a"} == set(PART_A)
  assert set(PART_A) <= set(registry.names("optimizer"))
  assert all(_reference_meta(name)["cases"] for name in PART_A)


def _small_loss(params):
  return sum(jnp.sum(jnp.square(p.astype(jnp.float32) + 0.3)) for p in jax.tree.leaves(params))


def test_schedule_free_rejects_a_decaying_schedule() -> None:
  for ctor in (optim.schedule_free_sgd, optim.schedule_free_adamw):
    with pytest.raises(ValueError, match="learning_rate.*decays"):
      ctor(learning_rate=optax.cosine_decay_schedule(1e-2, 1000))
    with pytest.raises(ValueError, match="learning_rate.*decays"):
      ctor(learning_rate=optax.exponential_decay(1e-2, 100, 0.5))
    ctor(learning_rate=optax.linear_schedule(0.0, 1e-2, 100))  # Warmup only: fine.


def test_sam_needs_value_fn() -> None:
  params, grads = props.small_problem(jnp.float32)
  tx = optim.sam(optim.sgd(0.1))
  with pytest.raises(ValueError, match="value_fn"):
    tx.update(grads[0], tx.init(params), params)


# ----------------------------------------------------------------------------
# Schedule-free: evaluation point, schedules, BatchNorm statistics, optax.
# ----------------------------------------------------------------------------


def test_schedule_free_eval_params_is_the_running_average() -> None:
  """With r = 0 and weight_lr_power = 0 (equal weights) x is the mean of z_1..z_t."""
  with jax.enable_x64(True):
    params, _ = props.small_problem(jnp.float64)
    tx = optax.chain(optax.clip_by_global_norm(10.0),
                     optim.schedule_free_sgd(0.1, b1=0.7, weight_lr_power=0.0))

    @jax.jit
    def run(params):
      def body(carry, t):
        p, state = carry
        u, state = tx.update(jax.tree.map(lambda x: jnp.cos(x * (t + 1)), p), state, p)
        p = optax.apply_updates(p, u)
        return (p, state), state[1].z
      (p, state), zs = jax.lax.scan(body, (params, tx.init(params)), jnp.arange(6.0))
      return p, state, zs

    params, state, zs = run(params)
    x = optim.schedule_free_eval_params(params, state)
    want = jax.tree.map(lambda z: z.mean(axis=0), zs)  # c_1 = 1: x_1 = z_1, then means.
    chex.assert_trees_all_close(x, want, rtol=1e-12)
    # y = (1 - b1) z + b1 x.
    chex.assert_trees_all_close(params, jax.tree.map(lambda z, x: 0.3 * z + 0.7 * x,
                                                     state[1].z, x), rtol=1e-12)
    with pytest.raises(ValueError, match="ScheduleFreeState"):
      optim.schedule_free_eval_params(params, optim.adam(1e-3).init(params))


def test_schedule_free_constant_schedule_equals_float_and_injection_finds_state() -> None:
  params, grads = props.small_problem(jnp.float32)
  plain = optim.schedule_free_adamw(1e-2, warmup_steps=2)
  sched = optim.schedule_free_adamw(optax.constant_schedule(1e-2), warmup_steps=2)
  injected = optax.inject_hyperparams(optim.schedule_free_adamw,
                                      static_args=("warmup_steps",))(1e-2, warmup_steps=2)
  results = []
  for tx in (plain, sched, injected):
    p, s = params, tx.init(params)
    for g in grads:
      u, s = tx.update(g, s, p)
      p = optax.apply_updates(p, u)
    results.append((p, optim.schedule_free_eval_params(p, s)))
  for p, x in results[1:]:
    chex.assert_trees_all_close(p, results[0][0], rtol=1e-6)
    chex.assert_trees_all_close(x, results[0][1], rtol=1e-6)


def test_schedule_free_adamw_agrees_with_optax_contrib() -> None:
  """Without warmup (and r = 0) optax.contrib.schedule_free_adamw gives the same y and x.

  With warmup optax's base step reads its schedule at count t - 1 while its averaging
  weights read it at t (its z steps lag one warmup increment behind schedulefree's); the
  last assertion shows that this documented difference is real.
  """
  with jax.enable_x64(True):
    params, _ = props.small_problem(jnp.float64)

    def run(ours, theirs):
      (p1, s1), (p2, s2) = _trajectories([ours, theirs], params, _wavy_grads, 8)
      return jax.tree.map(lambda a: a[-1], p1), s1, jax.tree.map(lambda a: a[-1], p2), s2

    p1, s1, p2, s2 = run(optim.schedule_free_adamw(1e-2, b1=0.9, weight_decay=0.01),
                         optax.contrib.schedule_free_adamw(1e-2, b1=0.9, weight_decay=0.01))
    chex.assert_trees_all_close(p1, p2, rtol=1e-10)
    chex.assert_trees_all_close(optim.schedule_free_eval_params(p1, s1),
                                optax.contrib.schedule_free_eval_params(s2, p2), rtol=1e-10)
    p1, _, p2, _ = run(optim.schedule_free_adamw(1e-2, warmup_steps=3),
                       optax.contrib.schedule_free_adamw(1e-2, warmup_steps=3))
    assert not np.allclose(p1["w"], p2["w"], rtol=1e-4)


class _BNNet(nn.Module):
  @nn.compact
  def __call__(self, x, train: bool):
    h = nn.Dense(5, name="dense")(x)
    h = fnn.BatchNorm(momentum=0.9, name="bn")(h, use_running_average=not train)
    return nn.Dense(2)(nn.relu(h))


def test_recompute_batch_stats_is_the_mean_of_batch_statistics() -> None:
  """Stale statistics are ignored; float64 to 1e-10, float32 to 1e-4 (the 1 - m rounding)."""
  model = _BNNet()
  xs = np.random.default_rng(0).normal(size=(3, 8, 4))  # 3 batches of 8.
  variables = jax.jit(lambda x: model.init(jax.random.key(1), x, train=False))(
      jnp.asarray(xs[0], jnp.float32))

  def stats_fn(params, batch_stats, batch):
    _, new = model.apply({"params": params, "batch_stats": batch_stats}, batch, train=True,
                         mutable=["batch_stats"])
    return new["batch_stats"]

  recompute = jax.jit(optim.recompute_batch_stats, static_argnums=0)
  for dtype, rtol in ((jnp.float64, 1e-10), (jnp.float32, 1e-4)):
    with jax.enable_x64(dtype == jnp.float64):
      cast = lambda t, dtype=dtype: jax.tree.map(lambda v: jnp.asarray(v, dtype), t)
      params = cast(variables["params"])
      # Stale statistics (as after training at y): they must not leak into the result.
      stale = cast(jax.tree.map(lambda s: s + 3.0, variables["batch_stats"]))
      got = recompute(stats_fn, params, stale, jnp.asarray(xs, dtype))
      dense = jax.tree.map(lambda v: np.asarray(v, np.float64), params["dense"])
      h = xs @ dense["kernel"] + dense["bias"]
      np.testing.assert_allclose(got["bn"]["mean"], h.mean(axis=1).mean(axis=0), rtol=rtol)
      np.testing.assert_allclose(got["bn"]["var"], h.var(axis=1).mean(axis=0), rtol=rtol)
      assert got["bn"]["mean"].dtype == dtype


# ----------------------------------------------------------------------------
# Wrappers: degenerate settings, and optax where conventions match.
# ----------------------------------------------------------------------------


def test_wrappers_reduce_to_the_inner_optimizer() -> None:
  """Lookahead with alpha = 1 and SAM with rho = 0 are the inner optimizer."""
  params, _ = props.small_problem(jnp.float32)
  inner = optim.adam(1e-2)
  txs = [inner, optim.lookahead(inner, sync_period=2, alpha=1.0), optim.sam(inner, rho=0.0)]
  (want, _), *wrapped = _trajectories(txs, params, lambda p, t: jax.grad(_small_loss)(p), 5,
                                      _small_loss)
  for got, _ in wrapped:
    chex.assert_trees_all_close(got, want, rtol=1e-6)


def test_lookahead_parameters_equal_slow_weights_after_sync() -> None:
  params, grads = props.small_problem(jnp.float32)
  tx = optim.lookahead(optim.sgd(0.1), sync_period=3, alpha=0.5)
  state = tx.init(params)
  for t, g in enumerate(grads * 2, start=1):
    u, state = tx.update(g, state, params)
    params = optax.apply_updates(params, u)
    if t % 3 == 0:
      chex.assert_trees_all_close(params, state.slow, rtol=1e-6)
      assert int(state.count) == 0


OPTAX_AGREEMENT = [
    ("adamw", dict(learning_rate=1e-2, weight_decay=0.1), optax.adamw(1e-2, weight_decay=0.1)),
    ("lion", dict(learning_rate=1e-2, weight_decay=0.1), optax.lion(1e-2, weight_decay=0.1)),
    ("radam", dict(learning_rate=1e-2, eps=0.0), optax.radam(1e-2, eps=0.0)),
    ("ademamix", dict(learning_rate=1e-2, weight_decay=0.1),
     optax.contrib.ademamix(1e-2, b3=0.9999, alpha=5.0, weight_decay=0.1)),
]


@pytest.mark.parametrize("name,kwargs,reference", OPTAX_AGREEMENT,
                         ids=[n for n, _, _ in OPTAX_AGREEMENT])
def test_agrees_with_optax_where_conventions_match(name, kwargs, reference) -> None:
  with jax.enable_x64(True):
    params, _ = props.small_problem(jnp.float64)
    (got, _), (want, _) = _trajectories([registry.get("optimizer", name, **kwargs), reference],
                                        params, _wavy_grads, 12)
    chex.assert_trees_all_close(got, want, rtol=1e-10, atol=1e-14)


def test_defaults_differ_from_optax_where_documented() -> None:
  """RAdam's eps placement and LAMB's variant are real differences from optax."""
  with jax.enable_x64(True):
    params, _ = props.small_problem(jnp.float64)
    small = lambda p, t: jax.tree.map(lambda x: 1e-3 * jnp.sin(3.0 * x + t), p)
    txs = [optim.radam(1e-2, eps=1e-3), optax.radam(1e-2, eps=1e-3), optim.lamb(1e-2),
           optax.lamb(1e-2)]
    finals = [ps["w"][-1] for ps, _ in _trajectories(txs, params, small, 12)]
    for got, want in (finals[:2], finals[2:]):
      assert not np.allclose(got, want, rtol=1e-4)
