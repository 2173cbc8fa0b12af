"""Early stopping: patience, and Prechelt's GL / PQ / UP criteria. Pure Python.

The state is a NamedTuple of Python floats/ints/bools (``state.to_dict()`` is
JSON-serialisable), so the training loop saves it next to a checkpoint and
restores it on resume; no jit, no arrays. The loop feeds one evaluation per
call::

  es = early_stopping.from_config(config.early_stopping)
  state = es.init()
  ...
  state, stop = es.update(state, step, metrics[es.metric], train_values=losses)
  if stop: break            # the loop restores the params saved at state.best_step

Criteria (``criterion=``), with ``E_va(t)`` the validation value at evaluation
``t`` and ``E_opt(t) = min_{t' <= t} E_va(t')``:

* ``'patience'``: stop when the value has not improved by more than
  ``min_delta`` (``mode='min'``: ``v < best - min_delta``; ``'max'``:
  ``v > best + min_delta``) for ``patience`` successive evaluations (Keras'
  ``EarlyStopping`` semantics; ``best_value`` only moves on such improvements).
* ``'gl'`` (GL_alpha): generalization loss ``GL(t) = 100 * (E_va(t) / E_opt(t) - 1)``;
  stop when ``GL(t) > alpha``.
* ``'pq'`` (PQ_alpha): stop when ``GL(t) / P_k(t) > alpha``, with training
  progress ``P_k(t) = 1000 * (sum_{strip} E_tr / (k * min_{strip} E_tr) - 1)``
  over the last strip of ``k`` training errors.
* ``'up'`` (UP_s): stop when the validation value increased (``E_va(t) >
  E_va(t-1)``) at ``s = successive_strips`` successive evaluations.

Prechelt, 1998, "Early stopping -- but when?" (Neural Networks: Tricks of the
Trade). Mapping to this loop: Prechelt evaluates at the end of each *strip* of
``k`` epochs; here each ``update`` call is the end of one strip (one
evaluation, every ``eval_every`` steps), and ``train_values`` are the training
errors measured during that strip (e.g. the training losses logged since the
previous evaluation). ``P_k`` uses the last ``strip_length`` of them (all of
them if fewer are given). Prechelt's criteria need a non-negative error to
minimise: ``mode`` must be ``'min'`` (use an error rate, not an accuracy), and
``E_opt`` is the exact minimum (``min_delta`` is ignored).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping, NamedTuple, Optional, Sequence

import ml_collections

__all__ = [
    "EarlyStopping",
    "EarlyStoppingState",
    "default_config",
    "from_config",
    "generalization_loss",
    "training_progress",
]


class EarlyStoppingState(NamedTuple):
  """JSON-serialisable early-stopping state (all Python scalars).

  Attributes:
    best_value: best validation value so far (None before the first update).
    best_step: step of ``best_value`` (the params the loop should restore).
    last_value: the previous validation value (for UP).
    num_bad: evaluations since the last improvement (patience).
    num_up: successive evaluations whose value went up (UP).
    num_updates: evaluations seen.
    stopped: whether a criterion fired.
    stop_step: the step at which it fired.
  """
  best_value: Optional[float] = None
  best_step: Optional[int] = None
  last_value: Optional[float] = None
  num_bad: int = 0
  num_up: int = 0
  num_updates: int = 0
  stopped: bool = False
  stop_step: Optional[int] = None

  def to_dict(self) -> dict[str, Any]:
    """A plain dict (``json.dumps``-able) for saving next to a checkpoint."""
    return dict(self._asdict())

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> "EarlyStoppingState":
    """Inverse of ``to_dict``; unknown keys raise ValueError."""
    unknown = set(d) - set(cls._fields)
    if unknown:
      raise ValueError(f"Unknown EarlyStoppingState fields: {sorted(unknown)}.")
    return cls(**d)


def generalization_loss(value: float, best: float) -> float:
  """Prechelt's ``GL = 100 * (E_va / E_opt - 1)`` (percent above the best).

  ``E_opt = 0`` gives 0 when ``E_va = 0`` and ``inf`` otherwise.
  """
  if value < 0 or best < 0:
    raise ValueError(f"GL needs non-negative errors, got E_va={value!r}, E_opt={best!r}.")
  if best == 0:
    return 0.0 if value == 0 else math.inf
  return 100.0 * (value / best - 1.0)


def training_progress(train_values: Sequence[float]) -> float:
  """Prechelt's ``P_k = 1000 * (sum(E_tr) / (k * min(E_tr)) - 1)`` over one strip.

  ``k = len(train_values)``. An all-zero strip has progress 0; a strip with a
  zero minimum and some positive error has progress ``inf``.
  """
  values = [float(v) for v in train_values]
  if not values:
    raise ValueError("training_progress needs at least one training value, got none.")
  low = min(values)
  if low < 0:
    raise ValueError(f"training errors must be non-negative, got min {low!r}.")
  if low == 0:
    return 0.0 if sum(values) == 0 else math.inf
  return 1000.0 * (sum(values) / (len(values) * low) - 1.0)


def _ratio(num: float, den: float) -> float:
  if den == 0:
    return 0.0 if num == 0 else math.inf
  return num / den


@dataclasses.dataclass(frozen=True)
class EarlyStopping:
  """Early-stopping rule; pure functions ``init`` and ``update`` on its state.

  Attributes:
    criterion: 'patience', 'gl', 'pq' or 'up' (case-insensitive).
    patience: evaluations without improvement before stopping ('patience').
    min_delta: minimum change counted as improvement ('patience').
    mode: 'min' or 'max' ('max' only for 'patience').
    alpha: threshold of GL_alpha / PQ_alpha (Prechelt used GL 1..5, PQ 0.5..3).
    strip_length: k, the number of training errors per strip (PQ).
    successive_strips: s of UP_s (Prechelt used 2..4).
    enabled: if False, ``update`` tracks the best value but never stops.
    metric: name of the metrics entry the loop feeds (not used here).
    restore_best: whether the loop restores the best params (not used here).
  """
  criterion: str = "patience"
  patience: int = 10
  min_delta: float = 0.0
  mode: str = "min"
  alpha: float = 5.0
  strip_length: int = 5
  successive_strips: int = 3
  enabled: bool = True
  metric: str = "val_loss"
  restore_best: bool = True

  def __post_init__(self):
    name = str(self.criterion).lower()
    if name not in _CRITERIA:
      raise ValueError(f"Unknown early-stopping criterion {self.criterion!r}; "
                       f"valid: {', '.join(sorted(_CRITERIA))}.")
    object.__setattr__(self, "criterion", name)
    if self.mode not in ("min", "max"):
      raise ValueError(f"mode must be 'min' or 'max', got {self.mode!r}.")
    if name != "patience" and self.mode != "min":
      raise ValueError(f"criterion {name!r} (Prechelt) needs mode='min' on a non-negative "
                       f"error, got mode={self.mode!r}.")
    for field, low in (("patience", 0), ("strip_length", 1), ("successive_strips", 1)):
      value = getattr(self, field)
      if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{field} must be an int >= {low}, got {value!r}.")
    for field in ("min_delta", "alpha"):
      value = getattr(self, field)
      if not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(f"{field} must be a number >= 0, got {value!r}.")

  def init(self) -> EarlyStoppingState:
    """A fresh state."""
    return EarlyStoppingState()

  def update(self, state: EarlyStoppingState, step: int, val_value: float,
             train_values: Sequence[float] = ()) -> tuple[EarlyStoppingState, bool]:
    """Feeds one evaluation; returns the new state and whether to stop.

    Args:
      state: the previous state.
      step: the training step of this evaluation (recorded as ``best_step``).
      val_value: the monitored validation value (a Python or 0-d array scalar).
      train_values: training errors of the strip ending here ('pq' only).

    Returns:
      ``(state, stop)``. Once stopped, further calls return ``stop=True``. A NaN
      value counts as "no improvement" and never becomes ``best_value``.
    """
    if state.stopped:
      return state, True
    value = float(val_value)
    step = int(step)
    delta = self.min_delta if self.criterion == "patience" else 0.0
    # NaN never improves (and never becomes the best value).
    improved = not math.isnan(value) and (
        state.best_value is None or _better(value, state.best_value, self.mode, delta))
    new = state._replace(
        best_value=value if improved else state.best_value,
        best_step=step if improved else state.best_step,
        num_bad=0 if improved else state.num_bad + 1,
        num_up=(state.num_up + 1
                if state.last_value is not None and value > state.last_value else 0),
        last_value=value,
        num_updates=state.num_updates + 1,
    )
    stop = _CRITERIA[self.criterion](self, new, value, train_values)
    if stop and self.enabled:
      return new._replace(stopped=True, stop_step=step), True
    return new, False


def _better(value: float, best: float, mode: str, delta: float) -> bool:
  if mode == "min":
    return value < best - delta
  return value > best + delta


def _patience(es: EarlyStopping, state: EarlyStoppingState, value: float,
              train_values: Sequence[float]) -> bool:
  del value, train_values
  return state.num_bad >= es.patience and state.num_bad > 0


def _gl(es: EarlyStopping, state: EarlyStoppingState, value: float,
        train_values: Sequence[float]) -> bool:
  del train_values
  if state.best_value is None:
    return False
  return generalization_loss(value, state.best_value) > es.alpha


def _pq(es: EarlyStopping, state: EarlyStoppingState, value: float,
        train_values: Sequence[float]) -> bool:
  if not train_values:
    raise ValueError("criterion 'pq' needs train_values (the strip's training errors).")
  if state.best_value is None:
    return False
  strip = list(train_values)[-es.strip_length:]
  gl = generalization_loss(value, state.best_value)
  return _ratio(gl, training_progress(strip)) > es.alpha


def _up(es: EarlyStopping, state: EarlyStoppingState, value: float,
        train_values: Sequence[float]) -> bool:
  del value, train_values
  return state.num_up >= es.successive_strips


# criterion name -> (rule, state after bookkeeping, value, train_values) -> stop.
_CRITERIA: dict[str, Callable[..., bool]] = {
    "patience": _patience,
    "gl": _gl,
    "pq": _pq,
    "up": _up,
}


def default_config() -> ml_collections.ConfigDict:
  """The ``early_stopping.*`` config fields with their defaults (disabled)."""
  return ml_collections.ConfigDict({
      "enabled": False,
      "criterion": "patience",
      "patience": 10,
      "min_delta": 0.0,
      "mode": "min",
      "metric": "val_loss",
      "alpha": 5.0,
      "strip_length": 5,
      "successive_strips": 3,
      "restore_best": True,
  })


def from_config(cfg: Mapping[str, Any]) -> EarlyStopping:
  """Builds an ``EarlyStopping`` from a ConfigDict/Mapping (missing fields: defaults).

  Unknown fields raise ValueError. ``enabled=False`` gives a rule that tracks
  ``best_step`` but never stops.
  """
  if isinstance(cfg, ml_collections.ConfigDict):
    cfg = cfg.to_dict()
  fields = {f.name for f in dataclasses.fields(EarlyStopping)}
  unknown = set(cfg) - fields
  if unknown:
    raise ValueError(f"Unknown early_stopping fields {sorted(unknown)}; valid: {sorted(fields)}.")
  return EarlyStopping(**dict(cfg))
