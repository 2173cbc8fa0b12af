"""The main job: MNIST-1D, the MNIST-1D paper's CNN, Adam lr 1e-2, batch 100, 6000 steps.

Greydanus, 2020, "Scaling down deep learning" (MNIST-1D), whose repository logs 92.3% test
accuracy for this recipe. Every field can be overridden: ``--config.optimizer.name=nadam``,
and optimizer / augmentation kwargs added: ``--config.optimizer.b1=0.5``.

The fields, their defaults, types and ranges are the schema of ``flaxopt.training.config``
(``python -c "from flaxopt.training import config; print(config.default_config())"``);
the defaults there are this recipe's values. Highlights:

* ``dataset.num_train``: 0 / None, the whole training split; ``dataset.validation_size``:
  examples held out of the training split (0: none).
* ``eval_every``: one jitted evaluation of every evaluation set; ``eval_batch_size`` 0: the
  whole set in one chunk; ``log_every``: progress line + divergence check (host sync);
  ``checkpoint_every`` 0: only at the end; ``max_to_keep`` >= 1.
* ``parallel``: jit (mesh + NamedSharding) | pmap.
* ``optimizer.schedule``: constant | cosine | warmup_cosine; other ``optimizer.*`` fields
  are the optimizer's keyword arguments.
* ``regularizer.l1``, ``regularizer.l2``: penalties added to the loss (training/steps.py).
* ``augment.ops``: comma-separated augmentation names ('' none); ``augment.<name>.*``: that
  op's kwargs. ``early_stopping.*``: disabled by default. ``diagnostics.every`` 0: off.
* ``init.pretrain``: none | rbm; ``init.*``: LSUV / RBM settings (``model.kernel_init=lsuv``).
"""

import ml_collections

from flaxopt.training import config as config_lib


def get_config() -> ml_collections.ConfigDict:
  """Every training field at its default: the main job (MNIST-1D, CNN, Adam 1e-2)."""
  config = config_lib.default_config()
  config.dataset.name = "mnist1d"
  config.model.name = "cnn"
  config.optimizer.name = "adam"
  config.optimizer.learning_rate = 1e-2
  return config
