"""Tests for flaxopt.nn normalization modules: flax parity, running statistics, multi-device."""

from absl.testing import parameterized
import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec
import numpy as np
import pytest

import flaxopt.functional as F
import flaxopt.nn as fnn
from flaxopt import registry

KEY = jax.random.key(0)
EPS = 1e-5


def _batches(num, shape, seed=0):
  rng = np.random.default_rng(seed)
  return [(rng.normal(size=shape) * (i + 1) + i).astype(np.float32) for i in range(num)]


def _train_step(module, variables, x, **kw):
  return module.apply(variables, x, use_running_average=False, mutable=["batch_stats"], **kw)


class BatchNormTest(chex.TestCase):

  def test_matches_flax_batch_norm_over_steps(self):
    ours = fnn.BatchNorm(momentum=0.9)
    theirs = nn.BatchNorm(momentum=0.9, epsilon=EPS, use_fast_variance=False)
    batches = _batches(3, (6, 2, 2, 3))
    variables = ours.init(KEY, batches[0], use_running_average=False)
    variables = {"params": {"scale": jnp.array([0.5, 1.0, 2.0]), "bias": jnp.array([1.0, 0, -1])},
                 "batch_stats": variables["batch_stats"]}
    flax_variables = variables
    step = jax.jit(lambda v, x: _train_step(ours, v, x))
    for x in batches:
      y, stats = step(variables, x)
      y_ref, stats_ref = theirs.apply(flax_variables, x, use_running_average=False,
                                      mutable=["batch_stats"])
      chex.assert_trees_all_close(y, y_ref, atol=1e-5)
      chex.assert_trees_all_close(stats, stats_ref, atol=1e-5)
      variables = {**variables, **stats}
      flax_variables = {**flax_variables, **stats_ref}
    chex.assert_trees_all_close(ours.apply(variables, batches[0], use_running_average=True),
                                theirs.apply(flax_variables, batches[0],
                                             use_running_average=True), atol=1e-5)

  @parameterized.named_parameters(("biased", False), ("unbiased_like_pytorch", True))
  def test_running_statistics_rule(self, unbiased):
    """running = m * running + (1 - m) * batch, from mean 0 / var 1, over 3 steps."""
    momentum = 0.8
    bn = fnn.BatchNorm(momentum=momentum, unbiased_running_var=unbiased)
    batches = _batches(3, (5, 4), seed=1)
    variables = bn.init(KEY, batches[0], use_running_average=False)
    # init computes batch statistics for the output but leaves the running ones alone.
    chex.assert_trees_all_close(variables["batch_stats"],
                                {"mean": np.zeros(4), "var": np.ones(4)})
    mean, var = np.zeros(4), np.ones(4)
    for x in batches:
      y, stats = _train_step(bn, variables, x)
      variables = {**variables, **stats}
      batch_var = x.var(0, ddof=1 if unbiased else 0)
      mean = momentum * mean + (1 - momentum) * x.mean(0)
      var = momentum * var + (1 - momentum) * batch_var
      # Training output uses the batch statistics (biased variance) either way.
      chex.assert_trees_all_close(y, (x - x.mean(0)) / np.sqrt(x.var(0) + EPS), atol=1e-5)
    chex.assert_trees_all_close(variables["batch_stats"], {"mean": mean, "var": var}, atol=1e-5)
    # Evaluation uses the running statistics and changes nothing.
    x = batches[0]
    y, stats = bn.apply(variables, x, use_running_average=True, mutable=["batch_stats"])
    chex.assert_trees_all_close(y, (x - mean) / np.sqrt(var + EPS), atol=1e-5)
    chex.assert_trees_all_close(stats["batch_stats"], variables["batch_stats"])

  def test_use_running_average_field_or_argument(self):
    x = _batches(1, (4, 3))[0]
    variables = fnn.BatchNorm(use_running_average=True).init(KEY, x)
    y_field = fnn.BatchNorm(use_running_average=True).apply(variables, x)
    y_arg = fnn.BatchNorm().apply(variables, x, use_running_average=True)
    chex.assert_trees_all_close(y_field, y_arg)
    with pytest.raises(ValueError):
      fnn.BatchNorm(use_running_average=True).apply(variables, x, use_running_average=False)
    with pytest.raises(ValueError, match="momentum must lie in"):
      fnn.BatchNorm(momentum=1.5).init(KEY, x, use_running_average=True)

  def test_bfloat16_keeps_dtype(self):
    x = jnp.asarray(_batches(1, (8, 3))[0], jnp.bfloat16)
    bn = fnn.BatchNorm()
    variables = bn.init(KEY, x, use_running_average=False)
    y, stats = _train_step(bn, variables, x)
    self.assertEqual(y.dtype, jnp.bfloat16)
    self.assertEqual(stats["batch_stats"]["mean"].dtype, jnp.float32)


def _pmapped_step(module):
  return jax.pmap(lambda v, x, mask: _train_step(module, v, x, mask=mask),
                  axis_name="batch", in_axes=(None, 0, 0))


