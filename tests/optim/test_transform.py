"""The update rules of flaxopt.optim against independent NumPy transcriptions.

Each reference below is written from the paper or from torch.optim's documented
algorithm (not from our code), in float64, one parameter at a time. The JAX
optimizer runs in float64 (``jax.enable_x64``) on the same fixed gradient
sequence and must reproduce the parameter trajectory step by step.
"""

from __future__ import annotations

import math
from typing import Callable

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from flaxopt import optim

NUM_STEPS = 25
SHAPES = {"w": (3, 4), "b": (4,), "t": (2, 3, 5)}


# ---------------------------------------------------------------------------
# NumPy references: ref(x0, grads, **hyperparameters) -> [x_1, ..., x_T].
# ---------------------------------------------------------------------------


def ref_sgd(x, grads, lr):
  out = []
  for g in grads:
    x = x - lr * g
    out.append(x)
  return out


def ref_momentum(x, grads, lr, momentum=0.9, nesterov=False):
  # torch.optim.SGD: buf = g at step 1, then buf = mu * buf + g.
  out, buf = [], None
  for g in grads:
    buf = g.copy() if buf is None else momentum * buf + g
    step = g + momentum * buf if nesterov else buf
    x = x - lr * step
    out.append(x)
  return out


def ref_adagrad(x, grads, lr, initial_accumulator_value=0.0, eps=1e-10, eps_root=0.0):
  out, s = [], np.full_like(x, initial_accumulator_value)
  for g in grads:
    s = s + g * g
    x = x - lr * g / (np.sqrt(s + eps_root) + eps)
    out.append(x)
  return out


def ref_adadelta(x, grads, lr, rho=0.9, eps=1e-6):
  out, sq, acc = [], np.zeros_like(x), np.zeros_like(x)
  for g in grads:
    sq = rho * sq + (1 - rho) * g * g
    delta = np.sqrt(acc + eps) / np.sqrt(sq + eps) * g
    acc = rho * acc + (1 - rho) * delta * delta
    x = x - lr * delta
    out.append(x)
  return out


def ref_rmsprop(x, grads, lr, decay=0.99, eps=1e-8, eps_root=0.0, centered=False,
                momentum=None, bias_correction=False):
  out, sq, avg, buf = [], np.zeros_like(x), np.zeros_like(x), np.zeros_like(x)
  for t, g in enumerate(grads, start=1):
    sq = decay * sq + (1 - decay) * g * g
    avg = decay * avg + (1 - decay) * g
    c = 1 - decay**t if bias_correction else 1.0
    var = sq / c - (avg / c) ** 2 if centered else sq / c
    step = g / (np.sqrt(var + eps_root) + eps)
    if momentum is not None:
      buf = momentum * buf + step
      step = buf
    x = x - lr * step
    out.append(x)
  return out


def ref_adam(x, grads, lr, b1=0.9, b2=0.999, eps=1e-8, eps_root=0.0, bias_correction=True):
  # torch.optim.Adam: step_size = lr / bc1, denom = sqrt(v) / sqrt(bc2) + eps.
  out, m, v = [], np.zeros_like(x), np.zeros_like(x)
  for t, g in enumerate(grads, start=1):
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    bc1, bc2 = (1 - b1**t, 1 - b2**t) if bias_correction else (1.0, 1.0)
    x = x - (lr / bc1) * m / (np.sqrt(v / bc2 + eps_root) + eps)
    out.append(x)
  return out


def ref_adamax(x, grads, lr, b1=0.9, b2=0.999, eps=1e-8):
  # torch.optim.Adamax: exp_inf = max(b2 * exp_inf, |g| + eps).
  out, m, u = [], np.zeros_like(x), np.zeros_like(x)
  for t, g in enumerate(grads, start=1):
    m = b1 * m + (1 - b1) * g
    u = np.maximum(b2 * u, np.abs(g) + eps)
    x = x - lr / (1 - b1**t) * m / u
    out.append(x)
  return out


