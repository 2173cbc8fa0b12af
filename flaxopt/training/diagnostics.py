"""Per-layer activation and gradient statistics during training (any ``build_model`` model).

Every ``config.diagnostics.every`` steps (0 = off) the loop calls ``maybe_log_diagnostics``,
which runs the jitted ``compute_diagnostics`` on the step's training batch and appends one
record to ``<workdir>/diagnostics.jsonl``::

  {"step": 500, "loss": 0.41,
   "activations": {"conv_0": {"mean": .., "std": .., ...}, "act_0": {...}, ...},
   "gradients": {"conv_0/kernel": {...}, "conv_0/bias": {...}, ...}}

Activations are every submodule's output, captured with flax's ``capture_intermediates``
(Dense/Conv, norm, activation, pool, dropout; ``output`` is the logits), in training mode
(batch statistics, dropout masks of the step's rng) without updating running statistics.
Gradients are ``dLoss/dparam`` of the mean cross-entropy (no penalties) on the same batch.
Statistics per entry (``array_stats``): ``mean``, ``std``, ``var``, ``second_moment``
(mean of x^2), ``zero_fraction`` (exact zeros: dead ReLUs), ``saturation_fraction``
(``|x| >= saturation``, meant for bounded units: tanh/sigmoid near their limits) and the
percentiles ``p1``, ``p50``, ``p99``. ``plot_diagnostics`` draws ``<workdir>/diagnostics.png``.

As in Glorot & Bengio 2010 (activation and back-propagated gradient histograms per layer,
their Fig. 2-7) and the "dead ReLU" fraction used since Nair & Hinton 2010.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any, Mapping, Optional, Sequence

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

__all__ = ["DEFAULTS", "DIAGNOSTICS_FILE", "PLOT_FILE", "array_stats", "compute_diagnostics",
           "default_config", "layer_stats", "maybe_log_diagnostics", "plot_diagnostics"]

DIAGNOSTICS_FILE = "diagnostics.jsonl"
PLOT_FILE = "diagnostics.png"
DEFAULT_PERCENTILES = (1.0, 50.0, 99.0)
OUTPUT_NAME = "output"  # the model's own output (logits) among the activations


# The ``diagnostics.*`` config fields with their defaults (off).
DEFAULTS = {
    "every": 0,  # log every N steps; 0 = off
    "saturation": 0.99,  # saturation_fraction counts |x| >= this
}


def default_config() -> ml_collections.ConfigDict:
  """The ``diagnostics.*`` config fields with their defaults (off)."""
  return ml_collections.ConfigDict(DEFAULTS)


# ---------------------------------------------------------------------------------------
# Statistics.
# ---------------------------------------------------------------------------------------
def layer_stats(values: Sequence[Any] | Any, *, saturation: Optional[float] = None,
                percentiles: Sequence[float] = DEFAULT_PERCENTILES) -> list[dict[str, float]]:
  """Per-layer statistics of activations or gradients (host side, numpy float64).

  Args:
    values: one array per layer, or one array whose leading axis indexes the layers.
    saturation: if given, ``saturation_fraction`` is the fraction with ``|x| >= saturation``
      (e.g. 0.99 for tanh units near +-1); otherwise it is NaN.
    percentiles: percentiles (0-100) to report, as keys ``p<q>`` (``p50`` for the median).

  Returns:
    One dict per layer with ``mean``, ``std``, ``var``, ``second_moment`` (mean of x^2),
    ``zero_fraction`` (exact zeros: dead ReLUs), ``saturation_fraction`` and the percentiles,
    all Python floats computed in float64.
  """
  if hasattr(values, "shape"):  # One stacked array: to numpy once, not a slice per layer.
    values = np.asarray(values, dtype=np.float64)
  stats = []
  for layer in values:
    a = np.asarray(layer, dtype=np.float64).ravel()
    row = {
        "mean": float(a.mean()),
        "std": float(a.std()),
        "var": float(a.var()),
        "second_moment": float(np.mean(a * a)),
        "zero_fraction": float(np.mean(a == 0.0)),
        "saturation_fraction": (float(np.mean(np.abs(a) >= saturation))
                                if saturation is not None else float("nan")),
    }
    if percentiles:
      for q, value in zip(percentiles, np.percentile(a, list(percentiles))):
        row[f"p{q:g}"] = float(value)
    stats.append(row)
  return stats


def array_stats(x: jax.Array, *, saturation: Optional[float] = None,
                percentiles: Sequence[float] = DEFAULT_PERCENTILES) -> dict[str, jax.Array]:
  """``layer_stats`` of one array in jnp (traceable; float32 scalars for float inputs).

  ``mean``, ``std`` (population, ``ddof=0`` like numpy; ``torch.std`` defaults to ddof=1),
  ``var``, ``second_moment = mean(x^2)``, ``zero_fraction = mean(x == 0)``,
  ``saturation_fraction = mean(|x| >= saturation)`` (NaN without ``saturation``) and
  ``p<q>`` = ``jnp.percentile(x, q)`` (linear interpolation, numpy's default).
  """
  a = jnp.ravel(x).astype(jnp.promote_types(x.dtype, jnp.float32))
  if a.size == 0:
    raise ValueError(f"array_stats needs a non-empty array, got shape {x.shape}")
  out = {
      "mean": jnp.mean(a),
      "std": jnp.std(a),
      "var": jnp.var(a),
      "second_moment": jnp.mean(a * a),
      "zero_fraction": jnp.mean((a == 0).astype(a.dtype)),
      "saturation_fraction": (jnp.mean((jnp.abs(a) >= saturation).astype(a.dtype))
                              if saturation is not None else jnp.array(jnp.nan, a.dtype)),
  }
  if percentiles:
    values = jnp.percentile(a, jnp.asarray(percentiles, a.dtype))
    out.update({f"p{q:g}": values[i] for i, q in enumerate(percentiles)})
  return out


def _path_name(path: Sequence[Any]) -> str:
  return "/".join(str(getattr(k, "key", k)) for k in path)


def _captured_outputs(intermediates: Mapping[str, Any]) -> dict[str, jax.Array]:
  """``{'conv_0': out, ..., 'output': logits}`` from flax's ``intermediates`` collection."""
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(intermediates))
  out = {}
  for path, values in flat.items():
    if path[-1] != "__call__":
      continue
    name = "/".join(path[:-1]) or OUTPUT_NAME
    for i, value in enumerate(values):  # a module called twice gets '#1', '#2', ...
      if isinstance(value, jax.Array) and jnp.issubdtype(value.dtype, jnp.floating):
        out[name if i == 0 else f"{name}#{i}"] = value
  return out


