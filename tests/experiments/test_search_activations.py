"""experiments/search_activations.py: the ranking helper against hand-made metrics, and a real
tiny search (6 candidates of the 'tiny' space, a few steps) with its outputs."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import search_activations as E
from experiments import search_child
from flaxopt.functional import activation_search as S


def _candidates(names):
  ops = {"relu": ("x", "zero", "max"), "swish": ("x", "x", "sigmoid_mul"),
         "sq": ("x", "x", "mul"), "tanh": ("tanh", "zero", "add")}
  return [S.Candidate(*ops[n], name=S.candidate_name(*ops[n]), fn=S.core_unit(*ops[n]))
          for n in names]


def test_rank_rows_sorts_by_mean_val_acc_and_puts_diverged_last():
  cands = _candidates(["relu", "swish", "sq", "tanh"])
  metrics = {  # (seeds=2, candidates=4)
      "val_acc": np.array([[0.5, 0.7, 0.9, 0.6], [0.7, 0.7, 0.9, 0.4]]),
      "test_acc": np.array([[0.5, 0.6, 0.8, 0.6], [0.5, 0.6, 0.8, 0.4]]),
      "train_loss": np.array([[1.0, 0.9, np.nan, 1.1], [1.0, 0.9, 0.5, 1.1]]),
  }
  rows = E.rank_rows(cands, metrics)
  assert [r["name"] for r in rows] == ["x * sigmoid(x)", "max(x, 0)", "tanh(x)", "x * x"]
  assert [r["rank"] for r in rows] == [1, 2, 3, 4]
  assert rows[0]["val_acc"] == pytest.approx(0.7) and rows[0]["val_acc_std"] == 0.0
  assert rows[1]["val_acc"] == pytest.approx(0.6) and rows[1]["val_acc_std"] == pytest.approx(0.1)
  assert rows[3]["diverged"] and np.isnan(rows[3]["score"])
  table = E.markdown_table(rows)
  assert "| 1 | `x * sigmoid(x)` (Swish, β=1) | 70.0 ± 0.0 | 60.0 ± 0.0 |" in table
  assert "diverged |" in table.splitlines()[-1]


def test_mlp_uses_the_candidate_activation():
  params = search_child.init_mlp(jax.random.key(0), (5, 3, 2))
  x = jnp.linspace(-2.0, 2.0, 10).reshape(2, 5)
  unary, binary = ("x", "sigmoid", "zero"), ("mul", "max")
  got = search_child.mlp_logits(params, x, jnp.array([0, 1, 0]), unary, binary)  # x * sigmoid(x)
  (w1, b1), (w2, b2) = params
  h = x @ w1 + b1
  np.testing.assert_allclose(got, (h / (1 + np.exp(-h))) @ w2 + b2, rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def tiny_result(tmp_path_factory):
  plot = tmp_path_factory.mktemp("search") / "shapes.png"
  result = E.run(space="tiny", steps=15, seeds=2, top_k=2, final_steps=15, final_seeds=2,
                 num_candidates=6, plot_path=str(plot))
  return result, plot


@pytest.mark.slow
def test_tiny_search_structure(tiny_result):
  result, plot = tiny_result
  stage1, stage2 = result["stage1"], result["stage2"]
  assert result["num_enumerated"] == 32 and result["num_candidates"] == 6
  assert len(stage1) == 6 and [r["rank"] for r in stage1] == list(range(1, 7))
  scores = [r["val_acc"] for r in stage1 if not r["diverged"]]
  assert scores == sorted(scores, reverse=True)
  assert all(0.0 <= r["val_acc"] <= 1.0 and 0.0 <= r["test_acc"] <= 1.0 for r in stage1)
  # Stage 2: the top 2 of stage 1, plus Swish (the 6th tiny candidate) when not among them;
  # ReLU is not among the 6, so it is absent.
  names2 = {r["name"] for r in stage2}
  assert {r["name"] for r in stage1[:2]} <= names2
  assert E.SWISH in names2 and E.RELU not in names2
  assert len(stage2) == 2 + (E.SWISH not in {r["name"] for r in stage1[:2]})
  assert result["swish"]["stage1_rank"] == next(r["rank"] for r in stage1 if r["name"] == E.SWISH)
  assert result["relu"]["stage1_rank"] is None
  assert plot.exists() and plot.stat().st_size > 0
  json.dumps(result)  # results.json must be serialisable


@pytest.mark.slow
def test_report_lists_tables(tiny_result):
  result, _ = tiny_result
  text = E.report(result)
  assert "Stage 2 (re-evaluation)" in text and "| rank | function |" in text
  assert f"rank {result['swish']['stage1_rank']} of 6" in text


def test_bad_arguments_raise():
  with pytest.raises(ValueError, match="space"):
    E.run(space="huge")
  with pytest.raises(ValueError, match="top_k"):
    E.run(space="tiny", top_k=0)
