"""The sweep that found configs/best_mnist1d.py: the paper's recipe, then one change at a time.

Base: configs/default.py (MNIST-1D, the paper's 5,210-parameter CNN, Adam 1e-2, batch 100,
6,000 steps). Each variant adds to the one before; 3 seeds each on the standard 4000/1000
split. Every model stays at most 6,000 parameters.

  python -m experiments.compare --config=configs/studies/best_mnist1d.py \
      --workdir=runs/best_mnist1d --jobs=2 --report_dir=docs/studies --image_dir=docs/images
"""

import ml_collections

from configs import default

_COSINE = "optimizer.schedule=cosine; num_train_steps=12000"
_AUG = "augment.ops=random_translate,gaussian_noise"


def get_config():
  study = ml_collections.ConfigDict()
  study.name = "best_mnist1d"
  study.title = "MNIST-1D: from the paper's CNN recipe to the best one (<= 6,000 parameters)"
  study.base = default.get_config()
  study.base.eval_every = 1000
  study.base.log_every = 1000
  study.base.checkpoint_every = 0
  study.variants = (
      "paper (Adam 1e-2, 6k steps):",
      f"+ cosine 12k: {_COSINE}",
      f"+ translate: {_COSINE}; augment.ops=random_translate",
      f"+ translate + noise: {_COSINE}; {_AUG}",
      f"+ translate + noise + batch norm: {_COSINE}; {_AUG}; model.norm=batch",
      f"+ translate + noise + group norm: {_COSINE}; {_AUG}; model.norm=group",
  )
  study.seeds = "0,1,2"
  study.target_accuracy = 0.95
  return study
