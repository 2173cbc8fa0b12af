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
from flaxopt.optim import transform

__all__ = [
    "MUON_NS_COEFFICIENTS",
    "ScaleByMuonState",
    "newton_schulz",
    "matrix_mask",
    "scale_by_muon",
    "muon",
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
  ``||G||_F + eps`` with ``eps = 1e-8``, and routes non-2-D leaves to Adam silently.

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
      return u.reshape(g.shape).astype(g.dtype), buf.astype(buf.dtype)

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

  Muon leaves: ``chain(scale_by_muon(...), add_decayed_weights(weight_decay),
  scale_by_learning_rate(learning_rate))`` (decay not multiplied by the shape factor,
  as torch). With ``mask`` (a tree of bools, a callable ``params -> tree``, or
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
      optax.add_decayed_weights(weight_decay),
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
      optax.add_decayed_weights(adam_weight_decay),
      transform.scale_by_learning_rate(adam_lr))
  return optax.multi_transform({"muon": muon_tx, "adamw": adamw_tx}, _labels(mask))