@functools.partial(jax.jit, static_argnames=("model", "num_classes", "saturation",
                                             "percentiles"))
def compute_diagnostics(model: Any, params: Any, batch_stats: Any, x: jax.Array, y: jax.Array,
                        rngs: Mapping[str, jax.Array], *, num_classes: int,
                        saturation: Optional[float] = 0.99,
                        percentiles: Sequence[float] = DEFAULT_PERCENTILES) -> dict[str, Any]:
  """Per-layer statistics of activations and parameter gradients on one batch (jitted).

  ``loss = mean CE(model(x, train=True), y)``; activations are every submodule's output
  (``capture_intermediates=True``), gradients ``dloss/dparams`` per parameter array.
  Running statistics are not updated (the new ``batch_stats`` are discarded).

  Args:
    model: the flax module from ``build_model`` (static: hashable).
    params, batch_stats: the model's variables.
    x, y: a batch, channels-last inputs and integer labels.
    rngs: keys for the model's rng streams ('dropout', 'rrelu', 'pool').
    num_classes: classes of the one-hot targets.
    saturation, percentiles: as in ``array_stats``.

  Returns:
    ``{'loss': scalar, 'activations': {name: stats}, 'gradients': {'layer/param': stats}}``.
  """
  stats = functools.partial(array_stats, saturation=saturation, percentiles=percentiles)

  def loss_fn(p):
    logits, state = model.apply({"params": p, "batch_stats": batch_stats}, x, train=True,
                                rngs=rngs, capture_intermediates=True,
                                mutable=["batch_stats", "intermediates"])
    labels = jax.nn.one_hot(y, num_classes, dtype=logits.dtype)
    loss = jnp.mean(optax.softmax_cross_entropy(logits, labels))
    return loss, _captured_outputs(state["intermediates"])

  (loss, acts), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
  grad_leaves = jax.tree_util.tree_flatten_with_path(grads)[0]
  return {
      "loss": loss,
      "activations": {name: stats(a) for name, a in acts.items()},
      "gradients": {_path_name(path): stats(g) for path, g in grad_leaves},
  }


# ---------------------------------------------------------------------------------------
# Loop integration: JSON lines and the plot.
# ---------------------------------------------------------------------------------------
def _to_host(a: Any) -> np.ndarray:
  """A numpy copy; of an array sharded over processes, this process's rows only."""
  if isinstance(a, jax.Array) and jnp.issubdtype(a.dtype, jax.dtypes.prng_key):
    return jax.random.wrap_key_data(_to_host(jax.random.key_data(a)),
                                    impl=jax.random.key_impl(a))
  if isinstance(a, jax.Array) and not (a.is_fully_addressable or a.is_fully_replicated):
    shards = sorted(a.addressable_shards, key=lambda s: s.index[0].start or 0)
    return np.concatenate([np.asarray(s.data) for s in shards if s.replica_id == 0])
  return np.asarray(jax.device_get(a))


