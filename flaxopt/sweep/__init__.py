"""Studies: many training runs of one question, planned, executed resumably and reported.

Above ``flaxopt.training`` (each run is ``training.train_and_evaluate`` in its own workdir)
and using its config module (``flaxopt.training.config.apply_overrides``). Modules:

* ``spec``     the study fields and their string syntax; the settings they expand to.
* ``plan``     the runs of a study (tuning and final), their workdirs and resolved configs.
* ``execute``  training the runs not done, in this process or in workers; member repair.
* ``report``   leaderboard rows from the members' files, Markdown / CSV, plots.
* ``study``    ``run_study``: all of the above, as ``python -m experiments.compare`` runs it.

Statistics over seeds (confidence intervals, tests, performance profiles) live in
``flaxopt.sweep.stats``.
"""

from flaxopt.sweep.execute import inspect_member
from flaxopt.sweep.execute import MemberState
from flaxopt.sweep.plan import plan_final_runs
from flaxopt.sweep.plan import plan_tuning_runs
from flaxopt.sweep.plan import Run
from flaxopt.sweep.plan import run_config
from flaxopt.sweep.spec import as_study
from flaxopt.sweep.spec import default_study_fields
from flaxopt.sweep.spec import make_settings
from flaxopt.sweep.spec import Setting
from flaxopt.sweep.study import run_study
from flaxopt.sweep.study import StudyResult

__all__ = [
    "MemberState", "Run", "Setting", "StudyResult", "as_study", "default_study_fields",
    "inspect_member", "make_settings", "plan_final_runs", "plan_tuning_runs",
    "run_config", "run_study",
]