def ref_nadam(x, grads, lr, b1=0.9, b2=0.999, eps=1e-8, eps_root=0.0, momentum_decay=4e-3,
              constant_momentum=False):
  # torch.optim.NAdam (Dozat 2016 schedule).
  def mu_at(t):
    return b1 if constant_momentum else b1 * (1 - 0.5 * 0.96 ** (t * momentum_decay))

  out, m, v, mu_product = [], np.zeros_like(x), np.zeros_like(x), 1.0
  for t, g in enumerate(grads, start=1):
    mu, mu_next = mu_at(t), mu_at(t + 1)
    mu_product *= mu
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    denom = np.sqrt(v / (1 - b2**t) + eps_root) + eps
    x = x - lr * (1 - mu) / (1 - mu_product) * g / denom
    x = x - lr * mu_next / (1 - mu_product * mu_next) * m / denom
    out.append(x)
  return out


def ref_amsgrad(x, grads, lr, b1=0.9, b2=0.999, eps=1e-8, eps_root=0.0,
                correct_before_max=False):
  # torch.optim.Adam(amsgrad=True); correct_before_max: optax's max of v / bc2.
  out, m, v, vmax = [], np.zeros_like(x), np.zeros_like(x), np.zeros_like(x)
  for t, g in enumerate(grads, start=1):
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    bc2 = 1 - b2**t
    if correct_before_max:
      vmax = np.maximum(vmax, v / bc2)
      v_hat = vmax
    else:
      vmax = np.maximum(vmax, v)
      v_hat = vmax / bc2
    x = x - lr / (1 - b1**t) * m / (np.sqrt(v_hat + eps_root) + eps)
    out.append(x)
  return out


def ref_adafactor(x, grads, lr, decay_rate=0.8, clipping_threshold=1.0, beta1=None,
                  eps1=1e-30, eps2=1e-3, multiply_by_parameter_scale=True, relative_step=True,
                  factored=True):
  """Shazeer & Stern 2018, Algorithms 4/5, with the row/column *sums* R, C."""
  rms = lambda a: np.sqrt(np.mean(a * a))
  fac = factored and x.ndim >= 2
  r = np.zeros(x.shape[:-1]) if fac else None
  c = np.zeros(x.shape[:-2] + x.shape[-1:]) if fac else None
  v = np.zeros_like(x)
  m = np.zeros_like(x)
  out = []
  for t, g in enumerate(grads, start=1):
    rho = min(lr, 1 / math.sqrt(t)) if relative_step else lr
    alpha = max(eps2, rms(x)) if multiply_by_parameter_scale else 1.0
    beta2 = 1 - t ** (-decay_rate)
    g2 = g * g + eps1
    if fac:
      r = beta2 * r + (1 - beta2) * g2.sum(-1)
      c = beta2 * c + (1 - beta2) * g2.sum(-2)
      v_hat = r[..., :, None] * c[..., None, :] / r.sum(-1)[..., None, None]
    else:
      v = beta2 * v + (1 - beta2) * g2
      v_hat = v
    u = g / np.sqrt(v_hat)
    if clipping_threshold is not None:
      u = u / max(1.0, rms(u) / clipping_threshold)
    u = alpha * u
    if beta1 is not None:  # Our documented choice: average before rho_t.
      m = beta1 * m + (1 - beta1) * u
      u = m
    x = x - rho * u
    out.append(x)
  return out


