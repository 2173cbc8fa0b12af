"""scikit-learn's 8x8 digits (1437 train / 360 test) with an MLP, Adam lr 1e-2."""

from configs import default


def get_config():
  config = default.get_config()
  config.dataset.name = "digits"
  config.model.name = "mlp"
  config.model.width = 100
  config.model.depth = 2
  config.batch_size = 100
  config.num_train_steps = 2000
  config.eval_every = 500
  config.log_every = 500
  config.checkpoint_every = 0
  return config
