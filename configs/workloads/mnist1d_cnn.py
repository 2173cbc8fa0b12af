"""mnist1d_cnn, the main job: configs/default.py's recipe with a validation split.

MNIST-1D (Greydanus 2020), 4,000 training signals -> 3,500 train / 500 validation (fixed,
``flaxopt.data`` SPLIT_SEED), 1,000 test; the paper's CNN (3 conv layers of 25 channels,
5,210 parameters), Adam lr 1e-2, batch 100, 6,000 steps, evaluated every 120 steps.
"""

from configs import default
from configs import workloads


def get_config():
  config = default.get_config()
  config.dataset.name = "mnist1d"
  config.dataset.validation_size = 500
  config.model.name = "cnn"
  return workloads.apply(config, "mnist1d_cnn")
