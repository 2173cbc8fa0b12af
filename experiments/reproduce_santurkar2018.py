r"""Reproduces Santurkar, Tsipras, Ilyas & Madry 2018, "How does batch normalization help
optimization?" (Sec. 3.1, Fig. 4a: BatchNorm makes the loss landscape smoother).

Claim (fixed before the run): the range (max - min) of the loss along the gradient direction,
at steps of 0.05-0.4 x lr as in the paper, is at least 1.5x smaller with BatchNorm, over 3
seeds (the range averaged over training, then over seeds).

Ours: 4-hidden-layer ReLU MLP (width 64) with and without BatchNorm (batch statistics),
SGD at lr 0.1, batch 128, on MNIST-1D; every 10 steps the range of
``L(theta - s g)`` for 8 values of ``s`` in [0.05, 0.4] * lr on the current batch
(``flaxopt.curvature.loss_landscape``).

  python -m experiments.reproduce_santurkar2018 --workdir=/tmp/santurkar [--publish]

Writes ``<workdir>/santurkar2018.json``; exits 1 when the claim fails. Recorded: the claim
fails here, ratio 0.71 at lr 0.1 and 0.70 at lr 0.4 (BatchNorm gives the larger range).
"""

from absl import app
from absl import flags
import ml_collections
from ml_collections import config_flags

from experiments import curvature_repro as R

NAME = "santurkar2018"


def get_config() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({
      "num_train": 4000, "width": 64, "depth": 4, "activation": "relu", "batch_size": 128,
      "learning_rate": 0.1, "num_steps": 400, "measure_every": 10, "step_min": 0.05,
      "step_max": 0.4, "num_points": 8, "num_seeds": 3, "factor": 1.5})


_CONFIG = config_flags.DEFINE_config_dict("config", get_config())
_WORKDIR = flags.DEFINE_string("workdir", "/tmp/repro_curvature", "Where the JSON goes.")
_PUBLISH = flags.DEFINE_bool("publish", False, "Also write docs/results/<name>.json.")


def main(argv):
  del argv
  R.finish(NAME, {"config": _CONFIG.value.to_dict(), **R.run_santurkar(_CONFIG.value)},
           _WORKDIR.value, _PUBLISH.value)


if __name__ == "__main__":
  app.run(main)
