"""experiments/common.py: where a script's outputs go, and the results JSON it writes."""

import json
import os

import numpy as np
import pytest

from experiments import common


@pytest.mark.parametrize("out_dir, publish, plot, results", [
    (None, False, "runs/repro_x/repro_x.png", "runs/repro_x/repro_x.json"),
    ("/tmp/o", False, "/tmp/o/repro_x.png", "/tmp/o/repro_x.json"),
    ("/tmp/o", True, os.path.join(common.IMAGES_DIR, "repro_x.png"),
     os.path.join(common.RESULTS_DIR, "repro_x.json")),
])
def test_outputs_go_to_docs_only_when_published(out_dir, publish, plot, results):
  assert common.output_paths("x", out_dir, publish) == (plot, results)
  docs = os.path.join(common.REPO, "docs")
  assert plot.startswith(docs) == results.startswith(docs) == publish


def test_write_results_is_strict_json(tmp_path):
  path = str(tmp_path / "a" / "r.json")
  common.write_results(path, "experiments/x.py",
                       {"acc": np.float32(0.5), "nan": float("nan"), "ok": True,
                        "curve": [(1, np.int64(2))], "arr": np.arange(2)}, "table")
  with open(path) as f:
    data = json.load(f)
  assert data == {"script": "experiments/x.py", "report": "table",
                  "result": {"acc": 0.5, "nan": "nan", "ok": True, "curve": [[1, 2]],
                             "arr": [0, 1]}}
  assert not os.path.exists(path + ".tmp")
