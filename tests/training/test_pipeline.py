"""Input pipeline: data order is a pure function of (seed, step); batches sharded on device."""

import chex
import jax
import numpy as np
import pytest

from flaxopt.data import pipeline

N, BATCH = 103, 12  # 103 % 12 = 7 examples dropped per epoch


def _data(n=N):
  x = np.arange(n * 3, dtype=np.float32).reshape(n, 3, 1)
  return x, np.arange(n, dtype=np.int32) % 10


def test_permutation_is_a_pure_function_of_seed_and_epoch():
  a = pipeline.epoch_permutation(0, 1, N)
  np.testing.assert_array_equal(a, np.random.default_rng((0, 1)).permutation(N))
  np.testing.assert_array_equal(np.sort(a), np.arange(N))
  assert not np.array_equal(a, pipeline.epoch_permutation(1, 1, N))  # seed matters
  assert not np.array_equal(a, pipeline.epoch_permutation(0, 2, N))  # epoch matters


def test_batches_cover_an_epoch_and_drop_the_remainder():
  spe = pipeline.steps_per_epoch(N, BATCH)
  assert spe == N // BATCH == 8
  for epoch in (0, 3):
    rows = np.concatenate([pipeline.batch_indices(5, epoch * spe + i, N, BATCH)
                           for i in range(spe)])
    perm = pipeline.epoch_permutation(5, epoch, N)
    np.testing.assert_array_equal(rows, perm[:spe * BATCH])  # last N % BATCH dropped
    assert len(set(rows.tolist())) == spe * BATCH


@pytest.mark.parametrize("batch_size,num_devices,match", [
    (10, 4, "batch_size 10 .* number of devices 4"),
    (0, 1, "batch_size must be positive, got 0"),
    (-4, 4, "got -4"),
])
def test_bad_batch_sizes(batch_size, num_devices, match):
  with pytest.raises(ValueError, match=match):
    pipeline.check_batch_size(batch_size, num_devices)


def test_batch_larger_than_dataset():
  with pytest.raises(ValueError, match="batch_size 200 is larger than the training set"):
    pipeline.steps_per_epoch(N, 200)


@pytest.mark.multidevice
@pytest.mark.timeout(120)
def test_jit_batches_are_gathered_and_sharded_over_the_mesh():
  x, y = _data()
  pipe = pipeline.Pipeline(x, y, batch_size=BATCH, seed=3, parallel="jit")
  assert pipe.num_devices == jax.device_count() == 4
  for step in (0, 7, 8, 50):  # 8 = first step of epoch 1
    batch = pipe.batch(step)
    idx = pipeline.batch_indices(3, step, N, BATCH)
    np.testing.assert_array_equal(np.asarray(batch["x"]), x[idx])
    np.testing.assert_array_equal(np.asarray(batch["y"]), y[idx])
    assert batch["x"].sharding.spec == jax.sharding.PartitionSpec("data")
    chex.assert_shape(batch["x"].addressable_shards[0].data, (BATCH // 4, 3, 1))


@pytest.mark.timeout(120)
def test_pmap_batches_have_a_device_axis():
  x, y = _data()
  pipe = pipeline.Pipeline(x, y, batch_size=BATCH, seed=3, parallel="pmap")
  batch = pipe.batch(9)
  idx = pipeline.batch_indices(3, 9, N, BATCH)
  chex.assert_shape(batch["x"], (4, BATCH // 4, 3, 1))
  np.testing.assert_array_equal(np.asarray(batch["y"]).reshape(-1), y[idx])


def test_pipeline_rejects_indivisible_batch():
  x, y = _data()
  with pytest.raises(ValueError, match="batch_size 10 is not divisible by the number of "
                                       "devices 4"):
    pipeline.Pipeline(x, y, batch_size=10, seed=0, parallel="jit")


def test_eval_chunks_pad_with_zero_mask():
  x, y = _data(10)
  chunks = pipeline.shard_eval_set(x, y, chunk_size=8, parallel="jit")
  assert len(chunks) == 2
  np.testing.assert_array_equal(np.asarray(chunks[1]["mask"]), [1, 1, 0, 0, 0, 0, 0, 0])
  np.testing.assert_array_equal(np.asarray(chunks[1]["y"])[:2], y[8:])
