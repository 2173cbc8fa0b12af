"""fashion_mnist_cnn_small: fashion_mnist_cnn on 10,000 training images, for studies (~1 min).

Fashion-MNIST 10,000 train / 5,000 validation (the same validation set as fashion_mnist_cnn:
the subsets are nested, see flaxopt.data) / 10,000 test; the same ConvNet (50,186
parameters) and optimizer; 600 steps (~7.7 epochs), evaluated every 12 steps.
"""

from configs import default
from configs import workloads
from configs.workloads import fashion_mnist_cnn


def get_config():
  config = fashion_mnist_cnn.fashion_mnist_convnet(default.get_config())
  config.dataset.num_train = 10000
  config.checkpoint_every = 0
  return workloads.apply(config, "fashion_mnist_cnn_small")
