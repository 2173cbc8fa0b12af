r"""Runs a study: config axes x seeds (x a learning-rate grid) -> a leaderboard and plots.

::

  python -m experiments.compare --config=configs/studies/optimizers.py --workdir=runs/opt \
      --jobs=2 --max_members=16 --report_dir=docs/studies --image_dir=docs/images

  # Any training config works as the base; axes, variants and seeds come from flags:
  python -m experiments.compare --config=configs/default.py --workdir=runs/x \
      --axes=optimizer.name=adam,nadam,sgd --axes=model.activation=relu,selu --seeds=0,1

The study fields and their syntax are ``flaxopt.sweep.spec``'s; every field can be overridden
(``--config.base.num_train_steps=2000``, ``--config.seeds=0,1,2``). Each run trains in
``<workdir>/<setting>/seed_<s>`` with the files of a solo ``experiments.train`` run; the same
command resumes an interrupted study (no completed run is redone, partial ones are repaired).
Reports go to the workdir unless ``--report_dir`` / ``--image_dir`` ask for another place.
User errors end with one line ``error: ...`` and exit code 2.
"""

import os
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(_REPO, "configs", "default.py"),
    "A study config (configs/studies/*.py) or a training config; override fields with "
    "--config.<field>=<value>.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Root of the runs: <workdir>/<setting>/seed_<s>.")
_AXES = flags.DEFINE_multi_string("axes", None,
                                  "'field=v1,v2,...' (repeatable); replaces the study's axes.")
_VARIANTS = flags.DEFINE_multi_string(
    "variants", None, "'label: field=value; field=value' (repeatable); replaces the study's.")
_SEEDS = flags.DEFINE_string("seeds", None, "'0,1,2' or 'a:b'; replaces the study's seeds.")
_LR_GRID = flags.DEFINE_string("lr_grid", None, "'lo:hi:n' (log-spaced) or 'v1,v2'; '' none.")
_JOBS = flags.DEFINE_integer("jobs", 1, "Stacks at a time, each in its own process (1: in "
                             "this process).")
_MAX_MEMBERS = flags.DEFINE_integer(
    "max_members", 16, "Runs trained together as one vmapped stack (same model and optimizer, "
    "other seeds / numeric hyperparameters); 1 trains every run solo.")
_NAME = flags.DEFINE_string("name", None, "Leaderboard / image name (default: the study's name "
                            "or the workdir's basename).")
_REPORT_DIR = flags.DEFINE_string("report_dir", None,
                                  "Where <name>.md/.csv go (default the workdir).")
_IMAGE_DIR = flags.DEFINE_string("image_dir", None, "Where the plots go (default report_dir).")
_REPORT_ONLY = flags.DEFINE_bool("report_only", False, "Train nothing; report the runs present.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "List the settings and runs, train nothing.")
_JAX_CACHE = flags.DEFINE_string(
    "jax_cache_dir", os.path.expanduser("~/.cache/flaxopt/jax_compilation_cache"),
    "Persistent XLA compilation cache ('' disables).")
flags.mark_flags_as_required(["workdir"])

USER_ERROR_EXIT_CODE = 2


def study_from_flags():
  """The study config with the --axes, --variants, --seeds and --lr_grid flags applied."""
  from flaxopt import sweep  # pylint: disable=g-import-not-at-top
  study = sweep.as_study(_CONFIG.value)
  for flag, field in ((_AXES, "axes"), (_VARIANTS, "variants")):
    if flag.value is not None:
      study[field] = tuple(flag.value)
  for flag, field in ((_SEEDS, "seeds"), (_LR_GRID, "lr_grid")):
    if flag.value is not None:
      study[field] = flag.value
  return study


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  from flaxopt import sweep  # pylint: disable=g-import-not-at-top
  from flaxopt.sweep import execute  # pylint: disable=g-import-not-at-top
  try:
    result = sweep.run_study(
        study_from_flags(), _WORKDIR.value, jobs=_JOBS.value, report_dir=_REPORT_DIR.value,
        image_dir=_IMAGE_DIR.value, name=_NAME.value, jax_cache_dir=_JAX_CACHE.value,
        report_only=_REPORT_ONLY.value, dry_run=_DRY_RUN.value,
        max_members=_MAX_MEMBERS.value,
        xla_flags=execute.worker_xla_flags(os.environ.get("XLA_FLAGS", "")))
  except ValueError as e:
    print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
    sys.exit(USER_ERROR_EXIT_CODE)
  if result is None:
    return
  with open(result.files[0]) as f:
    print(f.read())
  print("Wrote " + ", ".join(result.files))


if __name__ == "__main__":
  app.run(main)
