"""Tests for flaxopt.functional.augmentation: batch ops, pipelines and their registry."""

import itertools

from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np

import flaxopt.functional as F
from flaxopt import registry

_N, _K = 8, 8
_KEY = jax.random.PRNGKey(0)
_KEY2 = jax.random.PRNGKey(1)

# registry name, kwargs, works on 1D signals.
_OPS = (
    ("random_translate", dict(max_shift=2), True),
    ("random_crop", dict(padding=2, pad_mode="reflect"), True),
    ("horizontal_flip", dict(prob=0.5), False),
    ("gaussian_noise", dict(stddev=0.1), True),
    ("amplitude_scale", dict(low=0.5, high=1.5), True),
    ("cutout", dict(size=3), True),
    ("mixup", dict(alpha=0.4), True),
    ("cutmix", dict(alpha=1.0), True),
)
_X2D = (_N, 6, 6, 2)  # one shape for the executed tests, so eager compilations are shared
_X1D = (_N, 16, 2)


def _batch(shape, dtype=jnp.float32):
  # Positive values so that zero fill / cut boxes are recognisable.
  x = jax.random.uniform(jax.random.PRNGKey(42), shape, jnp.float32, 1.0, 2.0).astype(dtype)
  y = jax.nn.one_hot(jnp.arange(shape[0]) % _K, _K, dtype=dtype)
  return x, y


def _named_ops():
  return [(name, name, kw, is_1d) for name, kw, is_1d in _OPS]


class AugmentationPropertiesTest(chex.TestCase):

  @parameterized.named_parameters(*_named_ops())
  def test_shapes_and_dtypes_1d_2d(self, name, kw, is_1d):
    # Abstract evaluation (traces, no compilation): every dtype and layout.
    fn = registry.get("augment", name, **kw)
    shapes = (_X1D, _X2D) if is_1d else (_X2D,)
    for shape, dtype in itertools.product(shapes, (jnp.float32, jnp.bfloat16, jnp.float64)):
      with jax.enable_x64(dtype == jnp.float64):
        x = jax.ShapeDtypeStruct(shape, dtype)
        y = jax.ShapeDtypeStruct((_N, _K), dtype)
        out = jax.eval_shape(fn, _KEY, x, y)
        self.assertEqual((out[0].shape, out[0].dtype), (shape, dtype), (name, shape, dtype))
        self.assertEqual((out[1].shape, out[1].dtype), ((_N, _K), dtype), (name, shape, dtype))
    if not is_1d:
      with self.assertRaisesRegex(ValueError, "images"):
        jax.eval_shape(fn, _KEY, jax.ShapeDtypeStruct(_X1D, jnp.float32),
                       jax.ShapeDtypeStruct((_N, _K), jnp.float32))

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(*_named_ops())
  def test_deterministic_per_key_and_varies_across_keys(self, name, kw, is_1d):
    del is_1d
    fn = self.variant(registry.get("augment", name, **kw))
    x, y = _batch(_X2D)
    x1, y1 = fn(_KEY, x, y)
    chex.assert_tree_all_finite((x1, y1))
    chex.assert_trees_all_equal((x1, y1), fn(_KEY, x, y))  # same key, same result
    self.assertFalse(np.array_equal(x1, fn(_KEY2, x, y)[0]))
    self.assertFalse(np.array_equal(x1, x))
    np.testing.assert_allclose(np.asarray(y1).sum(-1), 1.0, rtol=1e-6)

  def test_grad_and_vmap(self):
    x, y = _batch(_X2D)
    xs = jnp.stack([x, 2 * x])
    for name, kw, _ in _OPS:
      fn = registry.get("augment", name, **kw)
      g = jax.grad(lambda v: fn(_KEY, v, y)[0].sum())(x)  # pylint: disable=cell-var-from-loop
      chex.assert_tree_all_finite(g)
      if name in ("mixup", "cutmix"):
        # Batch-level ops (they pair examples); vmapping Beta sampling costs ~3 s of
        # compilation, over this file's time budget.
        continue
      # vmap over inputs with a shared key: the same transform for both, so linear in x.
      out = jax.vmap(lambda v: fn(_KEY, v, y)[0])(xs)  # pylint: disable=cell-var-from-loop
      chex.assert_shape(out, xs.shape)
      if name not in ("gaussian_noise",):  # noise is affine, not linear
        np.testing.assert_allclose(out[1], 2 * out[0], rtol=1e-5, err_msg=name)


def _shifted(x, shift, fill=0.0):
  """numpy reference: out[j] = x[j - shift] per spatial axis, fill outside."""
  out = np.full_like(x, fill)
  src = tuple(slice(max(0, -s), x.shape[d] - max(0, s)) for d, s in enumerate(shift))
  dst = tuple(slice(max(0, s), x.shape[d] - max(0, -s)) for d, s in enumerate(shift))
  out[dst] = x[src]
  return out


