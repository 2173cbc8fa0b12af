"""docs/readme/nnx.md: its code blocks run as written and do what the text says."""

import pathlib
import re

import numpy as np
import pytest

DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "readme" / "nnx.md"


@pytest.mark.slow
def test_nnx_readme_example_runs():
  blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
  assert len(blocks) == 2
  namespace = {}
  for block in blocks:
    exec(compile(block, str(DOC), "exec"), namespace)  # pylint: disable=exec-used
  assert namespace["logits"].shape == (32, 10)
  assert np.all(np.isfinite(namespace["losses"]))
  assert namespace["losses"][-1] < namespace["losses"][0]
  assert namespace["lbfgs_losses"][-1] < namespace["lbfgs_losses"][0]
