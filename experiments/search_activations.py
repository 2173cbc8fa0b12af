r"""Automatic search for activation functions on MNIST-1D, at CPU scale.

Ramachandran, Zoph & Le 2017, "Searching for Activation Functions": candidates are core units
``b(u1(x), u2(x))`` (``flaxopt.functional.activation_search``), each scored by training a
child network; the best ones are re-evaluated with more steps and seeds. The paper searched
with an RNN controller (RL) over spaces of up to 10^12 functions and ResNet-20 on CIFAR-10 as
child; here the space is small enough to score *exhaustively* (no controller), and the child
is a 40-100-100-10 MLP on MNIST-1D (Greydanus 2020).

Stage 1 trains every candidate of ``--space`` (after dropping non-finite / affine candidates
and numerical duplicates up to an output scale and shift) for ``--steps`` Adam steps with
``--seeds`` seeds; all candidates share the same initial weights and batch order per seed, and
they are trained *at once*: one jitted ``lax.scan`` of the training step, ``vmap``-ed over
candidates (each picks its ops by integer index with ``lax.switch``) and seeds. Score =
validation accuracy (500 examples held out of the training split), mean over seeds.
Stage 2 re-trains the ``--top_k`` best plus the references ReLU ``max(x, 0)`` and Swish
``x * sigmoid(x)`` for ``--final_steps`` steps with ``--final_seeds`` seeds (different from
stage 1's), ranks by validation accuracy and reports test accuracy alongside.

  python -m experiments.search_activations [--space=small] [--steps=400] [--seeds=2] [--top_k=8] \
      [--final_steps=1000] [--final_seeds=4] [--out_dir=runs/search_activations] [--publish]

Writes ``search_activations.json`` (the numbers and the report), ``table.md`` and the PNG plot
of the top functions' shapes ``search_activations.png`` into ``--out_dir`` (default
``runs/search_activations``), or with ``--publish`` the JSON to ``docs/results/`` and the plot
to ``docs/images/``; prints the tables.
"""

from __future__ import annotations

import functools
import os
import time
from typing import Any, Optional, Sequence

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from experiments import common
from experiments import search_child
from flaxopt.functional import activation_search as S

_SPACE = flags.DEFINE_enum("space", "small", list(S.SPACES),
                           "Search space (activation_search.SPACES).")
_STEPS = flags.DEFINE_integer("steps", 400, "Stage-1 training steps per candidate.", lower_bound=1)
_SEEDS = flags.DEFINE_integer("seeds", 2, "Stage-1 seeds per candidate.", lower_bound=1)
_TOP_K = flags.DEFINE_integer("top_k", 8, "Candidates re-evaluated in stage 2 (plus ReLU, Swish).",
                              lower_bound=1)
_FINAL_STEPS = flags.DEFINE_integer("final_steps", 1000, "Stage-2 training steps.", lower_bound=1)
_FINAL_SEEDS = flags.DEFINE_integer("final_seeds", 4, "Stage-2 seeds.", lower_bound=1)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 100, "Batch size.", lower_bound=1)
_LEARNING_RATE = flags.DEFINE_float("learning_rate", 3e-3, "Adam learning rate.")

Array = jax.Array

RELU, SWISH = "max(x, 0)", "x * sigmoid(x)"
REFERENCES = (RELU, SWISH)


# ---------------------------------------------------------------------------------------
# Ranking and reports.
# ---------------------------------------------------------------------------------------
def rank_rows(candidates: Sequence[S.Candidate], metrics: dict[str, np.ndarray]
              ) -> list[dict[str, Any]]:
  """One row per candidate, sorted by mean validation accuracy (diverged last), ranks from 1."""
  rows = []
  for i, c in enumerate(candidates):
    diverged = bool(not np.all(np.isfinite(metrics["train_loss"][:, i])))
    val, test = metrics["val_acc"][:, i], metrics["test_acc"][:, i]
    rows.append({
        "name": c.name, "ops": [c.unary1, c.unary2, c.binary], "diverged": diverged,
        "score": float("nan") if diverged else float(val.mean()),
        "val_acc": float(val.mean()), "val_acc_std": float(val.std()),
        "test_acc": float(test.mean()), "test_acc_std": float(test.std()),
        "train_loss": float(np.mean(metrics["train_loss"][:, i])),
    })
  rows.sort(key=lambda r: (r["diverged"], -r["val_acc"], r["name"]))
  for rank, row in enumerate(rows, 1):
    row["rank"] = rank
  return rows