class AugmentationMathTest(parameterized.TestCase):

  @parameterized.named_parameters(("1d", _X1D), ("2d", _X2D))
  def test_translate_is_a_zero_filled_shift(self, shape):
    x, _ = _batch(shape)
    out, _ = F.random_translate(_KEY, x, None, max_shift=2)
    x, out = np.asarray(x), np.asarray(out)
    nd = x.ndim - 2
    shifts_seen = set()
    for i in range(_N):
      matches = [s for s in itertools.product(range(-2, 3), repeat=nd)
                 if np.array_equal(out[i], _shifted(x[i], s + (0,)))]
      self.assertLen(matches, 1, f"example {i}")
      shifts_seen.add(matches[0])
    self.assertGreater(len(shifts_seen), 1)  # shifts vary across examples

  def test_random_crop_reflect_is_a_window_of_the_padded_image(self):
    x, _ = _batch(_X2D)
    out, _ = F.random_crop(_KEY, x, None, padding=2, pad_mode="reflect")
    padded = np.pad(np.asarray(x), ((0, 0), (2, 2), (2, 2), (0, 0)), mode="reflect")
    for i in range(_N):
      ok = any(np.array_equal(out[i], padded[i, a:a + 6, b:b + 6])
               for a in range(5) for b in range(5))
      self.assertTrue(ok, f"example {i}")

  def test_flip(self):
    x, _ = _batch(_X2D)
    once, _ = F.horizontal_flip(_KEY, x)
    twice, _ = F.horizontal_flip(_KEY, once)
    chex.assert_trees_all_equal(twice, x)
    flipped = [np.array_equal(once[i], x[i, :, ::-1]) for i in range(_N)]
    kept = [np.array_equal(once[i], x[i]) for i in range(_N)]
    self.assertTrue(all(f or k for f, k in zip(flipped, kept)))
    self.assertTrue(any(flipped) and any(kept))
    chex.assert_trees_all_equal(F.horizontal_flip(_KEY, x, prob=1.0)[0], x[:, :, ::-1])
    with self.assertRaisesRegex(ValueError, "images"):
      F.horizontal_flip(_KEY, jnp.ones((2, 8, 1)))

  def test_noise_and_amplitude_statistics(self):
    x, _ = _batch(_X2D)
    noisy, _ = F.gaussian_noise(_KEY, x, stddev=0.3)
    d = np.asarray(noisy - x)
    self.assertAlmostEqual(d.std(), 0.3, delta=0.3 * 5 / np.sqrt(2 * d.size))
    self.assertAlmostEqual(d.mean(), 0.0, delta=0.3 * 5 / np.sqrt(d.size))
    scaled, _ = F.amplitude_scale(_KEY, x, low=0.5, high=1.5)
    ratio = np.asarray(scaled / x).reshape(_N, -1)
    np.testing.assert_allclose(ratio, ratio[:, :1] * np.ones_like(ratio), rtol=1e-5)
    self.assertTrue(np.all((ratio >= 0.5) & (ratio <= 1.5)))
    self.assertGreater(np.ptp(ratio[:, 0]), 0)

  def test_cutout_zeroes_one_clipped_box_across_channels(self):
    size = 3
    x, _ = _batch(_X2D)
    out, _ = F.cutout(_KEY, x, size=size)
    zero = np.asarray(out) == 0
    np.testing.assert_array_equal(zero[..., 0], zero[..., 1])
    kept = ~zero
    np.testing.assert_array_equal(np.asarray(out)[kept], np.asarray(x)[kept])
    for i in range(_N):
      rows, cols = np.nonzero(zero[i, ..., 0])
      self.assertGreater(rows.size, 0)
      # The zeros form a box (rows x cols) of side <= size.
      h, w = np.ptp(rows) + 1, np.ptp(cols) + 1
      self.assertEqual(rows.size, h * w)
      self.assertLessEqual(max(h, w), size)
    chex.assert_trees_all_equal(F.cutout(_KEY, x, size=size, prob=0.0)[0], x)

  @parameterized.named_parameters(("per_example", True), ("per_batch", False))
  def test_mixup_mixes_pairs_and_labels(self, per_example):
    x, y = _batch(_X2D)  # labels 0..N-1: the partner is readable from y'
    xm, ym = F.mixup(_KEY, x, y, alpha=0.4, per_example=per_example)
    xm, ym, x = np.asarray(xm), np.asarray(ym), np.asarray(x)
    np.testing.assert_allclose(ym.sum(-1), 1.0, rtol=1e-6)
    lams = []
    for i in range(_N):
      lam = ym[i, i]
      others = np.delete(np.arange(_K), i)
      j = others[np.argmax(ym[i, others])] if lam < 1 else i
      np.testing.assert_allclose(xm[i], lam * x[i] + (1 - lam) * x[j], rtol=1e-5, atol=1e-6)
      if j != i:
        lams.append(lam)
    self.assertTrue(lams)
    self.assertEqual(len(set(np.round(lams, 6))) == 1, not per_example)

  @parameterized.named_parameters(("1d", _X1D), ("2d", _X2D))
  def test_cutmix_label_weight_is_the_pasted_area(self, shape):
    # Example i is filled with the value i, so pasted pixels are visible.
    x = jnp.broadcast_to(jnp.arange(_N, dtype=jnp.float32).reshape((_N,) + (1,) * (len(shape) - 1)),
                         shape)
    y = jax.nn.one_hot(jnp.arange(_N), _K)
    xm, ym = F.cutmix(_KEY, x, y, alpha=1.0)
    xm, ym = np.asarray(xm), np.asarray(ym)
    np.testing.assert_allclose(ym.sum(-1), 1.0, rtol=1e-6)
    pasted = (xm != np.asarray(x)).reshape(_N, -1).mean(-1)
    np.testing.assert_allclose(1 - ym[np.arange(_N), np.arange(_N)], pasted, atol=1e-6)
    self.assertGreater(pasted.max(), 0)

  @parameterized.named_parameters(
      ("translate_negative", "random_translate", dict(max_shift=-1)),
      ("translate_bad_tuple", "random_translate", dict(max_shift=(1, 2, 3))),
      ("crop_bad_mode", "random_crop", dict(padding=1, pad_mode="mirror")),
      ("crop_reflect_too_big", "random_crop", dict(padding=6, pad_mode="reflect")),
      ("flip_prob", "horizontal_flip", dict(prob=1.5)),
      ("noise_negative", "gaussian_noise", dict(stddev=-0.1)),
      ("amplitude_order", "amplitude_scale", dict(low=1.2, high=0.8)),
      ("cutout_size", "cutout", dict(size=-2)),
      ("mixup_alpha", "mixup", dict(alpha=0.0)),
      ("cutmix_alpha", "cutmix", dict(alpha=-1.0)),
  )
  def test_bad_values_raise(self, name, kw):
    fn = registry.get("augment", name, **kw)
    x, y = _batch(_X2D)
    with self.assertRaises(ValueError):
      fn(_KEY, x, y)

  @parameterized.parameters("mixup", "cutmix")
  def test_mixing_needs_labels(self, name):
    with self.assertRaisesRegex(ValueError, "labels"):
      registry.get("augment", name)(_KEY, jnp.ones((2, 4, 1)), None)


