"""MNIST-1D with logistic regression (a single linear layer), Adam lr 1e-2."""

from configs import default


def get_config():
  config = default.get_config()
  config.model.name = "logistic"
  return config
