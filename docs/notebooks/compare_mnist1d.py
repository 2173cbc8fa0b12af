# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Comparing two techniques on MNIST-1D
#
# A study with `flaxopt.sweep`: one base config, one axis (here the normalization layer of a
# small MLP: none or BatchNorm), a few seeds; `run_study` trains every setting on every seed,
# resumably, and writes a leaderboard and curves. This notebook runs it at a small size (300
# steps, 3 seeds) when the docs are built, then puts a 95% confidence interval (Student's t
# over seeds) on each setting's test accuracy. The test split reports; nothing here selects
# on it. The full-size studies are in the {doc}`../workflows/compare` workflow.

# %%
import pathlib
import tempfile

import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Image, Markdown, display
from scipy import stats

from configs import default
from flaxopt import sweep
from flaxopt.sweep import report

# %%
base = default.get_config()  # MNIST-1D, Adam 1e-2, batch 100
base.model.name = "mlp"  # two hidden layers of 64: compiles in a fraction of the CNN's time
base.model.width = 64
base.model.depth = 2
base.num_train_steps = 300
base.eval_every = 100
base.log_every = 300
base.checkpoint_every = 0

study = sweep.as_study(base)
study.name = "norm"
study.axes = ("model.norm=none,batch",)
study.seeds = "0:3"

workdir = pathlib.Path(tempfile.mkdtemp())
# The persistent compilation cache: the seeds of a setting compile to the same program.
result = sweep.run_study(study, str(workdir), jax_cache_dir=str(workdir / "jax_cache"),
                         log=lambda line: None)
display(Markdown(pathlib.Path(result.files[0]).read_text()))  # the leaderboard it wrote

# %% [markdown]
# The curves `run_study` plotted (test accuracy and train loss, mean over seeds):

# %%
display(Image(filename=next(f for f in result.files if f.endswith("_curves.png"))))

# %% [markdown]
# ## Confidence intervals over seeds

# %%
final = {}
for run in sweep.plan_final_runs(study, str(workdir)):
  summary = report.read_summary(run.workdir)
  final.setdefault(run.setting.key, []).append(summary["final"]["test_accuracy"])

fig, ax = plt.subplots(figsize=(6, 2.5))
for i, (key, accs) in enumerate(final.items()):
  accs = np.array(accs)
  half = stats.t.ppf(0.975, len(accs) - 1) * accs.std(ddof=1) / np.sqrt(len(accs))
  print(f"{key:22s} test accuracy {accs.mean():.4f} ± {half:.4f} (95% CI, {len(accs)} seeds)")
  ax.errorbar(accs.mean(), i, xerr=half, fmt="o", capsize=4)
  ax.plot(accs, [i] * len(accs), "k.", alpha=0.4)
ax.set_yticks(range(len(final)), list(final))
ax.set_xlabel("test accuracy, 300 steps (mean, 95% CI; dots: seeds)")
fig.tight_layout()
# run_study's plots switch matplotlib to the Agg backend, so the figure is shown as a PNG.
fig.savefig(workdir / "ci.png", dpi=100, bbox_inches="tight")
display(Image(filename=str(workdir / "ci.png")))
plt.close(fig)