def _rank_of(rows: Sequence[dict[str, Any]], name: str) -> Optional[int]:
  return next((r["rank"] for r in rows if r["name"] == name), None)


def markdown_table(rows: Sequence[dict[str, Any]], *, limit: Optional[int] = None) -> str:
  """Rows as a Markdown table (rank, function, val / test accuracy mean ± std, train loss)."""
  lines = ["| rank | function | val acc (%) | test acc (%) | final train loss |",
           "|---:|---|---:|---:|---:|"]
  for r in rows[:limit]:
    mark = " (ReLU)" if r["name"] == RELU else " (Swish, β=1)" if r["name"] == SWISH else ""
    lines.append(
        f"| {r['rank']} | `{r['name']}`{mark} | {100 * r['val_acc']:.1f} ± "
        f"{100 * r['val_acc_std']:.1f} | {100 * r['test_acc']:.1f} ± "
        f"{100 * r['test_acc_std']:.1f} | "
        + ("diverged |" if r["diverged"] else f"{r['train_loss']:.3f} |"))
  return "\n".join(lines)


def plot_shapes(rows: Sequence[dict[str, Any]], stage1: Sequence[dict[str, Any]],
                path: str, *, num: int = 6) -> None:
  """Left: the top ``num`` functions (+ ReLU) on [-4, 4]; right: stage-1 scores, sorted."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  x = np.linspace(-4.0, 4.0, 401, dtype=np.float32)
  fig, (ax_f, ax_s) = plt.subplots(1, 2, figsize=(11, 4))
  shown = list(rows[:num]) + [r for r in rows[num:] if r["name"] in REFERENCES]
  for r in shown:
    fn = S.core_unit(*r["ops"])
    style = "--" if r["name"] in REFERENCES and r["rank"] > num else "-"
    ax_f.plot(x, np.asarray(fn(jnp.asarray(x))), style,
              label=f"{r['rank']}. {r['name']} ({100 * r['val_acc']:.1f}%)")
  ax_f.set(title="top functions after re-evaluation", xlabel="x", ylim=(-3, 5))
  ax_f.axhline(0, color="k", lw=0.5)
  ax_f.axvline(0, color="k", lw=0.5)
  ax_f.legend(fontsize=7)
  scores = [100 * r["val_acc"] for r in stage1 if not r["diverged"]]
  ax_s.plot(range(1, len(scores) + 1), scores, ".", color="gray")
  for name, color in ((SWISH, "C3"), (RELU, "C0")):
    rank = _rank_of(stage1, name)
    if rank is not None and not stage1[rank - 1]["diverged"]:
      ax_s.plot(rank, 100 * stage1[rank - 1]["val_acc"], "o", color=color, label=name)
  ax_s.set(title=f"search: {len(stage1)} candidates", xlabel="rank",
           ylabel="validation accuracy (%)")
  ax_s.legend()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


# ---------------------------------------------------------------------------------------
# The search.
# ---------------------------------------------------------------------------------------
def run(*, space: str = "small", steps: int = 400, seeds: int = 2, top_k: int = 8,
        final_steps: int = 1000, final_seeds: int = 4, batch_size: int = 100,
        learning_rate: float = 3e-3, hidden: Sequence[int] = (100, 100),
        num_candidates: Optional[int] = None, data: Optional[dict[str, Array]] = None,
        plot_path: Optional[str] = None) -> dict[str, Any]:
  """Enumerates ``space``, scores every candidate, re-evaluates the best; returns the results.

  Args:
    space: a key of ``activation_search.SPACES``.
    steps, seeds: stage-1 budget per candidate (seeds 0 .. seeds - 1).
    top_k, final_steps, final_seeds: stage 2 (seeds 100 .. 100 + final_seeds - 1), on the
      ``top_k`` best plus ReLU and Swish when the space has them.
    batch_size, learning_rate, hidden: the child MLP and its Adam optimizer.
    num_candidates: keep only the first ones of the enumeration (tests).
    data: ``search_child.load_data()``'s dict (loaded when None).
    plot_path: where to write the PNG (None: no plot).

  Returns:
    dict with ``stage1`` and ``stage2`` (ranked rows), ``swish`` and ``relu`` (their ranks),
    ``num_enumerated``, ``num_candidates``, ``settings`` and ``seconds``.
  """
  if space not in S.SPACES:
    raise ValueError(f"Unknown space {space!r}; valid: {', '.join(S.SPACES)}")
  if top_k < 1 or seeds < 1 or final_seeds < 1:
    raise ValueError(f"need top_k, seeds, final_seeds >= 1; got {top_k}, {seeds}, {final_seeds}")
  settings = dict(space=space, steps=steps, seeds=seeds, top_k=top_k, final_steps=final_steps,
                  final_seeds=final_seeds, batch_size=batch_size, learning_rate=learning_rate,
                  hidden=list(hidden), num_candidates=num_candidates)
  unary, binary = S.SPACES[space]
  t0 = time.time()
  candidates = S.enumerate_candidates(unary, binary, modulo_affine=True)[:num_candidates]
  data = search_child.load_data() if data is None else data
  train = functools.partial(search_child.train_candidates, data=data, unary=unary, binary=binary,
                            batch_size=batch_size, learning_rate=learning_rate, hidden=hidden)
  t1 = time.time()
  stage1 = rank_rows(candidates, train(candidates, steps=steps, seeds=list(range(seeds))))
  t2 = time.time()
  by_name = {c.name: c for c in candidates}
  finalists = [r["name"] for r in stage1[:top_k]]
  finalists += [n for n in REFERENCES if n in by_name and n not in finalists]
  finalists = [by_name[n] for n in finalists]
  stage2 = rank_rows(finalists, train(finalists, steps=final_steps,
                                      seeds=list(range(100, 100 + final_seeds))))
  t3 = time.time()
  result = {
      "settings": settings,
      "num_enumerated": len(unary) ** 2 * len(binary),
      "num_candidates": len(candidates),
      "stage1": stage1,
      "stage2": stage2,
      "swish": {"name": SWISH, "stage1_rank": _rank_of(stage1, SWISH),
                "stage2_rank": _rank_of(stage2, SWISH)},
      "relu": {"name": RELU, "stage1_rank": _rank_of(stage1, RELU),
               "stage2_rank": _rank_of(stage2, RELU)},
      "seconds": {"enumerate_and_load": t1 - t0, "stage1": t2 - t1, "stage2": t3 - t2},
  }
  if plot_path:
    plot_shapes(stage2, stage1, plot_path)
  return result


def report(result: dict[str, Any], *, stage1_rows: int = 15) -> str:
  """Markdown: settings, Swish / ReLU positions, the stage-2 table and stage 1's top rows."""
  st = result["settings"]
  sw, re_ = result["swish"], result["relu"]
  n = result["num_candidates"]
  lines = [
      f"Space `{st['space']}`: {result['num_enumerated']} core units, {n} after dropping "
      f"non-finite / affine ones and duplicates (up to output scale and shift).",
      f"Stage 1: {st['steps']} steps x {st['seeds']} seed(s); stage 2: top {st['top_k']} + "
      f"references, {st['final_steps']} steps x {st['final_seeds']} seeds. MLP "
      f"{st['hidden']}, Adam lr {st['learning_rate']}, batch {st['batch_size']}.",
      f"Swish `{SWISH}`: rank {sw['stage1_rank']} of {n} in stage 1, rank "
      f"{sw['stage2_rank']} of {len(result['stage2'])} in stage 2. ReLU `{RELU}`: rank "
      f"{re_['stage1_rank']} / {re_['stage2_rank']}.",
      f"Time: {result['seconds']['stage1']:.0f} s stage 1, "
      f"{result['seconds']['stage2']:.0f} s stage 2.",
      "",
      "Stage 2 (re-evaluation):",
      "",
      markdown_table(result["stage2"]),
      "",
      f"Stage 1 (search), top {stage1_rows}:",
      "",
      markdown_table(result["stage1"], limit=stage1_rows),
  ]
  return "\n".join(lines)


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  out_dir = common.OUT_DIR.value or os.path.join("runs", "search_activations")
  if common.PUBLISH.value:
    plot_path = os.path.join(common.IMAGES_DIR, "search_activations.png")
    results_path = os.path.join(common.RESULTS_DIR, "search_activations.json")
  else:
    plot_path = os.path.join(out_dir, "search_activations.png")
    results_path = os.path.join(out_dir, "search_activations.json")
  result = run(space=_SPACE.value, steps=_STEPS.value, seeds=_SEEDS.value, top_k=_TOP_K.value,
               final_steps=_FINAL_STEPS.value, final_seeds=_FINAL_SEEDS.value,
               batch_size=_BATCH_SIZE.value, learning_rate=_LEARNING_RATE.value,
               plot_path=plot_path)
  text = report(result)
  common.write_results(results_path, "experiments/search_activations.py", result, text)
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, "table.md"), "w") as fh:
    fh.write(text + "\n")
  print(text)
  print(f"Wrote {results_path}, {plot_path}")


if __name__ == "__main__":
  app.run(main)
