"""Matrix-preconditioned optimizers: Muon, Shampoo (with grafting) and SOAP.

Each works on matrices: a leaf of shape ``(*lead, fan_out)`` (flax's Dense kernel is
``(fan_in, fan_out)``, a conv kernel ``(*window, in, out)``) is viewed as the matrix
``(prod(lead), fan_out)``, the layout in which ``fan_in`` counts rows. Where a reference
implementation uses PyTorch's ``(out, in)`` layout, the docstring says how the two map.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np
import optax

from flaxopt.optim import _hparams as hp
from flaxopt.optim import modern_common
from flaxopt.optim import transform

__all__ = [
    "MUON_NS_COEFFICIENTS",
    "ScaleByMuonState",
    "newton_schulz",
    "matrix_mask",
    "scale_by_muon",
    "muon",
    "ScaleByShampooState",
    "matrix_inverse_root",
    "scale_by_shampoo",
    "shampoo",
    "ScaleBySoapState",
    "scale_by_soap",
    "soap",
]

# Jordan et al. 2024's quintic coefficients (a, b, c), as torch.optim.Muon and optax.
MUON_NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def _as_matrix(x: jax.Array) -> jax.Array:
  """``(*lead, n) -> (prod(lead), n)``: conv kernels ``(*window, in, out)`` -> ``(fan_in, out)``."""
  return x.reshape(-1, x.shape[-1])


def _leaf_name(path) -> str:
  return jax.tree_util.keystr(path) or "<root>"


def _check_matrices(params: Any, who: str) -> None:
  """ValueError naming the first leaf with fewer than 2 dimensions."""
  for path, x in jax.tree_util.tree_flatten_with_path(params)[0]:
    if x is not None and jnp.ndim(x) < 2:
      raise ValueError(
          f"{who} needs matrix leaves (ndim >= 2), got leaf {_leaf_name(path)} with shape "
          f"{tuple(jnp.shape(x))}; pass mask= (e.g. mask='matrices') to hand non-matrix "
          "leaves to AdamW.")


def matrix_mask(params: Any) -> Any:
  """``True`` for leaves with ``ndim >= 2`` (kernels), ``False`` otherwise (biases, scales)."""
  return jax.tree.map(lambda x: jnp.ndim(x) >= 2, params)


# ----------------------------------------------------------------------------
# Muon (Jordan et al. 2024).
# ----------------------------------------------------------------------------


def newton_schulz(g: jax.Array, coefficients: Sequence[float] = MUON_NS_COEFFICIENTS,
                  steps: int = 5, eps: float = 1e-7) -> jax.Array:
  r"""Approximate orthogonalization ``U V^T`` of ``G = U S V^T`` by a quintic Newton-Schulz.

  ``X_0 = G / max(||G||_F, eps)`` (taken as the wide orientation, rows <= columns), then
  ``steps`` times ``A = X X^T``, ``X <- a X + (b A + c A A) X`` with
  ``(a, b, c) = coefficients``. The default coefficients do not converge to the exact
  polar factor: singular values land in roughly [0.7, 1.2] (Jordan et al. 2024).

  Same iteration as ``torch.optim.Muon``'s ``_zeropower_via_newtonschulz`` except that
  torch casts to bfloat16 first; here it runs in the input dtype (float32 for bfloat16
  inputs). optax divides by ``||G||_F + eps`` instead of ``max(||G||_F, eps)``.
  """
  a, b, c = coefficients
  x = g.astype(hp.compute_dtype(g))
  wide = x.shape[0] <= x.shape[1]
  if not wide:
    x = x.T
  x = x / jnp.maximum(jnp.linalg.norm(x), eps)
  for _ in range(steps):
    gram = x @ x.T
    x = a * x + (b * gram + c * (gram @ gram)) @ x
  return x if wide else x.T


class ScaleByMuonState(NamedTuple):
  """Momentum buffer ``B`` (param dtype)."""
  momentum: Any


_ADJUST_LR = {
    # Jordan et al.: sqrt(max(1, fan_out / fan_in)) (torch "original"; rows/cols in (out, in)).
    "original": lambda fan_in, fan_out: math.sqrt(max(1.0, fan_out / fan_in)),
    # Liu et al. 2025 (Moonshot): 0.2 sqrt(max(fan_in, fan_out)), RMS matched to AdamW's.
    "match_rms_adamw": lambda fan_in, fan_out: 0.2 * math.sqrt(max(fan_in, fan_out)),
    # torch "spectral_unclamped": sqrt(fan_out / fan_in).
    "spectral_unclamped": lambda fan_in, fan_out: math.sqrt(fan_out / fan_in),
}


def scale_by_muon(momentum: Any = 0.95,
                  nesterov: bool = True,
                  ns_coefficients: Sequence[float] = MUON_NS_COEFFICIENTS,
                  ns_steps: int = 5,
                  eps: float = 1e-7,
                  adjust_lr_fn: str = "original") -> optax.GradientTransformation:
  r"""Muon's direction: momentum, then Newton-Schulz orthogonalization of each matrix.

  ``B_t = mu B_{t-1} + (1 - mu) G_t`` (an EMA, torch's ``lerp``), ``M = (1 - mu) G_t +
  mu B_t`` with ``nesterov`` (else ``M = B_t``), ``u = s * NS(M)`` with ``NS`` from
  ``newton_schulz`` applied to the leaf viewed as ``(fan_in, fan_out)`` and the shape
  factor ``s = sqrt(max(1, fan_out / fan_in))`` (``adjust_lr_fn='original'``) or
  ``0.2 sqrt(max(fan_in, fan_out))`` (``'match_rms_adamw'``) or ``sqrt(fan_out / fan_in)``
  (``'spectral_unclamped'``), torch's three options.

  Matches ``torch.optim.Muon`` (torch 2.9+) with its bfloat16 cast removed, for a
  torch weight ``W_torch = W^T`` (torch's Linear weight is ``(out, in)``, so its
  ``A/B = out/in`` is our ``fan_out/fan_in``). Differs from optax's ``contrib.muon``:
  optax bias-corrects the momentum (Adam-style ``1 - mu^t``), normalizes by
  ``||G||_F + eps`` with ``eps = 1e-8``, and routes non-2-D leaves (conv kernels too) to
  Adam silently.

  Every leaf must have ``ndim >= 2`` (``init`` raises ValueError naming the leaf);
  use ``muon(..., mask=...)`` to send biases and scales to AdamW.

  Reference: Jordan et al., "Muon: An optimizer for hidden layers in neural networks",
  2024 (kellerjordan.github.io/posts/muon).
  """
  hp.check_beta("momentum", momentum)
  hp.check_int("ns_steps", ns_steps, 0)
  hp.check_positive("eps", eps)
  if len(tuple(ns_coefficients)) != 3 or not all(
      math.isfinite(float(v)) for v in ns_coefficients):
    raise ValueError(f"ns_coefficients must be three finite numbers (a, b, c), got "
                     f"{ns_coefficients!r}.")
  if adjust_lr_fn not in _ADJUST_LR:
    raise ValueError(f"adjust_lr_fn must be one of {sorted(_ADJUST_LR)}, got {adjust_lr_fn!r}.")
  ratio_fn = _ADJUST_LR[adjust_lr_fn]
  coefficients = tuple(float(v) for v in ns_coefficients)

  def init_fn(params):
    _check_matrices(params, "scale_by_muon")
    return ScaleByMuonState(momentum=hp.tree_map(jnp.zeros_like, params))

  def update_fn(updates, state, params=None):
    del params
    _check_matrices(updates, "scale_by_muon")

    def leaf(g, buf):
      cd = hp.compute_dtype(g)
      g32 = g.astype(cd)
      buf = momentum * buf.astype(cd) + (1 - momentum) * g32
      m = (1 - momentum) * g32 + momentum * buf if nesterov else buf
      mat = _as_matrix(m)
      ratio = ratio_fn(mat.shape[0], mat.shape[1])
      u = ratio * newton_schulz(mat, coefficients, ns_steps, eps)
      return u.reshape(g.shape).astype(g.dtype), buf

    out = hp.tree_map(leaf, updates, state.momentum)
    u, buf = hp.unzip(out, updates, 2)
    buf = hp.tree_map(lambda b, old: b.astype(old.dtype), buf, state.momentum)
    return u, ScaleByMuonState(momentum=buf)

  return optax.GradientTransformation(init_fn, update_fn)


def _labels(mask: Union[str, Any, Callable[[Any], Any]]) -> Callable[[Any], Any]:
  """A ``params -> tree of 'muon'/'adamw'`` labeller from a mask (tree, callable or name)."""
  if isinstance(mask, str):
    if mask != "matrices":
      raise ValueError(f"mask must be a tree of bools, a callable, or 'matrices', got {mask!r}.")
    mask = matrix_mask

  def labels(params):
    m = mask(params) if callable(mask) else mask
    return jax.tree.map(lambda flag, _: "muon" if flag else "adamw", m, params)
  return labels


def muon(learning_rate: hp.ScalarOrSchedule,
         momentum: Any = 0.95,
         nesterov: bool = True,
         ns_coefficients: Sequence[float] = MUON_NS_COEFFICIENTS,
         ns_steps: int = 5,
         eps: float = 1e-7,
         weight_decay: Any = 0.1,
         adjust_lr_fn: str = "original",
         mask: Optional[Any] = None,
         adam_learning_rate: Optional[hp.ScalarOrSchedule] = None,
         adam_b1: Any = 0.9,
         adam_b2: Any = 0.999,
         adam_eps: Any = 1e-8,
         adam_weight_decay: Any = 0.01) -> optax.GradientTransformation:
  r"""Muon: ``W <- W (1 - lr wd) - lr s NS(momentum(G))`` on matrices, AdamW elsewhere.

  Muon leaves: ``chain(scale_by_muon(...), add_weight_decay(weight_decay),
  scale_by_learning_rate(learning_rate))`` (decay not multiplied by the shape factor,
  as torch). Both branches keep the params' dtype: ``modern_common.add_weight_decay`` is
  ``optax.add_decayed_weights``' math without its promotion of bfloat16 updates by float32
  (injected) decay rates. With ``mask`` (a tree of bools, a callable ``params -> tree``, or
  ``'matrices'`` for ``ndim >= 2``), the False leaves get AdamW (``scale_by_adam``,
  decoupled decay ``adam_weight_decay``, ``adam_learning_rate`` defaulting to
  ``learning_rate``; defaults as ``torch.optim.AdamW``), as Muon's users do for biases,
  norms, and often embeddings and the output layer (give those False in the mask).
  Without a mask every leaf must be a matrix (ValueError naming the leaf at ``init``).

  Defaults are ``torch.optim.Muon``'s (momentum 0.95, Nesterov, 5 steps, eps 1e-7,
  weight_decay 0.1). See ``scale_by_muon``. Reference: Jordan et al. 2024.

  >>> import jax.numpy as jnp
  >>> from flaxopt import optim
  >>> tx = optim.muon(0.02, mask="matrices")
  >>> params = {"w": jnp.ones((3, 4)), "b": jnp.zeros(4)}
  >>> state = tx.init(params)
  """
  hp.check_learning_rate(learning_rate)
  hp.check_nonneg("weight_decay", weight_decay)
  muon_tx = optax.chain(
      scale_by_muon(momentum, nesterov, ns_coefficients, ns_steps, eps, adjust_lr_fn),
      modern_common.add_weight_decay(weight_decay),
      transform.scale_by_learning_rate(learning_rate))
  if mask is None:
    return muon_tx
  adam_lr = learning_rate if adam_learning_rate is None else adam_learning_rate
  hp.check_learning_rate(adam_lr)
  hp.check_nonneg("adam_weight_decay", adam_weight_decay)
  for name, value in (("adam_b1", adam_b1), ("adam_b2", adam_b2)):
    hp.check_beta(name, value)
  hp.check_nonneg("adam_eps", adam_eps)
  adamw_tx = optax.chain(
      transform.scale_by_adam(adam_b1, adam_b2, adam_eps),
      modern_common.add_weight_decay(adam_weight_decay),
      transform.scale_by_learning_rate(adam_lr))
  return optax.multi_transform({"muon": muon_tx, "adamw": adamw_tx}, _labels(mask))


# ----------------------------------------------------------------------------
# Shampoo with layer-wise grafting (Gupta, Koren & Singer 2018; Anil et al. 2020).
# ----------------------------------------------------------------------------


class ScaleByShampooState(NamedTuple):
  """Per leaf: momenta (param dtype), graft statistics, block statistics and their roots.

  For a leaf viewed as an ``(m, n)`` matrix cut into ``(bm, bn)`` blocks, ``stats_l`` and
  ``precond_l`` are ``(m/bm, n/bn, bm, bm)``, ``stats_r``/``precond_r``
  ``(m/bm, n/bn, bn, bn)`` (float32 or wider). 1-D leaves hold 0-d placeholders (they take
  the graft step), and graft statistics are 0-d unless the graft needs them: never
  zero-size arrays, which orbax cannot checkpoint.
  """
  count: jax.Array
  momentum: Any
  graft_momentum: Any
  graft_stats: Any
  stats_l: Any
  stats_r: Any
  precond_l: Any
  precond_r: Any


def _graft_stats_sgd(stats, g, b2):
  del g, b2
  return stats


def _graft_stats_adagrad(stats, g, b2):
  del b2
  return stats + g * g


def _graft_stats_rmsprop(stats, g, b2):
  return b2 * stats + (1 - b2) * g * g


# name -> (needs statistics, statistics update, preconditioned gradient)
_GRAFTS = {
    "none": (False, _graft_stats_sgd, lambda g, stats, eps: g),
    "sgd": (False, _graft_stats_sgd, lambda g, stats, eps: g),
    "adagrad": (True, _graft_stats_adagrad, lambda g, stats, eps: g / (jnp.sqrt(stats) + eps)),
    "rmsprop": (True, _graft_stats_rmsprop, lambda g, stats, eps: g / (jnp.sqrt(stats) + eps)),
    "sqrtn": (False, _graft_stats_sgd, lambda g, stats, eps: jnp.sign(g)),
}


def _block_dims(shape: tuple[int, ...], block_size: int, name: str) -> tuple[int, int]:
  """Block sizes ``(bm, bn)`` of the matrix view; ValueError if block_size does not divide."""
  m, n = int(np.prod(shape[:-1])), shape[-1]
  out = []
  for d in (m, n):
    if d > block_size and d % block_size:
      raise ValueError(
          f"block_size={block_size} does not divide dimension {d} of leaf {name} (shape "
          f"{tuple(shape)}, matrix view ({m}, {n})); choose a block size that divides every "
          "dimension larger than it.")
    out.append(min(d, block_size))
  return out[0], out[1]


def _to_blocks(x: jax.Array, bm: int, bn: int) -> jax.Array:
  """``(m, n) -> (m/bm, n/bn, bm, bn)``."""
  m, n = x.shape
  return x.reshape(m // bm, bm, n // bn, bn).transpose(0, 2, 1, 3)


def _from_blocks(x: jax.Array) -> jax.Array:
  """Inverse of ``_to_blocks``."""
  i, j, bm, bn = x.shape
  return x.transpose(0, 2, 1, 3).reshape(i * bm, j * bn)


def matrix_inverse_root(s: jax.Array, p: Any) -> jax.Array:
  """``S^{-1/p}`` of symmetric positive definite (batched) ``S`` by eigendecomposition.

  The same map as pytorch-optimizer's ``compute_power_svd`` (SVD ``U diag(s^{-1/p}) V^T``)
  for SPD input; eigenvalues are floored at the smallest positive normal number.
  """
  w, v = jnp.linalg.eigh(s)
  w = jnp.maximum(w, jnp.finfo(s.dtype).tiny)
  return (v * w[..., None, :] ** (-1.0 / p)) @ jnp.swapaxes(v, -1, -2)


def scale_by_shampoo(b1: Any = 0.9,
                     b2: Any = 0.999,
                     block_size: int = 512,
                     graft_type: str = "rmsprop",
                     nesterov: bool = True,
                     moving_average_for_momentum: bool = False,
                     start_preconditioning_step: int = 25,
                     preconditioning_compute_steps: int = 25,
                     statistics_compute_steps: int = 1,
                     inverse_exponent_override: int = 0,
                     diagonal_eps: Any = 1e-10,
                     matrix_eps: Any = 1e-6,
                     weight_decay: Any = 0.0,
                     decoupled_weight_decay: bool = False) -> optax.GradientTransformation:
  r"""Blocked Shampoo with layer-wise grafting and momentum.

  For each matrix leaf ``G`` (viewed ``(fan_in, fan_out)``, cut into ``block_size`` blocks),
  at step ``t`` (from 1)::

      L <- b2 L + (1 - b2) G G^T,  R <- b2 R + (1 - b2) G^T G   (every statistics_compute_steps;
                                   L_0 = R_0 = matrix_eps I)
      P_L = L^{-1/e}, P_R = R^{-1/e}                       (every preconditioning_compute_steps,
                                   e = 4 or inverse_exponent_override; P = I before the first)
      S  = P_L G P_R (per block),  A = graft(G),  S <- S ||A|| / (||S|| + 1e-16)
      S, A += wd x                                      (coupled decay, decoupled_weight_decay=False)
      M <- b1 M + w S,  M_A <- b1 M_A + w A             (w = 1 - b1 if moving_average_for_momentum)
      D  = M if t >= start_preconditioning_step else M_A
      u  = b1 D + w (S or A)  with nesterov, else D;    u += wd x  (decoupled decay)

  The graft (``graft_type``): ``'sgd'`` (``A = G``), ``'adagrad'`` (``G / (sqrt(sum G^2) +
  diagonal_eps)``), ``'rmsprop'`` (EMA with ``b2``), ``'sqrtn'`` (``sign(G)``), ``'none'``
  (no norm grafting). 1-D leaves (biases) take the graft direction ``A`` alone.

  Matches pytorch-optimizer's ``ScalableShampoo`` (4.1.0) with ``use_svd=True``,
  ``shape_interpretation=False``, ``decoupled_learning_rate=True`` for 2-D weights. Where
  they differ: (i) a dimension larger than ``block_size`` that it does not divide is a
  ValueError here (the reference makes a ragged last block); (ii) conv kernels are
  preconditioned as their ``(fan_in, fan_out)`` matrix (the reference preconditions every
  axis, exponent ``2 * ndim``); (iii) defaults: grafting ``'rmsprop'`` (the AlgoPerf winner
  grafts Adam's norm; the reference defaults to ``'sgd'``), preconditioners recomputed
  every 25 steps (the reference: 1000, i.e. unpreconditioned for 1000 steps); (iv) inverse
  roots by ``eigh`` (the reference's default coupled Schur-Newton iteration stops at a
  residual of 1e-3 and starts its ridge estimate from ``torch.randn``, so it is not
  reproducible; its ``use_svd=True`` path is the same map as ours). optax has no Shampoo.

  Reference: Gupta, Koren & Singer, "Shampoo: Preconditioned Stochastic Tensor
  Optimization", ICML 2018; Anil et al., "Scalable Second Order Optimization for Deep
  Learning", 2020 (blocking, grafting); Kasimbeg et al. 2025 (AlgoPerf results).
  """
  hp.check_beta("b1", b1)
  hp.check_beta("b2", b2)
  hp.check_int("block_size", block_size, 1)
  if graft_type not in _GRAFTS:
    raise ValueError(f"graft_type must be one of {sorted(_GRAFTS)}, got {graft_type!r}.")
  hp.check_int("start_preconditioning_step", start_preconditioning_step, 0)
  hp.check_int("preconditioning_compute_steps", preconditioning_compute_steps, 1)
  hp.check_int("statistics_compute_steps", statistics_compute_steps, 1)
  hp.check_int("inverse_exponent_override", inverse_exponent_override, 0)
  hp.check_nonneg("diagonal_eps", diagonal_eps)
  hp.check_positive("matrix_eps", matrix_eps)
  hp.check_nonneg("weight_decay", weight_decay)
  needs_stats, graft_update, graft_direction = _GRAFTS[graft_type]
  exponent = inverse_exponent_override or 4

  def init_fn(params):
    def square(path, x, which):
      sd = hp.compute_dtype(x)
      if jnp.ndim(x) < 2:
        return jnp.zeros([], sd)  # A 0-d placeholder: 1-D leaves take the graft step.
      bm, bn = _block_dims(jnp.shape(x), block_size, _leaf_name(path))
      m, n = _as_matrix(x).shape
      k = bm if which == "l" else bn
      return jnp.broadcast_to(jnp.eye(k, dtype=sd), (m // bm, n // bn, k, k))

    # Leaf maps skip optax.MaskedNode (no children) and None, so both pass through.
    sq = lambda which, scale: jax.tree_util.tree_map_with_path(
        lambda path, x: scale * square(path, x, which), params)
    zeros = lambda: hp.tree_map(jnp.zeros_like, params)
    graft_stats = zeros() if needs_stats else hp.tree_map(
        lambda x: jnp.zeros([], x.dtype), params)
    stats_l = sq("l", matrix_eps)  # First: a block_size that does not divide raises here.
    return ScaleByShampooState(
        count=hp.count0(), momentum=zeros(), graft_momentum=zeros(), graft_stats=graft_stats,
        stats_l=stats_l, stats_r=sq("r", matrix_eps),
        precond_l=sq("l", 1.0), precond_r=sq("r", 1.0))

  def update_fn(updates, state, params=None):
    if params is None and hp.concrete(weight_decay) != 0.0:
      raise ValueError("scale_by_shampoo with weight_decay needs params.")
    count = hp.increment(state.count)
    w = (1 - b1) if moving_average_for_momentum else 1.0
    use_precond = count >= start_preconditioning_step
    do_stats = count % statistics_compute_steps == 0
    do_roots = count % preconditioning_compute_steps == 0

    def leaf(g, x, m, gm, gs, sl, sr, pl, pr):
      cd = hp.compute_dtype(g)
      g32 = g.astype(cd)
      if needs_stats:
        gs_new = graft_update(gs.astype(cd), g32, b2)
        graft = graft_direction(g32, gs_new, diagonal_eps)
        gs_new = gs_new.astype(gs.dtype)
      else:
        gs_new = gs
        graft = graft_direction(g32, gs, diagonal_eps)
      if g.ndim >= 2:
        bm, bn = sl.shape[-1], sr.shape[-1]
        blocks = _to_blocks(_as_matrix(g32).astype(sl.dtype), bm, bn)
        sl_new = b2 * sl + (1 - b2) * jnp.einsum("ijab,ijcb->ijac", blocks, blocks)
        sr_new = b2 * sr + (1 - b2) * jnp.einsum("ijab,ijac->ijbc", blocks, blocks)
        sl = jnp.where(do_stats, sl_new, sl)
        sr = jnp.where(do_stats, sr_new, sr)
        pl, pr = jax.lax.cond(
            do_roots,
            lambda: (matrix_inverse_root(sl, exponent), matrix_inverse_root(sr, exponent)),
            lambda: (pl, pr))
        pre = jnp.einsum("ijab,ijbc,ijcd->ijad", pl, blocks, pr)
        shampoo = _from_blocks(pre).reshape(g.shape).astype(cd)
        if graft_type != "none":
          shampoo = shampoo * (jnp.linalg.norm(graft) / (jnp.linalg.norm(shampoo) + 1e-16))
      else:
        shampoo = graft
      if not decoupled_weight_decay and params is not None:
        graft = graft + weight_decay * x.astype(cd)
        shampoo = shampoo + weight_decay * x.astype(cd)
      m_new = b1 * m.astype(cd) + w * shampoo
      gm_new = b1 * gm.astype(cd) + w * graft
      direction = jnp.where(use_precond, m_new, gm_new)
      if nesterov:
        direction = b1 * direction + w * jnp.where(use_precond, shampoo, graft)
      if decoupled_weight_decay and params is not None:
        direction = direction + weight_decay * x.astype(cd)
      return (direction.astype(g.dtype), m_new.astype(m.dtype), gm_new.astype(gm.dtype),
              gs_new, sl, sr, pl, pr)

    xs = params if params is not None else updates  # Decay needs params (checked above).
    out = jax.tree.map(
        lambda g, x, *rest: None if g is None else leaf(g, x, *rest),
        updates, xs, state.momentum, state.graft_momentum, state.graft_stats,
        state.stats_l, state.stats_r, state.precond_l, state.precond_r,
        is_leaf=lambda v: v is None)
    u, m, gm, gs, sl, sr, pl, pr = hp.unzip(out, updates, 8)
    return u, ScaleByShampooState(count=count, momentum=m, graft_momentum=gm, graft_stats=gs,
                                  stats_l=sl, stats_r=sr, precond_l=pl, precond_r=pr)

  return optax.GradientTransformation(init_fn, update_fn)


def shampoo(learning_rate: hp.ScalarOrSchedule,
            b1: Any = 0.9,
            b2: Any = 0.999,
            block_size: int = 512,
            graft_type: str = "rmsprop",
            nesterov: bool = True,
            moving_average_for_momentum: bool = False,
            start_preconditioning_step: int = 25,
            preconditioning_compute_steps: int = 25,
            statistics_compute_steps: int = 1,
            inverse_exponent_override: int = 0,
            diagonal_eps: Any = 1e-10,
            matrix_eps: Any = 1e-6,
            weight_decay: Any = 0.0,
            decoupled_weight_decay: bool = False) -> optax.GradientTransformation:
  r"""Shampoo: ``x <- x - lr u`` with ``u`` the grafted, blocked Shampoo momentum step.

  ``chain(scale_by_shampoo(...), scale_by_learning_rate(learning_rate))``; decoupled decay
  (``x <- x (1 - lr wd)``) enters as ``wd x`` in ``u``. See ``scale_by_shampoo`` for the
  update, the conventions and where pytorch-optimizer's ``ScalableShampoo`` differs.
  Reference: Gupta, Koren & Singer 2018; Anil et al. 2020.
  """
  hp.check_learning_rate(learning_rate)
  return optax.chain(
      scale_by_shampoo(b1, b2, block_size, graft_type, nesterov, moving_average_for_momentum,
                       start_preconditioning_step, preconditioning_compute_steps,
                       statistics_compute_steps, inverse_exponent_override, diagonal_eps,
                       matrix_eps, weight_decay, decoupled_weight_decay),
      transform.scale_by_learning_rate(learning_rate))


# ----------------------------------------------------------------------------
# SOAP: Adam in Shampoo's eigenbasis (Vyas et al. 2024).
# ----------------------------------------------------------------------------


class ScaleBySoapState(NamedTuple):
  """Adam moments (``exp_avg`` in the parameter basis, ``exp_avg_sq`` in the eigenbasis),
  Shampoo statistics ``gg_l``/``gg_r`` and their eigenbases ``q_l``/``q_r`` per leaf
  (``(m, m)``/``(n, n)`` for a leaf viewed as ``(m, n)``; a 0-d placeholder where a side is
  not preconditioned: 1-D leaves, or a side longer than ``max_precondition_dim``; never a
  zero-size array, which orbax cannot checkpoint)."""
  count: jax.Array
  exp_avg: Any
  exp_avg_sq: Any
  gg_l: Any
  gg_r: Any
  q_l: Any
  q_r: Any


def _eigenbasis(gg: jax.Array) -> jax.Array:
  """Eigenvectors of ``gg`` by decreasing eigenvalue (``eigh``, then flipped)."""
  return jnp.flip(jnp.linalg.eigh(gg)[1], axis=1)


def _power_qr(gg: jax.Array, q: jax.Array, v: jax.Array, axis: int):
  """One power iteration + QR from ``q``; reorders ``v`` along ``axis`` by the estimates."""
  mp = gg @ q
  est = jnp.sum(q * mp, axis=0)
  order = jnp.argsort(-est)
  return jnp.linalg.qr(mp[:, order])[0], jnp.take(v, order, axis=axis)


def scale_by_soap(learning_rate: hp.ScalarOrSchedule = 0.0,
                  b1: Any = 0.95,
                  b2: Any = 0.95,
                  shampoo_beta: Optional[Any] = None,
                  eps: Any = 1e-8,
                  weight_decay: Any = 0.0,
                  precondition_frequency: int = 10,
                  max_precondition_dim: int = 10000,
                  correct_bias: bool = True,
                  normalize_gradient: bool = False) -> optax.GradientTransformation:
  r"""SOAP's direction: Adam run in the eigenbasis of Shampoo's statistics.

  For a leaf viewed as the matrix ``G`` (``(fan_in, fan_out)``), with ``sb = shampoo_beta``
  (``b2`` when None) and ``t`` the step from 0::

      t = 0:  L = (1 - sb) G G^T, R = (1 - sb) G^T G, Q_L, Q_R = eigh bases (eigenvalues
              decreasing); no step (u = 0), as the authors' code
      t > 0:  m <- b1 m + (1 - b1) G                         (parameter basis)
              v <- b2 v + (1 - b2) (Q_L^T G Q_R)^2           (eigenbasis)
              N  = Q_L [(Q_L^T m Q_R) / (sqrt(v) + eps)] Q_R^T   (/ (rms(N) + 1e-30) if normalize)
              u  = bc N + wd (x - lr_t bc N),  bc = sqrt(1 - b2^t) / (1 - b1^t)
              L <- sb L + (1 - sb) G G^T, R likewise;  every precondition_frequency steps
              Q <- QR(L Q) (one power iteration, columns by decreasing Q^T L Q, v permuted
              to match)

  The alias multiplies ``u`` by ``-lr_t``: the decay is applied to the already-stepped
  parameters, ``x <- (x - lr bc N)(1 - lr wd)``, as the authors' code (hence the
  ``learning_rate`` argument here; only the decay uses it). 1-D leaves and sides longer than
  ``max_precondition_dim`` use the identity basis (plain Adam with SOAP's bias correction,
  whose eps is added to the uncorrected ``sqrt(v)``).

  Matches the authors' algorithm (github.com/nikhilvyas/SOAP, ``soap.py``; also
  pytorch-optimizer's ``SOAP``) transcribed to float64 NumPy
  (``tests/optim/references/generate_b.py``): the reference's QR runs in float32, so its
  bases are not reproducible in float64. Differences: conv kernels are preconditioned as
  their ``(fan_in, fan_out)`` matrix (the reference keeps one basis per axis, or merges
  small axes with ``merge_dims``); no ``precondition_1d``. pytorch-optimizer's port adds
  ``eps`` (not the authors' 1e-30) to ``rms(N)`` when normalizing. optax has no SOAP.

  Reference: Vyas, Morwani, Zhao, Shapira, Brandfonbrener, Janson & Kakade, "SOAP:
  Improving and Stabilizing Shampoo using Adam", ICLR 2025 (arXiv:2409.11321), Algorithm 3.
  """
  hp.check_learning_rate(learning_rate, allow_zero=True)
  hp.check_beta("b1", b1)
  hp.check_beta("b2", b2)
  if shampoo_beta is not None:
    hp.check_beta("shampoo_beta", shampoo_beta)
  hp.check_nonneg("eps", eps)
  hp.check_nonneg("weight_decay", weight_decay)
  hp.check_int("precondition_frequency", precondition_frequency, 1)
  hp.check_int("max_precondition_dim", max_precondition_dim, 1)
  sb = b2 if shampoo_beta is None else shampoo_beta

  def sides(x):
    if jnp.ndim(x) < 2:
      return False, False
    m, n = _as_matrix(x).shape
    return m <= max_precondition_dim, n <= max_precondition_dim

  def init_fn(params):
    def mats(x, side):
      sd = hp.compute_dtype(x)
      if not sides(x)[side]:
        return jnp.zeros([], sd)  # A 0-d placeholder: this side keeps the identity basis.
      k = _as_matrix(x).shape[side]
      return jnp.zeros((k, k), sd)

    zeros = lambda: hp.tree_map(jnp.zeros_like, params)
    return ScaleBySoapState(
        count=hp.count0(), exp_avg=zeros(), exp_avg_sq=zeros(),
        gg_l=hp.tree_map(lambda x: mats(x, 0), params),
        gg_r=hp.tree_map(lambda x: mats(x, 1), params),
        q_l=hp.tree_map(lambda x: mats(x, 0), params),
        q_r=hp.tree_map(lambda x: mats(x, 1), params))

  def update_fn(updates, state, params=None):
    if params is None and hp.concrete(weight_decay) != 0.0:
      raise ValueError("scale_by_soap with weight_decay needs params.")
    t = state.count
    first = t == 0
    tf = jnp.maximum(t, 1)
    lr = hp.lr_at(learning_rate, t)
    refresh = (t > 0) & (t % precondition_frequency == 0)

    def leaf(g, x, m, v, gg_l, gg_r, q_l, q_r):
      cd = hp.compute_dtype(g)
      on_l, on_r = sides(g)
      g32 = g.astype(cd)
      mat = _as_matrix(g32) if g.ndim >= 2 else g32
      mshape = mat.shape

      def project(a):        # Q_L^T a Q_R
        if on_l:
          a = q_l.T @ a
        if on_r:
          a = a @ q_r
        return a

      def project_back(a):   # Q_L a Q_R^T
        if on_l:
          a = q_l @ a
        if on_r:
          a = a @ q_r.T
        return a

      m32 = m.astype(cd).reshape(mshape)
      v32 = v.astype(cd).reshape(mshape)
      m_new = b1 * m32 + (1 - b1) * mat
      v_new = b2 * v32 + (1 - b2) * project(mat) ** 2
      n = project_back(project(m_new) / (jnp.sqrt(v_new) + eps))
      if normalize_gradient:
        n = n / (jnp.sqrt(jnp.mean(n * n)) + 1e-30)  # The authors' 1e-30, not eps.
      tc = tf.astype(cd)
      bc = jnp.sqrt(1 - b2 ** tc) / (1 - b1 ** tc) if correct_bias else jnp.ones([], cd)
      u = bc * n
      if params is not None:
        u = u + weight_decay * (x.astype(cd).reshape(mshape) - lr * u)
      u = jnp.where(first, jnp.zeros_like(u), u)
      m_new = jnp.where(first, m32, m_new)
      v_new = jnp.where(first, v32, v_new)

      # Statistics and bases, after the step (their first values at t = 0).
      w = 1 - sb
      if on_l:
        gg_l = gg_l + w * (mat @ mat.T - gg_l)
      if on_r:
        gg_r = gg_r + w * (mat.T @ mat - gg_r)

      def first_bases():
        return (_eigenbasis(gg_l) if on_l else q_l, _eigenbasis(gg_r) if on_r else q_r,
                v_new)

      def qr_bases():
        ql, qr, vv = q_l, q_r, v_new
        if on_l:
          ql, vv = _power_qr(gg_l, ql, vv, 0)
        if on_r:
          qr, vv = _power_qr(gg_r, qr, vv, 1)
        return ql, qr, vv

      branch = jnp.where(first, 0, jnp.where(refresh, 1, 2))
      q_l_new, q_r_new, v_new = jax.lax.switch(
          branch, [first_bases, qr_bases, lambda: (q_l, q_r, v_new)])
      return (u.reshape(g.shape).astype(g.dtype), m_new.reshape(g.shape).astype(m.dtype),
              v_new.reshape(g.shape).astype(v.dtype), gg_l, gg_r, q_l_new, q_r_new)

    xs = params if params is not None else updates
    out = jax.tree.map(
        lambda g, x, *rest: None if g is None else leaf(g, x, *rest),
        updates, xs, state.exp_avg, state.exp_avg_sq, state.gg_l, state.gg_r,
        state.q_l, state.q_r, is_leaf=lambda v: v is None)
    u, m, v, gg_l, gg_r, q_l, q_r = hp.unzip(out, updates, 7)
    return u, ScaleBySoapState(count=hp.increment(t), exp_avg=m, exp_avg_sq=v,
                               gg_l=gg_l, gg_r=gg_r, q_l=q_l, q_r=q_r)

  return optax.GradientTransformation(init_fn, update_fn)


def soap(learning_rate: hp.ScalarOrSchedule,
         b1: Any = 0.95,
         b2: Any = 0.95,
         shampoo_beta: Optional[Any] = None,
         eps: Any = 1e-8,
         weight_decay: Any = 0.01,
         precondition_frequency: int = 10,
         max_precondition_dim: int = 10000,
         correct_bias: bool = True,
         normalize_gradient: bool = False) -> optax.GradientTransformation:
  r"""SOAP: ``x <- (x - lr bc N)(1 - lr wd)``, ``N`` Adam's step in Shampoo's eigenbasis.

  ``chain(scale_by_soap(learning_rate, ...), scale_by_learning_rate(learning_rate))``; the
  authors' defaults (betas 0.95, weight decay 0.01, bases refreshed every 10 steps). The
  first step only initializes the bases (no move). See ``scale_by_soap``.
  Reference: Vyas et al. 2024.
  """
  hp.check_learning_rate(learning_rate)
  return optax.chain(
      scale_by_soap(learning_rate, b1, b2, shampoo_beta, eps, weight_decay,
                    precondition_frequency, max_precondition_dim, correct_bias,
                    normalize_gradient),
      transform.scale_by_learning_rate(learning_rate))
