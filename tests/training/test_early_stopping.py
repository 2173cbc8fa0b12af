"""Tests for flaxopt.training.early_stopping on hand-made validation curves."""

import json
import math

from absl.testing import parameterized
import ml_collections

from flaxopt.training import early_stopping as es

# One validation curve (errors at strip ends) and the training errors of each strip (k=3):
#   eval  E_va   train strip          GL      P_3                         GL/P_3
#   0     1.00   [3, 2, 1.5]          0       1000*(6.5/4.5-1)  = 444.4   0
#   1     0.80   [1.4, 1.3, 1.2]      0       (best)                      0
#   2     0.82   [1.15, 1.1, 1.05]    2.5     1000*(3.3/3.15-1) = 47.62   0.0525
#   3     0.84   [1.04, 1.03, 1.02]   5.0     1000*(3.09/3.06-1)= 9.804   0.510
#   4     0.83   [1.01, 1.005, 1.0]   3.75    1000*(3.015/3-1)  = 5.0     0.75
#   5     0.85   [1.0, 1.0, 1.0]      6.25    0                           inf
_VAL = (1.0, 0.8, 0.82, 0.84, 0.83, 0.85)
_TRAIN = ((3.0, 2.0, 1.5), (1.4, 1.3, 1.2), (1.15, 1.1, 1.05), (1.04, 1.03, 1.02),
          (1.01, 1.005, 1.0), (1.0, 1.0, 1.0))

# name, EarlyStopping kwargs, validation curve, index where it stops (None: never), best index.
_CASES = (
    ("patience", dict(patience=3), _VAL, 4, 1),
    ("patience_one", dict(patience=1), _VAL, 2, 1),
    ("patience_min_delta", dict(patience=2, min_delta=0.1), (1.0, 0.95, 0.85, 0.84, 0.8, 0.7),
     4, 2),
    ("patience_max", dict(patience=2, mode="max"), (0.5, 0.6, 0.7, 0.69, 0.7, 0.65), 4, 2),
    ("gl_4", dict(criterion="gl", alpha=4.0), _VAL, 3, 1),
    ("gl_6", dict(criterion="GL", alpha=6.0), _VAL, 5, 1),
    ("gl_never", dict(criterion="gl", alpha=10.0), _VAL, None, 1),
    ("pq_0.6", dict(criterion="pq", alpha=0.6, strip_length=3), _VAL, 4, 1),
    ("pq_0.4", dict(criterion="pq", alpha=0.4, strip_length=3), _VAL, 3, 1),
    ("up_2", dict(criterion="up", successive_strips=2), _VAL, 3, 1),
    ("up_1", dict(criterion="up", successive_strips=1), _VAL, 2, 1),
    ("up_reset", dict(criterion="up", successive_strips=2), (1.0, 0.9, 0.95, 0.93, 0.94, 0.96),
     5, 1),
    ("disabled", dict(patience=1, enabled=False), _VAL, None, 1),
    ("nan_never_best", dict(patience=2), (math.nan, 1.0, 1.1, 1.2), 3, 1),
    ("gl_nan", dict(criterion="gl", alpha=4.0), (math.nan, 0.8, math.nan, 0.84), 3, 1),
)


def _run(rule, curve, state=None, start=0):
  state = rule.init() if state is None else state
  for i in range(start, len(curve)):
    state, stop = rule.update(state, 100 * (i + 1), curve[i], train_values=_TRAIN[i])
    if stop:
      return state, i
  return state, None


