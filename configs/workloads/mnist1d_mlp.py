"""mnist1d_mlp: MNIST-1D 3,500 / 500 validation / 1,000 test, an MLP of 2 x 100 ReLU units.

configs/mlp.py's recipe (Adam lr 1e-2, batch 100, 6,000 steps) with a validation split.
"""

from configs import default
from configs import workloads


def get_config():
  config = default.get_config()
  config.dataset.name = "mnist1d"
  config.dataset.validation_size = 500
  config.model.name = "mlp"
  config.model.width = 100
  config.model.depth = 2
  return workloads.apply(config, "mnist1d_mlp")
