"""digits_mlp: sklearn's 8x8 digits, 1,150 train / 287 validation / 360 test, MLP 2 x 100.

configs/digits.py's recipe (Adam lr 1e-2, batch 100, 2,000 steps) with a validation split
(20% of the 1,437 training images).
"""

from configs import default
from configs import workloads


def get_config():
  config = default.get_config()
  config.dataset.name = "digits"
  config.dataset.validation_size = 287
  config.model.name = "mlp"
  config.model.width = 100
  config.model.depth = 2
  config.checkpoint_every = 0
  return workloads.apply(config, "digits_mlp")
