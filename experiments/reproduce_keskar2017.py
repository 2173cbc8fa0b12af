r"""Reproduces Keskar, Mudigere, Nocedal, Smelyanskiy & Tang 2017, "On large-batch training
for deep learning: generalization gap and sharp minima" (large batches find sharper minima).

Claim (fixed before the run): at training losses within 10% of each other, the top Hessian
eigenvalue after large-batch training is at least 1.5x that after small-batch training, over
5 seeds (mean over the seeds; every seed's pair of losses within 10%).

Ours: 2-hidden-layer tanh MLP (width 32) on 2000 MNIST-1D examples, Adam (as in the paper),
batch 32 vs 1000, each trained until the full training cross-entropy reaches the same target;
top eigenvalue of the full training loss's Hessian by Lanczos.

  python -m experiments.reproduce_keskar2017 --workdir=/tmp/keskar [--publish]

Writes ``<workdir>/keskar2017.json``; exits 1 when the claim fails.
"""

from absl import app
from absl import flags
import ml_collections
from ml_collections import config_flags

from experiments import curvature_repro as R

NAME = "keskar2017"


def get_config() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({
      "num_train": 2000, "width": 32, "depth": 2, "activation": "tanh",
      "learning_rate": 3e-3, "small_batch": 32, "large_batch": 1000, "target_loss": 0.5,
      "max_steps": 6000, "check_every": 50, "hessian_batch_size": 1000, "lanczos_iters": 20,
      "num_seeds": 5, "factor": 1.5, "loss_tolerance": 0.1})


_CONFIG = config_flags.DEFINE_config_dict("config", get_config())
_WORKDIR = flags.DEFINE_string("workdir", "/tmp/repro_curvature", "Where the JSON goes.")
_PUBLISH = flags.DEFINE_bool("publish", False, "Also write docs/results/<name>.json.")


def main(argv):
  del argv
  R.finish(NAME, {"config": _CONFIG.value.to_dict(), **R.run_keskar(_CONFIG.value)},
           _WORKDIR.value, _PUBLISH.value)


if __name__ == "__main__":
  app.run(main)
