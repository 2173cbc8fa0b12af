"""Flax NNX front end: every ``flaxopt.nn`` module and model as a native ``nnx.Module``.

``from flaxopt import nnx as fnnx``. Each class has the name, parameter names and math of
its linen twin in ``flaxopt.nn`` and calls the same ``flaxopt.functional`` code; NNX's
conventions apply (feature counts and ``rngs`` at construction, train/eval as module
state: ``model.train()`` / ``model.eval()``, keys from the ``'dropout'``, ``'rrelu'``,
``'pool'`` streams of ``nnx.Rngs``, BatchNorm statistics as ``nnx.BatchStat``).

* Models: ``build_model(model_config, num_classes, input_shape, rngs)`` (the ``model.*``
  config of ``flaxopt.nn.models.build_model``).
* Training: ``nnx.Optimizer(model, tx, wrt=nnx.Param)`` with any ``flaxopt.optim``
  optimizer; ``optimizer.update(model, grads, value=..., grad=..., value_fn=...)`` for the
  second-order ones (see docs/readme/nnx.md).
* Interop: ``load_linen_variables`` / ``linen_variables`` move variables between twins;
  ``LinenAdapter`` gives an NNX model linen's ``init``/``apply``.
* Registry: ``registry_get(family, name, **kwargs)`` returns NNX modules for the module
  families.
"""

# pylint: disable=wildcard-import
from flaxopt.nnx.activations import *
from flaxopt.nnx.normalization import *
from flaxopt.nnx.pooling import *
from flaxopt.nnx.regularization import *
from flaxopt.nnx.models import *
from flaxopt.nnx.interop import *
from flaxopt.nnx.registry import *