# name, kwargs (learning_rate included), reference.
REFERENCE_CASES = [
    ("sgd", dict(learning_rate=0.1), ref_sgd),
    ("momentum", dict(learning_rate=0.1, momentum=0.9), ref_momentum),
    ("nesterov", dict(learning_rate=0.1, momentum=0.8),
     lambda x, g, lr, momentum: ref_momentum(x, g, lr, momentum, nesterov=True)),
    ("adagrad", dict(learning_rate=0.1), ref_adagrad),
    ("adagrad", dict(learning_rate=0.1, initial_accumulator_value=0.1, eps=0.1, eps_root=0.01),
     ref_adagrad),
    ("adadelta", dict(learning_rate=1.0), ref_adadelta),
    ("adadelta", dict(learning_rate=0.5, rho=0.5, eps=1e-2), ref_adadelta),
    ("rmsprop", dict(learning_rate=0.01), ref_rmsprop),
    ("rmsprop", dict(learning_rate=0.01, decay=0.9, eps=0.1, centered=True, momentum=0.9),
     ref_rmsprop),
    ("rmsprop", dict(learning_rate=0.01, decay=0.8, eps=1e-3, eps_root=0.01,
                     bias_correction=True, centered=True), ref_rmsprop),
    ("adam", dict(learning_rate=0.01), ref_adam),
    ("adam", dict(learning_rate=0.01, b1=0.5, b2=0.8, eps=0.1, eps_root=0.01), ref_adam),
    ("adam", dict(learning_rate=0.01, eps=0.1, bias_correction=False), ref_adam),
    ("adamax", dict(learning_rate=0.01), ref_adamax),
    ("adamax", dict(learning_rate=0.01, b1=0.5, b2=0.8, eps=0.1), ref_adamax),
    ("nadam", dict(learning_rate=0.01), ref_nadam),
    ("nadam", dict(learning_rate=0.01, b2=0.9, eps=0.1, momentum_decay=0.1), ref_nadam),
    ("nadam", dict(learning_rate=0.01, constant_momentum=True), ref_nadam),
    ("amsgrad", dict(learning_rate=0.01, b2=0.5), ref_amsgrad),
    ("amsgrad", dict(learning_rate=0.01, b2=0.5, eps=0.1, correct_before_max=True), ref_amsgrad),
    ("adafactor", dict(learning_rate=1e-2), ref_adafactor),
    ("adafactor", dict(learning_rate=0.1, beta1=0.9, clipping_threshold=0.5, eps2=0.5,
                       relative_step=False, decay_rate=0.5), ref_adafactor),
    ("adafactor", dict(learning_rate=0.3, factored=False), ref_adafactor),
    ("adafactor", dict(learning_rate=0.3, multiply_by_parameter_scale=False,
                       clipping_threshold=None), ref_adafactor),
]


def _gradient_sequence() -> list[dict[str, np.ndarray]]:
  """Fixed gradients whose scale changes by 100x, so max/EMA branches switch."""
  rng = np.random.default_rng(0)
  scales = [10.0 ** (t % 3 - 1) for t in range(NUM_STEPS)]
  return [{k: s * rng.normal(size=shape) for k, shape in SHAPES.items()} for s in scales]


def _x0() -> dict[str, np.ndarray]:
  rng = np.random.default_rng(1)
  return {k: rng.normal(size=shape) for k, shape in SHAPES.items()}


@pytest.mark.parametrize(
    "name,kwargs,ref", REFERENCE_CASES,
    ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(REFERENCE_CASES)])
def test_matches_numpy_reference(name: str, kwargs: dict, ref: Callable) -> None:
  grads, x0 = _gradient_sequence(), _x0()
  ref_kwargs = {("lr" if k == "learning_rate" else k): v for k, v in kwargs.items()}
  expected = {k: ref(x0[k], [g[k] for g in grads], **ref_kwargs) for k in SHAPES}
  with jax.enable_x64(True):
    tx = optim.REGISTRY[name](**kwargs)
    params = jax.tree.map(jnp.asarray, x0)
    state = tx.init(params)
    for t, g in enumerate(grads):  # Eager: op-by-op dispatch, no compile of the step.
      updates, state = tx.update(jax.tree.map(jnp.asarray, g), state, params)
      params = optax.apply_updates(params, updates)
      chex.assert_trees_all_close(
          params, {k: expected[k][t] for k in SHAPES}, rtol=1e-10, atol=1e-12,
          custom_message=f"{name} {kwargs} differs from the reference at step {t + 1}")


# ---------------------------------------------------------------------------
# Reddi, Kale & Kumar 2018, Theorem 1: Adam converges to the worst point.
# ---------------------------------------------------------------------------


