"""fashion_mnist_cnn: Fashion-MNIST 55,000 train / 5,000 validation / 10,000 test, a small CNN.

Xiao et al. 2017. The model is the ConvNet with fewer than 100k parameters (conv 3x3 32, max
pool, conv 3x3 64, max pool, linear classifier: 50,186 parameters), the size of the dataset
benchmark's "2 Conv <100K parameters" entry (92.5% test). Adam lr 1e-3 with cosine decay,
batch 128, 12,000 steps (~28 epochs), evaluated every 240 steps.
"""

from configs import default
from configs import workloads


def fashion_mnist_convnet(config):
  """The Fashion-MNIST ConvNet and optimizer shared by the fashion_mnist_cnn workloads."""
  config.dataset.name = "fashion_mnist"
  config.dataset.validation_size = 5000
  config.model.name = "convnet"
  config.model.conv_channels = (32, 64)
  config.model.kernel_size = 3
  config.model.dense_widths = ()
  config.model.pool = "max"
  config.batch_size = 128
  config.eval_batch_size = 1000  # 28x28x32 activations of 10,000 images at once: ~1 GB
  config.optimizer.name = "adam"
  config.optimizer.learning_rate = 1e-3
  config.optimizer.schedule = "cosine"
  return config


def get_config():
  config = fashion_mnist_convnet(default.get_config())
  config.checkpoint_every = 3000
  return workloads.apply(config, "fashion_mnist_cnn")
