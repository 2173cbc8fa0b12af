"""The main job: MNIST-1D, the MNIST-1D paper's CNN, Adam lr 1e-2, batch 100, 6000 steps.

Greydanus, 2020, "Scaling down deep learning" (MNIST-1D), whose repository logs 92.3% test
accuracy for this recipe. Every field can be overridden: ``--config.optimizer.name=nadam``.
"""

import ml_collections

from flaxopt.training import diagnostics
from flaxopt.training import early_stopping


def model_config() -> ml_collections.ConfigDict:
  """``model.*`` defaults from ``flaxopt.nn.models.default_model_config()``."""
  from flaxopt.nn import models  # pylint: disable=g-import-not-at-top
  return ml_collections.ConfigDict(models.default_model_config())


def augment_config() -> ml_collections.ConfigDict:
  """``augment.*`` defaults (``ops=''``, every op's kwargs) from flaxopt.functional."""
  import flaxopt.functional as F  # pylint: disable=g-import-not-at-top
  return F.default_augment_config()


def get_config() -> ml_collections.ConfigDict:
  """Every training field with its default (DESIGN.md's experiment interface)."""
  config = ml_collections.ConfigDict()
  config.seed = 0

  config.dataset = ml_collections.ConfigDict()
  config.dataset.name = "mnist1d"
  config.dataset.num_train = 0  # 0 / None: the whole training split
  config.dataset.validation_size = 0  # held out of the training split when > 0
  config.dataset.data_dir = ""  # '' : the data module's default directory

  config.batch_size = 100
  config.num_train_steps = 6000
  config.eval_every = 500  # one jitted evaluation of the whole test set
  config.eval_batch_size = 0  # 0: the whole evaluation set in one chunk
  config.log_every = 500  # progress line + divergence check (host sync) every N steps
  config.checkpoint_every = 3000  # 0: only at the end
  config.max_to_keep = 2
  config.parallel = "jit"  # jit (mesh + NamedSharding) | pmap

  config.model = model_config()
  config.model.name = "cnn"

  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.name = "adam"
  config.optimizer.learning_rate = 1e-2
  config.optimizer.schedule = "constant"  # constant | cosine | warmup_cosine
  config.optimizer.warmup_steps = 0

  config.regularizer = ml_collections.ConfigDict()
  config.regularizer.l1 = 0.0  # loss += l1 * sum |w|
  config.regularizer.l2 = 0.0  # loss += l2 / 2 * sum w**2 (= PyTorch weight_decay = l2)

  # ops: comma-separated augmentation names ('' none); augment.<name>.*: that op's kwargs.
  config.augment = augment_config()

  config.early_stopping = early_stopping.default_config()  # disabled
  config.diagnostics = diagnostics.default_config()  # every=0: off; see training/diagnostics.py

  config.init = ml_collections.ConfigDict()
  config.init.pretrain = "none"  # none | rbm (MLP hidden layers)
  config.init.num_examples = 1000  # training examples LSUV / RBM pre-training see
  config.init.lsuv_tol = 0.1  # LSUV (model.kernel_init='lsuv'): |var - 1| tolerance
  config.init.lsuv_max_iters = 10
  config.init.rbm_steps = 1000  # RBM pre-training: CD updates per layer
  config.init.rbm_batch_size = 100
  config.init.rbm_k = 1
  config.init.rbm_learning_rate = 0.01
  config.init.rbm_visible = "gaussian"  # gaussian | bernoulli
  return config
