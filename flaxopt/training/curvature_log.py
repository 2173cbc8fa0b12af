"""Curvature metrics during training: sharpness, Hessian trace and gradient noise scale.

Every ``config.curvature.every`` steps (0 = off) the loop calls ``curvature_metrics`` on
``num_batches`` training batches and merges the result into its metrics record
(``metrics.jsonl`` / TensorBoard)::

  {"sharpness": 41.2, "top_eigenvalues": [41.2, 17.0], "hessian_trace": 310.5,
   "hessian_trace_stderr": 12.1, "noise_scale": 830.0, "two_over_lr": 40.0}

``sharpness`` is the top eigenvalue of the Hessian of the mean training loss over those
batches (Lanczos, ``flaxopt.curvature.top_eigenvalues``), ``hessian_trace`` its Hutchinson
estimate with ``trace_samples`` probes, ``noise_scale`` McCandlish et al.'s B_simple from the
per-batch gradients, and ``two_over_lr`` the stability threshold 2/lr of gradient descent
(Cohen et al. 2021: full-batch GD drives sharpness up to 2/lr, the "edge of stability").
``plot_sharpness`` draws sharpness against 2/lr over steps.

The loss is the model's mean cross-entropy in train mode (batch statistics for BatchNorm; the
running averages are neither used nor updated) with dropout and dropconnect off
(``model_loss_fn``); regularizer penalties are not included. A diverged model (non-finite
parameters or loss) gives NaN for every metric instead of an error.
"""

from __future__ import annotations

import functools
import math
import os
from typing import Any, Callable, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from flaxopt import curvature

__all__ = ["METRICS", "default_config", "should_log", "model_loss_fn", "curvature_metrics",
           "plot_sharpness"]

METRICS = ("sharpness", "hessian_trace", "hessian_trace_stderr", "noise_scale", "two_over_lr")


def default_config() -> ml_collections.ConfigDict:
  """The ``curvature.*`` config fields with their defaults (off)."""
  return ml_collections.ConfigDict({
      "every": 0,  # log every N steps; 0 = off
      "num_batches": 4,  # training batches the Hessian averages over (>= 2 for noise_scale)
      "top_k": 1,  # eigenvalues logged as top_eigenvalues; sharpness is the first
      "trace_samples": 10,  # Hutchinson probes (>= 2)
      "lanczos_iters": 20,  # Lanczos steps (>= top_k; capped at the parameter count)
      "seed": 0,  # probes: fold_in(key(seed), step)
  })


def _section(config: Any) -> Mapping[str, Any]:
  """``config.curvature`` merged over the defaults (``config`` may be the section itself)."""
  section = config.get("curvature", config) if hasattr(config, "get") else config
  merged = default_config().to_dict()
  given = section.to_dict() if hasattr(section, "to_dict") else dict(section or {})
  unknown = sorted(set(given) - set(merged))
  if unknown:
    raise ValueError(f"Unknown curvature config field(s) {unknown}; valid: {', '.join(merged)}")
  merged.update(given)
  for field, minimum in (("every", 0), ("num_batches", 1), ("top_k", 1),
                         ("trace_samples", 2), ("lanczos_iters", 1)):
    value = merged[field]
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
      raise ValueError(f"curvature.{field}={value!r} must be an integer >= {minimum}")
  if merged["lanczos_iters"] < merged["top_k"]:
    raise ValueError(f"curvature.lanczos_iters={merged['lanczos_iters']} must be >= "
                     f"curvature.top_k={merged['top_k']}")
  return merged


def should_log(config: Any, step: int) -> bool:
  """Whether ``step`` is a curvature step (``curvature.every`` > 0 divides it)."""
  every = _section(config)["every"]
  return bool(every) and step % every == 0


def model_loss_fn(model: Any, num_classes: int, batch_stats: Any = None,
                  rngs: Optional[Mapping[str, jax.Array]] = None) -> Callable[[Any, Any], Any]:
  """``loss_fn(params, batch) -> mean cross-entropy`` of a ``build_model`` model, train mode.

  BatchNorm normalizes with the batch's statistics (``train=True``); the running averages in
  ``batch_stats`` only fill the collection and the updated ones are discarded. Dropout and
  dropconnect are switched off by cloning the model with rate 0; ``rngs`` (fixed keys) serve
  any other stochastic layer (rrelu, stochastic pooling). A pmap ``axis_name`` is dropped.
  ``batch`` is ``{'x': inputs, 'y': integer labels}``. Build it once and reuse it: the
  curvature computation is compiled once per ``loss_fn`` object.
  """
  fields = {f: 0.0 for f in ("dropout", "dropconnect") if hasattr(model, f)}
  if hasattr(model, "axis_name"):
    fields["axis_name"] = None
  model = model.clone(**fields) if fields else model
  rngs = dict(rngs) if rngs is not None else {"dropout": jax.random.PRNGKey(0),
                                                "rrelu": jax.random.PRNGKey(1),
                                                "pool": jax.random.PRNGKey(2)}

  def loss_fn(params, batch):
    variables = {"params": params}
    if batch_stats is not None:
      variables["batch_stats"] = batch_stats
    logits, _ = model.apply(variables, batch["x"], train=True, rngs=rngs,
                            mutable=["batch_stats"])
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]))

  return loss_fn


