"""Train state, pure train/eval steps, the loop (jit over a mesh, or pmap), checkpoints,
early stopping, the divergence guard, metric writers, the config schema (``config``) and the
fault handling of docs/reliability.md (workdir lock, preemption, test hooks).

``train_and_evaluate(config, workdir)`` is what ``python -m experiments.train`` runs;
``train_stack(configs, workdirs)`` trains runs that differ only in seed and numeric
hyperparameters as one vmapped program (``training/members.py``).
"""

from flaxopt.training.checkpoint import CheckpointError
from flaxopt.training.checkpoint import Checkpointer
from flaxopt.training.checkpoint import StorageError
from flaxopt.training.config import ConfigError
from flaxopt.training.hooks import FaultInjector
from flaxopt.training.hooks import Hooks
from flaxopt.training.lock import WorkdirLock
from flaxopt.training.lock import WorkdirLockedError
from flaxopt.training.loop import make_optimizer
from flaxopt.training.loop import make_schedule
from flaxopt.training.loop import SCHEDULES
from flaxopt.training.loop import train_and_evaluate
from flaxopt.training.loop import train_stack
from flaxopt.training.loop import validate_config
from flaxopt.training.metrics import MetricWriter
from flaxopt.training.parallel import Parallel
from flaxopt.training.plots import plot_curves
from flaxopt.training.state import create_train_state
from flaxopt.training.state import TrainState
from flaxopt.training.steps import cross_entropy
from flaxopt.training.steps import eval_step
from flaxopt.training.steps import train_step

__all__ = [
    "CheckpointError", "Checkpointer", "ConfigError", "FaultInjector", "Hooks", "MetricWriter",
    "StorageError", "WorkdirLock", "WorkdirLockedError", "Parallel", "SCHEDULES", "TrainState",
    "create_train_state", "cross_entropy", "eval_step", "make_optimizer", "make_schedule",
    "plot_curves", "train_and_evaluate", "train_stack", "train_step", "validate_config",
]