@pytest.mark.multidevice
@pytest.mark.timeout(120)
@pytest.mark.parametrize("counts", [(6, 6, 6, 6), (6, 3, 1, 5)])
def test_pmap_batch_norm_equals_global_batch(counts):
  """Each device holds counts[d] real rows (padded to 6 with junk): global statistics."""
  devices = jax.local_device_count()
  assert devices == 4, "tests/conftest.py forces 4 CPU devices"
  rng = np.random.default_rng(3)
  x = (rng.normal(size=(devices, 6, 5)) * np.arange(1, 5)[:, None, None]
       + np.arange(4)[:, None, None]).astype(np.float32)  # devices differ in mean and scale
  mask = np.arange(6)[None, :] < np.array(counts)[:, None]
  x = np.where(mask[..., None], x, 1e3).astype(np.float32)  # junk in the padded rows
  module = fnn.BatchNorm(axis_name="batch", momentum=0.5, unbiased_running_var=True)
  variables = module.init(KEY, x[0], use_running_average=True)
  y, stats = _pmapped_step(module)(variables, x, mask)

  real = x[mask]  # the concatenated global batch, (sum(counts), 5)
  y_ref, stats_ref = _train_step(fnn.BatchNorm(momentum=0.5, unbiased_running_var=True),
                                 variables, real)
  chex.assert_trees_all_close(np.asarray(y)[mask], y_ref, atol=1e-5)
  for d in range(devices):  # every device ends with the same, global, running statistics
    chex.assert_trees_all_close(jax.tree.map(lambda a: a[d], stats), stats_ref, atol=1e-5)
  if len(set(counts)) > 1:  # A mean of per-device means would be a different (wrong) answer.
    mean_of_means = np.mean([x[d, :c].mean(0) for d, c in enumerate(counts)], axis=0)
    assert np.abs(mean_of_means - real.mean(0)).max() > 0.1


def test_init_does_not_reduce_across_the_mapped_axis():
  """As in flax, init uses the local batch only: it runs outside any mapped axis, and under
  a mapped axis each member's init output is its own local normalization, while apply
  (training) uses the statistics of all members."""
  x = np.stack(_batches(2, (6, 5), seed=6))  # the members differ in mean and scale
  module = fnn.BatchNorm(axis_name="batch")
  y_init, variables = module.init_with_output(KEY, x[0], use_running_average=False)
  local = lambda b: (b - b.mean(0)) / np.sqrt(b.var(0) + EPS)
  chex.assert_trees_all_close(y_init, local(x[0]), atol=1e-5)
  chex.assert_trees_all_equal(variables, fnn.BatchNorm().init(KEY, x[0],
                                                              use_running_average=False))
  y_inits, _ = jax.jit(jax.vmap(
      lambda b: module.init_with_output(KEY, b, use_running_average=False),
      axis_name="batch"))(x)
  for m in range(2):
    chex.assert_trees_all_close(y_inits[m], local(x[m]), atol=1e-5)
  y_train, _ = jax.jit(jax.vmap(lambda b: _train_step(module, variables, b),
                                axis_name="batch"))(x)
  chex.assert_trees_all_close(np.asarray(y_train).reshape(12, 5),
                              local(x.reshape(12, 5)), atol=1e-5)


@pytest.mark.multidevice
@pytest.mark.timeout(120)
def test_jit_with_sharded_batch_is_global_without_axis_name():
  mesh = Mesh(np.array(jax.devices()[:4]), ("batch",))
  x = _batches(1, (8, 5), seed=4)[0]
  x_sharded = jax.device_put(x, NamedSharding(mesh, PartitionSpec("batch")))
  assert len({s.device for s in x_sharded.addressable_shards}) == 4
  module = fnn.BatchNorm(momentum=0.5)
  variables = module.init(KEY, x, use_running_average=True)
  step = jax.jit(lambda v, x: _train_step(module, v, x))
  y, stats = step(variables, x_sharded)
  y_ref, stats_ref = _train_step(module, variables, x)
  chex.assert_trees_all_close(y, y_ref, atol=1e-5)
  chex.assert_trees_all_close(stats, stats_ref, atol=1e-5)
  chex.assert_trees_all_close(y, (x - x.mean(0)) / np.sqrt(x.var(0) + EPS), atol=1e-5)


X = np.random.default_rng(5).normal(size=(2, 3, 4, 8)).astype(np.float32) * 3 + 1
PARAMS = {"params": {"scale": np.linspace(0.5, 2, 8).astype(np.float32),
                     "bias": np.linspace(-1, 1, 8).astype(np.float32)}}


