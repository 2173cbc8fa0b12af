"""Sophia: clipped second-order steps with a diagonal Hessian estimate (Liu et al. 2023).

The Hessian diagonal needs more than the gradient, so Sophia uses optax's extra-args
convention (as ``newton``/``bfgs`` in ``second_order.py``)::

    tx = optim.sophia(learning_rate=1e-4)          # Hutchinson estimator
    state = tx.init(params)
    loss, grads = jax.value_and_grad(loss_fn)(params, batch)
    updates, state = tx.update(grads, state, params,
                               value_fn=lambda p: loss_fn(p, batch), key=step_key)
    params = optax.apply_updates(params, updates)

Every ``update_period`` steps (steps 1, 1 + k, ...) the estimate is refreshed; on the other
steps ``value_fn``/``key`` are traced but unused (``lax.cond``). Instead of ``key`` a
caller may pass the probe itself (``probe=``, a tree like params), or a whole estimate
(``hessian_diag=``, which forces a refresh that step, as pytorch-optimizer's
``SophiaH.step(hessian=...)``). With ``estimator='gnb'`` (Gauss-Newton-Bartlett),
``value_fn(params, key)`` must return the mean loss over the batch with labels *sampled
from the model's own predictive distribution* (e.g. ``jax.random.categorical(key,
logits)``, held fixed under differentiation), and ``batch_size`` is the number of examples.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

from flaxopt import functional as F
from flaxopt.optim import _hparams as hp
from flaxopt.optim import transform

__all__ = ["ScaleBySophiaState", "scale_by_sophia", "sophia", "hutchinson_probe"]

_ESTIMATORS = ("hutchinson", "gnb")
_PROBES = ("rademacher", "gaussian")


class ScaleBySophiaState(NamedTuple):
  """Step count, gradient EMA ``m`` and Hessian-diagonal EMA ``h`` (param dtype)."""
  count: jax.Array
  momentum: Any
  hessian: Any


def hutchinson_probe(key: jax.Array, params: Any, distribution: str = "rademacher") -> Any:
  """A probe ``z`` shaped like ``params``: Rademacher (``F.rademacher_like``) or N(0, I)."""
  if distribution == "rademacher":
    return F.rademacher_like(key, params)
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(key, max(len(leaves), 1))
  return jax.tree.unflatten(treedef, [jax.random.normal(k, jnp.shape(x), jnp.result_type(x))
                                      for k, x in zip(keys, leaves)])


def _like_params(params: Any, tree: Any) -> Any:
  """``tree`` (a probe or an estimate) with ``params``' ``optax.MaskedNode`` leaves.

  Under ``optax.masked`` the params hold ``MaskedNode()`` in place of the masked-out leaves
  while extra args keep the full structure (unless ``mask_compatible_extra_args=True``);
  those leaves are dropped here, so the Hessian-vector product and the EMA see the params'
  structure. A tree already shaped like ``params`` is returned unchanged.
  """
  is_masked = lambda x: isinstance(x, optax.MaskedNode)
  return jax.tree.map(lambda p, z: p if is_masked(p) else z, params, tree, is_leaf=is_masked)


def _hvp(value_fn, params, v):
  """Hessian-vector product ``H v`` by forward-over-reverse differentiation."""
  return jax.jvp(jax.grad(value_fn), (params,), (v,))[1]


def scale_by_sophia(b1: Any = 0.96,
                    b2: Any = 0.99,
                    gamma: Any = 0.01,
                    eps: Any = 1e-12,
                    update_period: int = 10,
                    estimator: str = "hutchinson",
                    probe_distribution: str = "rademacher",
                    batch_size: Optional[int] = None,
                    weight_decay: Any = 0.0,
                    seed: int = 0) -> optax.GradientTransformationExtraArgs:
  r"""Sophia's direction ``clip(m / max(gamma h, eps), 1)`` (+ ``wd x``, decoupled).

  ``m_t = b1 m_{t-1} + (1 - b1) g_t``; every ``update_period`` steps (from the first)
  ``h_t = b2 h_{t-k} + (1 - b2) h_hat`` with ``h_hat = z * (H z)`` (Hutchinson, via
  ``F.hutchinson_diagonal_sample``; probe ``z`` Rademacher or Gaussian) or ``h_hat = B
  g_hat * g_hat`` (Gauss-Newton-Bartlett, ``g_hat`` the gradient of the loss on labels
  sampled from the model, ``B = batch_size``). Then ``u = clip(m / max(gamma h, eps),
  [-1, 1]) + wd x``; the alias multiplies by ``-lr``. No bias correction (as the paper).

  This is Algorithm 3 of the paper. pytorch-optimizer's ``SophiaH`` writes the same update
  as ``lr' clip(m / max(h, eps'), [-p, p])``: ours with ``learning_rate = lr' p``,
  ``gamma = p``, ``eps = p eps'`` (the trajectories match, ``tests/optim/test_modern_b.py``);
  its decay is decoupled, ``x (1 - lr' wd')``, i.e. ``wd = wd' / p`` here. Its probes are
  Gaussian (``probe_distribution='gaussian'``); ours default to Rademacher (the lower-
  variance Hutchinson probe). The authors' SophiaG code divides by ``gamma B h + 1e-15``
  instead of taking a max (a negative ``h`` flips the step). optax's ``contrib.sophia``
  bias-corrects ``m`` (``1 - b1^t``), and defaults to ``b1=0.965``, ``eps=1e-8``,
  ``weight_decay=1e-4``.

  Extra args of ``update``: ``value_fn`` (``params -> loss`` for Hutchinson,
  ``(params, key) -> loss on sampled labels`` for GNB), ``key``, or ``probe`` (a tree like
  params), or ``hessian_diag`` (a ready estimate; forces a refresh this step). Without
  ``key`` or ``probe`` the Hutchinson probe of update ``t`` is drawn from
  ``fold_in(PRNGKey(seed), t)``, so a caller that passes only ``value_fn`` (flaxopt's
  training loop) still gets a fresh, reproducible probe each refresh.

  Under ``optax.masked`` the params this transform sees hold ``optax.MaskedNode()`` in place
  of the masked-out leaves, and so does the tree ``value_fn`` is differentiated at: it must
  be a loss of the unmasked leaves (closing over the others). A ``probe`` or
  ``hessian_diag`` shaped like the full params is restricted to the unmasked leaves.

  Reference: Liu, Li, Hall, Liang & Ma, "Sophia: A Scalable Stochastic Second-order
  Optimizer for Language Model Pre-training", ICLR 2024 (arXiv:2305.14342), Algorithm 3.
  """
  hp.check_beta("b1", b1)
  hp.check_beta("b2", b2)
  hp.check_positive("gamma", gamma)
  hp.check_nonneg("eps", eps)
  hp.check_int("update_period", update_period, 1)
  hp.check_nonneg("weight_decay", weight_decay)
  hp.check_int("seed", seed, 0)
  if estimator not in _ESTIMATORS:
    raise ValueError(f"estimator must be one of {_ESTIMATORS}, got {estimator!r}.")
  if probe_distribution not in _PROBES:
    raise ValueError(f"probe_distribution must be one of {_PROBES}, got "
                     f"{probe_distribution!r}.")
  if estimator == "gnb":
    hp.check_int("batch_size", batch_size, 1)

  def init_fn(params):
    zeros = lambda: hp.tree_map(jnp.zeros_like, params)
    return ScaleBySophiaState(count=hp.count0(), momentum=zeros(), hessian=zeros())

  def estimate(params, value_fn, key, probe):
    if estimator == "gnb":
      g_hat = jax.grad(value_fn)(params, key)
      return jax.tree.map(lambda g: batch_size * g * g, g_hat)
    probe = (hutchinson_probe(key, params, probe_distribution) if probe is None
             else _like_params(params, probe))
    return F.hutchinson_diagonal_sample(lambda v: _hvp(value_fn, params, v), probe)

  def update_fn(updates, state, params=None, *, value_fn=None, key=None, probe=None,
                hessian_diag=None, **extra_args):
    del extra_args
    if params is None:
      raise ValueError("scale_by_sophia needs params (for the Hessian estimate and decay).")
    if hessian_diag is None:
      if value_fn is None:
        raise ValueError("scale_by_sophia needs value_fn= (and key= or probe=) in update, "
                         "or a ready hessian_diag=.")
      if key is None and estimator == "gnb":
        raise ValueError("scale_by_sophia(estimator='gnb') needs key= in update.")
      if key is None and probe is None:
        key = jax.random.fold_in(jax.random.PRNGKey(seed), state.count)
    count = hp.increment(state.count)
    refresh = (state.count % update_period) == 0

    def ema_h(h_hat):
      return jax.tree.map(lambda h, e: (b2 * h.astype(hp.compute_dtype(h))
                                        + (1 - b2) * e.astype(hp.compute_dtype(h))
                                        ).astype(h.dtype), state.hessian, h_hat)

    if hessian_diag is not None:
      hessian = ema_h(_like_params(params, hessian_diag))
    else:
      hessian = jax.lax.cond(
          refresh, lambda: ema_h(estimate(params, value_fn, key, probe)),
          lambda: state.hessian)

    def leaf(g, m, h, x):
      cd = hp.compute_dtype(g)
      m = (b1 * m.astype(cd) + (1 - b1) * g.astype(cd))
      u = jnp.clip(m / jnp.maximum(gamma * h.astype(cd), eps), -1.0, 1.0)
      u = u + weight_decay * x.astype(cd)
      return u.astype(g.dtype), m.astype(g.dtype)

    out = hp.tree_map(leaf, updates, state.momentum, hessian, params)
    u, m = hp.unzip(out, updates, 2)
    return u, ScaleBySophiaState(count=count, momentum=m, hessian=hessian)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def sophia(learning_rate: hp.ScalarOrSchedule,
           b1: Any = 0.96,
           b2: Any = 0.99,
           gamma: Any = 0.01,
           eps: Any = 1e-12,
           update_period: int = 10,
           estimator: str = "hutchinson",
           probe_distribution: str = "rademacher",
           batch_size: Optional[int] = None,
           weight_decay: Any = 0.0,
           seed: int = 0) -> optax.GradientTransformationExtraArgs:
  r"""Sophia: ``x <- x - lr (clip(m / max(gamma h, eps), 1) + wd x)``.

  ``chain(scale_by_sophia(...), scale_by_learning_rate(learning_rate))``, driven with the
  extra args of ``scale_by_sophia`` (``value_fn`` and ``key``). ``lr`` is the largest
  per-coordinate step (the clip bounds the direction by 1). See ``scale_by_sophia``.
  Reference: Liu et al. 2023, Algorithm 3.
  """
  hp.check_learning_rate(learning_rate)
  return optax.chain(
      scale_by_sophia(b1, b2, gamma, eps, update_period, estimator, probe_distribution,
                      batch_size, weight_decay, seed),
      transform.scale_by_learning_rate(learning_rate))
