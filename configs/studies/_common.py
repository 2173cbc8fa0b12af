"""Shared pieces of the study configs: a short MNIST-1D base and the study skeleton."""

import ml_collections

from configs import default


def short_base(num_train_steps: int = 2000, eval_every: int = 250) -> ml_collections.ConfigDict:
  """configs/default.py (MNIST-1D, the paper's CNN, Adam 1e-2, batch 100), shortened."""
  config = default.get_config()
  config.num_train_steps = num_train_steps
  config.eval_every = eval_every
  config.log_every = eval_every
  config.checkpoint_every = 0  # only at the end: short runs
  return config


def study(name: str, title: str, base: ml_collections.ConfigDict,
          **fields) -> ml_collections.ConfigDict:
  """A study ConfigDict (flaxopt.sweep.spec's fields; unset ones take its defaults)."""
  s = ml_collections.ConfigDict()
  s.name = name
  s.title = title
  s.base = base
  for key, value in fields.items():
    s[key] = value
  return s
