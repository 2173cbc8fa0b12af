"""A seconds-long run for tests: 500 MNIST-1D examples, a small MLP, 60 steps."""

from configs import default


def get_config():
  config = default.get_config()
  config.dataset.num_train = 500
  config.model.name = "mlp"
  config.model.width = 16
  config.model.depth = 1
  config.batch_size = 20
  config.num_train_steps = 60
  config.eval_every = 20
  config.log_every = 10
  config.checkpoint_every = 30
  config.max_to_keep = 2
  return config
