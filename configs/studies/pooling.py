r"""Every pooling op in MNIST-1D's CNN at 1000 and 4000 training examples (2,000 steps).

With a pool the convolutions use stride 1 and a window-2 stride-2 pool downsamples instead
(same shapes as the strided model, 'none'); learnable pools (lp, mixed, gated) add a few
parameters.

  python -m experiments.compare --config=configs/studies/pooling.py \
      --workdir=runs/pooling --jobs=2 --report_dir=docs/studies --image_dir=docs/images
"""

from configs.studies import _common


def get_config():
  return _common.study(
      "pooling", "Pooling ops in the MNIST-1D CNN, 1000 and 4000 training examples",
      _common.short_base(),
      axes=("model.pool=none,max,avg,stochastic,lp,mixed,gated", "dataset.num_train=1000,4000"),
      seeds="0,1", target_accuracy=0.85)
