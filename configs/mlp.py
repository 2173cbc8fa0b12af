"""MNIST-1D with an MLP (two hidden layers of 100 ReLU units), Adam lr 1e-2."""

from configs import default


def get_config():
  config = default.get_config()
  config.model.name = "mlp"
  config.model.width = 100
  config.model.depth = 2
  return config