def _host_batch(batch: Mapping[str, Any], pmapped: bool) -> tuple[np.ndarray, np.ndarray]:
  x, y = _to_host(batch["x"]), _to_host(batch["y"])
  if pmapped:  # (devices, per_device, ...) -> (batch, ...)
    x, y = x.reshape((-1,) + x.shape[2:]), y.reshape(-1)
  return x, y


def maybe_log_diagnostics(config: ml_collections.ConfigDict, state: Any,
                          batch: Mapping[str, Any], step: int, workdir: str, *, model: Any,
                          num_classes: int, par: Any = None) -> Optional[dict]:
  """Every ``config.diagnostics.every`` steps: diagnostics of ``batch`` appended as JSON.

  A no-op returning None when ``config.diagnostics`` is missing, ``every`` is 0 or ``step``
  is not a multiple of it. Otherwise gathers ``state`` (a ``TrainState``; ``par`` the
  loop's ``Parallel``, whose ``get`` drops pmap's device axis) and the batch to the host,
  runs ``compute_diagnostics`` on one device, appends the record to
  ``<workdir>/diagnostics.jsonl`` (process 0), redraws ``diagnostics.png`` at the last
  logged step (``step + every > num_train_steps``) and returns the record. In a
  multi-process run each process computes on its own rows of the batch; process 0 writes.
  """
  diag = config.get("diagnostics")
  every = int(diag.get("every", 0) or 0) if diag is not None else 0
  if every < 0:
    raise ValueError(f"diagnostics.every must be >= 0, got {every}")
  if not every or step % every:
    return None
  pmapped = par is not None and getattr(par, "mode", "jit") == "pmap"
  if getattr(model, "axis_name", None) is not None:  # pmap BatchNorm: one device holds all
    model = model.clone(axis_name=None)               # rows, so its statistics are global
  state = par.get(state) if par is not None else state
  params, batch_stats, rng, state_step = jax.tree.map(
      _to_host, (state.params, state.batch_stats, state.rng, state.step))
  x, y = _host_batch(batch, pmapped)
  from flaxopt.training import steps as steps_lib  # pylint: disable=g-import-not-at-top
  rngs = {k: v for k, v in steps_lib.step_rngs(rng, state_step).items()
          if k in steps_lib.RNG_STREAMS}
  saturation = diag.get("saturation", 0.99)
  out = compute_diagnostics(model, params, batch_stats, x, y, rngs,
                            num_classes=int(num_classes),
                            saturation=None if saturation is None else float(saturation))
  from flaxopt.training import metrics as metrics_lib  # pylint: disable=g-import-not-at-top
  record = {"step": int(step), **metrics_lib.to_jsonable(jax.device_get(out))}
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, DIAGNOSTICS_FILE), "a") as f:
      f.write(json.dumps(record, sort_keys=True, allow_nan=True) + "\n")
    if step + every > int(config.get("num_train_steps", step)):
      plot_diagnostics(workdir)
  return record


# plot panel: (title, section of the record, statistic, log scale)
_PANELS = (
    ("activation std", "activations", "std", True),
    ("activation zero fraction (dead ReLU)", "activations", "zero_fraction", False),
    ("gradient RMS (kernels)", "gradients", "second_moment", True),
)


def _panel_names(record: Mapping[str, Any], section: str) -> list[str]:
  names = list(record[section])
  if section == "gradients":
    kernels = [n for n in names if n.endswith("kernel")]
    return kernels or names
  # Layer outputs only: the last module of each layer (activation, else the layer itself).
  acts = [n for n in names if n.split("/")[-1].startswith("act")]
  return (acts or names) + ([OUTPUT_NAME] if OUTPUT_NAME in names and acts else [])


def plot_diagnostics(workdir: str, path: Optional[str] = None) -> Optional[str]:
  """Draws ``<workdir>/diagnostics.jsonl`` to ``path`` (default ``<workdir>/diagnostics.png``).

  Three panels over steps, one line per layer: activation std, activation zero fraction,
  kernel-gradient RMS. Returns the path, or None when there are no records.
  """
  records = []
  log_path = os.path.join(workdir, DIAGNOSTICS_FILE)
  if os.path.exists(log_path):
    with open(log_path) as f:
      records = [json.loads(line) for line in f if line.strip()]
  if not records:
    return None
  path = path or os.path.join(workdir, PLOT_FILE)
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, axes = plt.subplots(1, len(_PANELS), figsize=(5.0 * len(_PANELS), 3.6), squeeze=False)
  steps = [r["step"] for r in records]
  for ax, (title, section, stat, log) in zip(axes[0], _PANELS):
    for name in _panel_names(records[-1], section):
      values = [r[section].get(name, {}).get(stat, np.nan) for r in records]
      if stat == "second_moment":
        values = np.sqrt(values)
      ax.plot(steps, values, "o-", ms=2, label=name)
    if log:
      ax.set_yscale("log")
    ax.set(title=title, xlabel="step")
    ax.legend(fontsize=6)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path