@functools.partial(jax.jit, static_argnames=("loss_fn", "top_k", "num_iters", "trace_samples"))
def _compute(loss_fn, params, batches, key, *, top_k, num_iters, trace_samples):
  matvec = curvature.hessian_matvec(loss_fn, params, list(batches))
  k_eig, k_trace = jax.random.split(key)
  values, _ = curvature.top_eigenvalues(matvec, params, top_k, k_eig, num_iters)
  trace, stderr = curvature.hutchinson_trace(matvec, params, k_trace, trace_samples)
  out = {"top_eigenvalues": values, "hessian_trace": trace, "hessian_trace_stderr": stderr}
  sizes = {curvature.batch_size(b) for b in batches}
  if len(batches) >= 2 and len(sizes) == 1:
    grads = jax.tree.map(lambda *g: jnp.stack(g), *[jax.grad(loss_fn)(params, b)
                                                      for b in batches])
    out["noise_scale"] = curvature.gradient_noise_scale(grads, sizes.pop())["noise_scale"]
  return out


def _finite(tree: Any) -> bool:
  return all(bool(np.all(np.isfinite(np.asarray(x)))) for x in jax.tree.leaves(tree))


def curvature_metrics(config: Any, loss_fn: Callable[[Any, Any], Any], params: Any,
                      batches: Sequence[Any], key: jax.Array,
                      learning_rate: float) -> dict[str, Any]:
  """Sharpness, Hessian trace (and its standard error), noise scale and 2/lr, as floats.

  Args:
    config: the run's config (its ``curvature`` section is read) or the section itself.
    loss_fn: ``loss_fn(params, batch) -> scalar`` (``model_loss_fn``), reused across calls.
    params: the model parameters (on one device / replicated; not pmap-stacked).
    batches: training batches; the first ``num_batches`` are used, weighted by size.
    key: randomness for the Lanczos start and the Hutchinson probes.
    learning_rate: the current learning rate, for ``two_over_lr``.

  Returns:
    ``{'sharpness', 'top_eigenvalues' (list of top_k), 'hessian_trace',
    'hessian_trace_stderr', 'noise_scale', 'two_over_lr'}``. ``noise_scale`` is NaN with fewer
    than 2 batches or unequal batch sizes; everything but ``two_over_lr`` is NaN when the
    parameters or the loss are not finite (a diverged run).

  Raises:
    ValueError: bad ``curvature.*`` fields, or no batches.
  """
  cfg = _section(config)
  batches = tuple(batches)[:cfg["num_batches"]]
  if not batches:
    raise ValueError("batches must hold at least one batch")
  lr = float(learning_rate)
  two_over_lr = 2.0 / lr if lr > 0 else math.inf
  nan = float("nan")
  result = {"sharpness": nan, "top_eigenvalues": [nan] * cfg["top_k"], "hessian_trace": nan,
            "hessian_trace_stderr": nan, "noise_scale": nan, "two_over_lr": two_over_lr}
  if not _finite(params) or not _finite(jax.jit(loss_fn)(params, batches[0])):
    return result
  n = sum(int(np.size(x)) for x in jax.tree.leaves(params))
  out = jax.device_get(_compute(loss_fn, params, batches, key, top_k=min(cfg["top_k"], n),
                                num_iters=min(cfg["lanczos_iters"], n),
                                trace_samples=cfg["trace_samples"]))
  values = [float(v) for v in out["top_eigenvalues"]]
  result.update(sharpness=values[0], top_eigenvalues=values,
                hessian_trace=float(out["hessian_trace"]),
                hessian_trace_stderr=float(out["hessian_trace_stderr"]))
  if "noise_scale" in out:
    result["noise_scale"] = float(out["noise_scale"])
  return result


def plot_sharpness(records: Sequence[Mapping[str, Any]], path: str, title: str = "") -> Optional[str]:
  """Sharpness and 2/lr against step (log scale) from metrics records; None without any.

  Records without ``sharpness`` are skipped; NaN (diverged) points are left as gaps.
  """
  rows = [r for r in records if "sharpness" in r]
  if not rows:
    return None
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  steps = [r["step"] for r in rows]
  fig, ax = plt.subplots(figsize=(5.5, 3.6))
  ax.plot(steps, [r["sharpness"] for r in rows], "o-", ms=3, label="sharpness (top eigenvalue)")
  ax.plot(steps, [r.get("two_over_lr", float("nan")) for r in rows], "--", label="2 / lr")
  ax.set_yscale("log")
  ax.set(xlabel="step", ylabel="eigenvalue", title=title)
  ax.legend()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path