def _online_problem_final_x(tx: optax.GradientTransformation, num_steps: int) -> float:
  """f_t(x) = 3x if t mod 3 == 1 else -x on [-1, 1] (optimum -1), projected by clipping."""

  @jax.jit
  def run(x):
    def body(t, carry):
      x, state = carry
      g = jnp.where(t % 3 == 1, 3.0, -1.0) * jnp.ones_like(x)
      updates, state = tx.update(g, state, x)
      return jnp.clip(optax.apply_updates(x, updates), -1.0, 1.0), state
    return jax.lax.fori_loop(1, num_steps + 1, body, (x, tx.init(x)))[0]

  return float(run(jnp.zeros([]))[()])


def test_reddi_theorem1_adam_fails_amsgrad_converges() -> None:
  # C = 3 and beta2 = 1 / (1 + C^2) = 0.1 are the theorem's setting; beta1 = 0,
  # step alpha / sqrt(t) with alpha = 0.5. Bias correction (torch's form) kept.
  lr = lambda count: 0.5 / jnp.sqrt(count + 1.0)
  adam_x = _online_problem_final_x(optim.adam(lr, b1=0.0, b2=0.1), 3000)
  amsgrad_x = _online_problem_final_x(optim.amsgrad(lr, b1=0.0, b2=0.1), 3000)
  assert adam_x > 0.9, adam_x
  assert amsgrad_x < -0.9, amsgrad_x
  # Control: with the usual beta2 = 0.999 Adam does find the optimum here.
  assert _online_problem_final_x(optim.adam(lr, b1=0.0, b2=0.999), 3000) < -0.9


# ---------------------------------------------------------------------------
# Adafactor specifics.
# ---------------------------------------------------------------------------


def test_adafactor_state_is_n_plus_m_for_a_matrix() -> None:
  n, m = 64, 48
  state = optim.scale_by_adafactor().init({"w": jnp.zeros((n, m))})
  chex.assert_shape(state.v_row["w"], (n,))
  chex.assert_shape(state.v_col["w"], (m,))
  sizes = [x.size for x in jax.tree.leaves(state)]
  assert sum(s for s in sizes if s > 1) == n + m
  assert all(s == 1 for s in sizes if s <= 1)  # count and 0-d placeholders only
  # Unfactored (vector) leaves keep a full second moment.
  state = optim.scale_by_adafactor().init({"b": jnp.zeros((m,))})
  assert sum(x.size for x in jax.tree.leaves(state)) == m + 3


def _factored_vs_full(grad_seq) -> tuple[list, list]:
  outs = []
  for factored in (True, False):
    tx = optim.scale_by_adafactor(eps1=0.0, clipping_threshold=None,
                                  multiply_by_parameter_scale=False, factored=factored)
    state = tx.init(grad_seq[0])
    upd = []
    for g in grad_seq:
      u, state = tx.update(g, state)
      upd.append(u)
    outs.append(upd)
  return outs[0], outs[1]


def test_adafactor_factored_equals_full_second_moment_for_rank_one() -> None:
  a, b = jnp.array([0.5, -1.0, 2.0]), jnp.array([1.0, 3.0, -0.5, 0.25])
  rank_one = [s * jnp.outer(a, b) for s in (1.0, -2.0, 0.3, 5.0)]
  factored, full = _factored_vs_full(rank_one)
  chex.assert_trees_all_close(factored, full, rtol=1e-5)
  # Negative control: a rank-two gradient square is not reproduced.
  rank_two = [g + jnp.outer(b[:3], jnp.append(a, 1.0)) for g in rank_one]
  factored, full = _factored_vs_full(rank_two)
  assert not np.allclose(factored[-1], full[-1], rtol=1e-2)


def test_adafactor_needs_params_for_parameter_scale() -> None:
  tx = optim.scale_by_adafactor()
  state = tx.init(jnp.zeros((2, 2)))
  with pytest.raises(ValueError, match="params"):
    tx.update(jnp.ones((2, 2)), state)
