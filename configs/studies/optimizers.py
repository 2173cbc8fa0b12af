r"""Every first-order optimizer on MNIST-1D's CNN, each at its own tuned learning rate.

DeepOBS-style (Schneider et al., 2019): per optimizer the lr is chosen from a log grid on
1000 held-out training examples (seed 0), then trained on the full split for 2 seeds.
2,000 steps of batch 100, constant lr, optimizer defaults otherwise.

  python -m experiments.compare --config=configs/studies/optimizers.py --workdir=runs/optimizers \
      --jobs=2 --report_dir=docs/studies --image_dir=docs/images
"""

from configs.studies import _common

OPTIMIZERS = ("sgd", "momentum", "nesterov", "adagrad", "adadelta", "rmsprop", "adam", "nadam",
              "adamax", "amsgrad", "adafactor")


def get_config():
  return _common.study(
      "optimizers", "First-order optimizers, MNIST-1D CNN, lr tuned per optimizer",
      _common.short_base(),
      axes=("optimizer.name=" + ",".join(OPTIMIZERS),),
      lr_grid="1e-3:1:4", seeds="0,1", tune_seeds=1, validation_size=1000,
      target_accuracy=0.85)
