r"""The main job's recipe in PyTorch, for the end-to-end benchmark (imports no JAX).

::

  python -m experiments.bench_torch --data=mnist1d.npz --out=result.json --eval_every=1000

``--data`` is an ``.npz`` with ``x_train, y_train, x_test, y_test`` (channels-last
``(N, 40, 1)`` float32, int labels) that ``experiments.benchmark`` writes from
``flaxopt.data.load('mnist1d')``, so both sides train on the same arrays. The models and the
loop are ``experiments/bench/torch_ref.py``'s.
"""

import json
import resource
import time

from absl import app
from absl import flags
import numpy as np

from experiments.bench import torch_ref

_DATA = flags.DEFINE_string("data", None, ".npz with x_train, y_train, x_test, y_test.")
_OUT = flags.DEFINE_string("out", "", "JSON result file ('' prints only).")
_MODEL = flags.DEFINE_enum("model", "cnn", sorted(torch_ref.MODELS), "MNIST-1D model.")
_STEPS = flags.DEFINE_integer("steps", 6000, "Training steps.", lower_bound=1)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 100, "Batch size.", lower_bound=1)
_LEARNING_RATE = flags.DEFINE_float("learning_rate", 1e-2, "Adam's learning rate.")
_EVAL_EVERY = flags.DEFINE_integer("eval_every", 1000, "Steps between test-set evaluations.",
                                   lower_bound=1)
_CHECKPOINT_EVERY = flags.DEFINE_integer("checkpoint_every", 3000, "Steps between checkpoints.",
                                         lower_bound=1)
_WORKDIR = flags.DEFINE_string("workdir", "", "Checkpoint directory ('' : a temporary one).")
_THREADS = flags.DEFINE_integer("threads", 0, "PyTorch threads (0: the cores available).")
_DEVICE = flags.DEFINE_string("device", "cpu", "PyTorch device.")
flags.mark_flags_as_required(["data"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  t_start = time.time()
  torch_ref.num_threads(_THREADS.value)
  with np.load(_DATA.value) as f:
    data = {k: f[k] for k in ("x_train", "y_train", "x_test", "y_test")}
  result = torch_ref.run_recipe(
      data, model=_MODEL.value, steps=_STEPS.value, batch_size=_BATCH_SIZE.value,
      learning_rate=_LEARNING_RATE.value, eval_every=_EVAL_EVERY.value,
      checkpoint_every=_CHECKPOINT_EVERY.value, workdir=_WORKDIR.value or None,
      device=_DEVICE.value)
  result["process_time"] = time.time() - t_start
  result["maxrss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
  text = json.dumps(result, indent=1)
  if _OUT.value:
    with open(_OUT.value, "w") as f:
      f.write(text)
  print(text)


if __name__ == "__main__":
  app.run(main)