class StatelessNormTest(chex.TestCase):

  @parameterized.named_parameters(
      ("layer", fnn.LayerNorm(), nn.LayerNorm(epsilon=EPS, use_fast_variance=False)),
      ("group", fnn.GroupNorm(num_groups=4),
       nn.GroupNorm(num_groups=4, epsilon=EPS, use_fast_variance=False)),
      ("group_size", fnn.GroupNorm(group_size=2),
       nn.GroupNorm(num_groups=4, epsilon=EPS, use_fast_variance=False)),
      ("instance", fnn.InstanceNorm(),
       nn.GroupNorm(num_groups=8, epsilon=EPS, use_fast_variance=False)),
  )
  def test_matches_flax(self, ours, reference):
    self.assertEqual(jax.tree.map(jnp.shape, ours.init(KEY, X)),
                     jax.tree.map(jnp.shape, PARAMS))
    chex.assert_trees_all_close(ours.apply(PARAMS, X, use_running_average=True),
                                reference.apply(PARAMS, X), atol=1e-5)

  def test_special_cases_of_group_norm(self):
    x2 = X.reshape(-1, 8)
    pairs = jax.jit(lambda x, x2: (
        (fnn.GroupNorm(num_groups=1).apply(PARAMS, x2), fnn.LayerNorm().apply(PARAMS, x2)),
        (fnn.GroupNorm(num_groups=8).apply(PARAMS, x), fnn.InstanceNorm().apply(PARAMS, x))))(
            X, x2)
    for group, special in pairs:
      chex.assert_trees_all_close(group, special, atol=1e-6)

  def test_group_norm_arguments(self):
    with pytest.raises(ValueError, match="not both"):
      fnn.GroupNorm(num_groups=2, group_size=4).init(KEY, X)
    with pytest.raises(ValueError, match="group_size=3 does not divide the 8 channels"):
      fnn.GroupNorm(group_size=3).init(KEY, X)
    with pytest.raises(ValueError, match="num_groups=32 does not divide the 8 channels"):
      fnn.GroupNorm().init(KEY, X)  # default: 32 groups


class WeightNormTest(chex.TestCase):

  def test_dense_is_reparametrized(self):
    x = X.reshape(-1, 8)
    module = fnn.WeightNorm(nn.Dense(3))
    variables = module.init(KEY, x)
    params = variables["params"]
    self.assertEqual(jax.tree.map(jnp.shape, params), {"v": (8, 3), "g": (3,), "bias": (3,)})
    # Default init: g = ||v|| so w = v, the wrapped layer's own initial kernel.
    chex.assert_trees_all_close(params["g"], np.linalg.norm(params["v"], axis=0), rtol=1e-6)
    params = {"v": params["v"], "g": jnp.array([1.0, -2.0, 0.5]), "bias": jnp.array([0.0, 1, 2])}
    v = np.asarray(params["v"], np.float64)
    w = v / np.linalg.norm(v, axis=0) * np.array([1.0, -2.0, 0.5])
    chex.assert_trees_all_close(module.apply({"params": params}, x),
                                (x @ w + np.array([0.0, 1, 2])).astype(np.float32), atol=1e-5)
    grads = jax.grad(lambda p: jnp.sum(module.apply({"params": p}, x) ** 2))(params)
    chex.assert_tree_all_finite(grads)
    # The gradient with respect to v is orthogonal to v (Salimans & Kingma eq. 4).
    chex.assert_trees_all_close(jnp.sum(grads["v"] * params["v"], 0), jnp.zeros(3), atol=1e-3)

  def test_data_dependent_init_conv(self):
    module = fnn.WeightNorm(nn.Conv(4, (3, 3)), data_init=True)
    variables = module.init(KEY, X)
    self.assertEqual(variables["params"]["v"].shape, (3, 3, 8, 4))
    y = module.apply(variables, X)
    chex.assert_shape(y, (2, 3, 4, 4))
    chex.assert_trees_all_close(y.mean((0, 1, 2)), jnp.zeros(4), atol=1e-5)
    chex.assert_trees_all_close(y.std((0, 1, 2)), jnp.ones(4), atol=1e-3)

  def test_rejects_layers_without_a_kernel(self):
    with pytest.raises(ValueError, match="WeightNorm wraps layers whose params are 'kernel'"):
      fnn.WeightNorm(nn.LayerNorm()).init(KEY, X)


@pytest.mark.parametrize("name, kwargs, reference", [
    ("none", {}, lambda x, p: x),
    ("batch", {}, lambda x, p: F.batch_norm(x, p["scale"], p["bias"])),
    ("layer", {}, lambda x, p: F.layer_norm(x, p["scale"], p["bias"])),
    ("instance", {}, lambda x, p: F.instance_norm(x, p["scale"], p["bias"])),
    ("group", {"num_groups": 2}, lambda x, p: F.group_norm(x, 2, p["scale"], p["bias"])),
    ("weight", {"layer": nn.Dense(5)},
     lambda x, p: x @ F.weight_norm(p["v"], p["g"]) + p["bias"]),
])
def test_registry_builds_every_norm(name, kwargs, reference):
  assert registry.names("norm") == sorted(["none", "batch", "layer", "instance", "group",
                                           "weight"])
  module = registry.get("norm", name, **kwargs)
  variables = module.init(KEY, X, use_running_average=False)
  y, _ = module.apply(variables, X, use_running_average=False, mutable=["batch_stats"])
  chex.assert_trees_all_close(y, reference(X, variables.get("params", {})), atol=1e-5)
  assert registry.get("norm", name, **kwargs) is not module  # a fresh instance each time
