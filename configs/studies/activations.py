r"""Every activation in the registry in MNIST-1D's CNN (Adam 1e-2, 2,000 steps, 2 seeds).

maxout (2 pieces) doubles each conv's output channels, so it has more parameters.

  python -m experiments.compare --config=configs/studies/activations.py \
      --workdir=runs/activations --jobs=2 --report_dir=docs/studies --image_dir=docs/images
"""

from configs.studies import _common

ACTIVATIONS = ("relu", "leaky_relu", "prelu", "rrelu", "elu", "selu", "celu", "gelu", "silu",
               "swish", "mish", "softplus", "relu6", "hard_swish", "maxout", "tanh", "hard_tanh",
               "softsign", "sigmoid", "hard_sigmoid")


def get_config():
  return _common.study(
      "activations", "Activations in the MNIST-1D CNN", _common.short_base(),
      axes=("model.activation=" + ",".join(ACTIVATIONS),), seeds="0,1", target_accuracy=0.85)
