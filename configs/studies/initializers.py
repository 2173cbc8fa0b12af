r"""Every initializer on a deep plain MLP (20 hidden layers of 64, no norm, no residual).

SGD with momentum 0.9, lr 1e-2, 2,000 steps of batch 100 on MNIST-1D, with ReLU and tanh:
the setting of Glorot & Bengio (2010) and He et al. (2015), where the initial scale decides
whether a deep net trains at all.

  python -m experiments.compare --config=configs/studies/initializers.py \
      --workdir=runs/initializers --jobs=2 --report_dir=docs/studies --image_dir=docs/images
"""

from configs.studies import _common

INITIALIZERS = ("standard_uniform", "random_normal", "random_uniform", "xavier_normal",
                "xavier_uniform", "he_normal", "he_uniform", "lecun_normal", "orthogonal",
                "lsuv")


def get_config():
  base = _common.short_base()
  base.model.name = "mlp"
  base.model.width = 64
  base.model.depth = 20
  base.optimizer.name = "momentum"
  base.optimizer.learning_rate = 1e-2
  return _common.study(
      "initializers", "Initializers on a 20-hidden-layer MLP (width 64), SGD + momentum",
      base, axes=("model.kernel_init=" + ",".join(INITIALIZERS), "model.activation=relu,tanh"),
      seeds="0,1", target_accuracy=0.5)