class EarlyStoppingTest(parameterized.TestCase):

  @parameterized.named_parameters(*_CASES)
  def test_stops_at_known_step(self, kwargs, curve, stop_index, best_index):
    state, index = _run(es.EarlyStopping(**kwargs), curve)
    self.assertEqual(index, stop_index)
    self.assertEqual(state.stopped, stop_index is not None)
    self.assertEqual(state.best_step, 100 * (best_index + 1))
    self.assertEqual(state.best_value, curve[best_index])
    if stop_index is not None:
      self.assertEqual(state.stop_step, 100 * (stop_index + 1))

  @parameterized.named_parameters(*_CASES)
  def test_json_round_trip_resume_gives_same_result(self, kwargs, curve, stop_index, best_index):
    del best_index
    rule = es.EarlyStopping(**kwargs)
    state, _ = _run(rule, curve[:2])
    restored = es.EarlyStoppingState.from_dict(json.loads(json.dumps(state.to_dict())))
    self.assertEqual(restored, state)
    resumed, index = _run(rule, curve, restored, start=2)
    self.assertEqual(index, stop_index)
    self.assertEqual(resumed, _run(rule, curve)[0])

  def test_stays_stopped(self):
    rule = es.EarlyStopping(patience=1)
    state, _ = _run(rule, _VAL)
    state2, stop = rule.update(state, 10_000, 0.0)
    self.assertTrue(stop)
    self.assertEqual(state2, state)

  def test_pq_uses_the_last_strip_length_train_values(self):
    rule = es.EarlyStopping(criterion="pq", alpha=0.6, strip_length=3)
    state = rule.init()
    state, _ = rule.update(state, 1, 0.8, [1.0])
    # Last 3 of the 5 values: P_3 = 5.0, GL = 3.75 -> 0.75 > 0.6. All 5 would give P = 400.
    _, stop = rule.update(state, 2, 0.83, [5.0, 3.0, 1.01, 1.005, 1.0])
    self.assertTrue(stop)
    with self.assertRaisesRegex(ValueError, "train_values"):
      rule.update(state, 2, 0.83, ())

  @parameterized.named_parameters(
      ("gl", lambda: es.generalization_loss(0.84, 0.8), 5.0),
      ("gl_zero_best", lambda: es.generalization_loss(0.1, 0.0), math.inf),
      ("gl_both_zero", lambda: es.generalization_loss(0.0, 0.0), 0.0),
      ("progress", lambda: es.training_progress([1.01, 1.005, 1.0]), 5.0),
      ("progress_flat", lambda: es.training_progress([2.0, 2.0]), 0.0),
  )
  def test_prechelt_quantities(self, fn, expected):
    self.assertAlmostEqual(fn(), expected, places=9)

  def test_config_round_trip(self):
    cfg = es.default_config()
    self.assertFalse(cfg.enabled)
    rule = es.from_config(cfg)
    self.assertFalse(rule.enabled)
    self.assertEqual((rule.metric, rule.restore_best), ("val_loss", True))
    cfg.criterion, cfg.enabled = "up", True
    self.assertEqual(es.from_config(cfg).criterion, "up")
    self.assertEqual(es.from_config({"patience": 3}).patience, 3)
    with self.assertRaisesRegex(ValueError, "bogus"):
      es.from_config(ml_collections.ConfigDict({"bogus": 1}))

  @parameterized.named_parameters(
      ("criterion", dict(criterion="when"), "when"),
      ("mode", dict(mode="up"), "mode"),
      ("prechelt_max", dict(criterion="gl", mode="max"), "mode"),
      ("patience", dict(patience=-1), "patience"),
      ("strip", dict(strip_length=0), "strip_length"),
      ("strips", dict(successive_strips=0), "successive_strips"),
      ("alpha", dict(alpha=-1.0), "alpha"),
      ("min_delta", dict(min_delta=-0.1), "min_delta"),
  )
  def test_bad_arguments_raise(self, kwargs, pattern):
    with self.assertRaisesRegex(ValueError, pattern):
      es.EarlyStopping(**kwargs)

  def test_prechelt_rejects_negative_errors(self):
    rule = es.EarlyStopping(criterion="gl")
    with self.assertRaisesRegex(ValueError, "non-negative"):
      rule.update(rule.init(), 1, -0.5)