class PipelineTest(parameterized.TestCase):

  def test_pipeline_composes_in_order_with_split_keys(self):
    x, y = _batch(_X2D)
    pipe = F.augment_pipeline([("random_crop", {"padding": 1}), ("horizontal_flip", {}),
                               ("mixup", {"alpha": 0.2})])
    k1, k2, k3 = jax.random.split(_KEY, 3)
    ex, ey = F.random_crop(k1, x, y, padding=1)
    ex, ey = F.horizontal_flip(k2, ex, ey)
    ex, ey = F.mixup(k3, ex, ey, alpha=0.2)
    chex.assert_trees_all_close(pipe(_KEY, x, y), (ex, ey), rtol=1e-6)

  def test_from_config(self):
    x, y = _batch(_X2D)
    cfg = {"ops": "", **F.augment_defaults()}
    self.assertIs(F.augment_pipeline_from_config(cfg)(_KEY, x, y)[0], x)  # '' -> identity
    cfg["ops"] = " random_crop , cutout"
    cfg["cutout"]["size"] = 2
    got = F.augment_pipeline_from_config(cfg)(_KEY, x, y)
    want = F.augment_pipeline([("random_crop", {}), ("cutout", {"size": 2})])(_KEY, x, y)
    chex.assert_trees_all_equal(got, want)
    # A plain mapping without sub-dicts uses the defaults.
    plain = F.augment_pipeline_from_config({"ops": "random_crop,cutout", "cutout": {"size": 2}})
    chex.assert_trees_all_equal(plain(_KEY, x, y), want)

  @parameterized.named_parameters(
      ("unknown_op", [("rotate", {})], "rotate"),
      ("regularizer_is_not_an_op", [("dropout", {"rate": 0.5})], "dropout"),
      ("unknown_kwarg", [("cutout", {"radius": 3})], "radius"),
  )
  def test_bad_specs_raise(self, specs, pattern):
    with self.assertRaisesRegex(ValueError, pattern):
      F.augment_pipeline(specs)

  def test_defaults_are_the_keyword_defaults_of_every_op(self):
    cfg = F.augment_defaults()
    self.assertEqual(cfg["cutout"], {"size": 8, "prob": 1.0, "fill": 0.0})
    self.assertEqual(set(cfg.keys()), set(registry.names("augment")))
