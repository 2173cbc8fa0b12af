r"""Second-order methods vs scipy.optimize and Adam: iterations, evaluations, seconds.

Problems (``--problems``):
  * ``rosenbrock``: 2-D, from (-1.2, 1) (Nocedal & Wright's test), float64.
  * ``quad1e2``, ``quad1e4``: 100-D convex quadratics 0.5 x'Ax - b'x with log-spaced
    eigenvalues, condition number 1e2 / 1e4, float64.
  * ``logistic``: full-batch MNIST-1D softmax regression (410 parameters, L2 1e-4), float32.
  * ``mlp``: full-batch MNIST-1D MLP 40-32-10 (tanh; 1,642 parameters, L2 1e-4), float32.

Methods (``--methods``): ours (``newton`` = exact Newton, run where it has at most 1,000
parameters (above, 'auto' would pick Newton-CG: the ``newton_cg`` row), ``newton_cg``
(at most 10 CG iterations per step on the training problems), ``bfgs``, ``lbfgs``,
``cg`` = nonlinear CG with PRP+) against
``scipy.optimize.minimize`` with ``BFGS`` (skipped above 500 parameters: scipy updates
H with two dense n x n matrix products, O(n^3) per iteration), ``L-BFGS-B``, ``CG``,
``Newton-CG`` (exact Hessian-vector products from JAX), and on the training problems
Adam (lr 1e-2).

Every run stops at ||grad||_inf <= 1e-5 (scipy's ``gtol``; scipy's Newton-CG has no
gradient test and stops on ``xtol``) or at an iteration cap (``--max_iters`` on the test
problems, ``--train_iters`` / ``--adam_iters`` on the training problems).
Function evaluations count every (value, grad) or value call; Newton additionally
computes one Hessian (exact) or up to ``cg_max_iters`` Hessian-vector products per step
(column ``hess``). Our wall time is measured after a compile (warm-up) run; scipy's
includes its Python overhead (its JAX callbacks are jitted and warmed up too).

  python -m experiments.second_order [--out_dir=runs/second_order | --publish]

writes ``second_order.md`` / ``second_order.json`` and one PNG per training problem
(``second_order_<problem>.png``) into ``--out_dir``, or with ``--publish`` the JSON to
``docs/results/`` and the PNGs to ``docs/images/``. The problems are
``experiments/optim_problems.py``'s.
"""

from __future__ import annotations

import functools
import os
import time
from typing import Any, Callable

# One BLAS thread, set before numpy loads: on a loaded 2-core machine OpenBLAS threads
# made scipy's L-BFGS-B 500x slower (2.2 s vs 0.004 s on 2-D Rosenbrock, measured).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

from absl import app
from absl import flags
import jax
from jax.flatten_util import ravel_pytree
import jax.numpy as jnp
import numpy as np
import optax
import scipy.optimize

from experiments import common
from experiments.optim_problems import PROBLEMS
from flaxopt import optim
from flaxopt.optim import linesearch as ls

_PROBLEMS = flags.DEFINE_list(
    "problems", ["rosenbrock", "quad1e2", "quad1e4", "logistic", "mlp"], "Problems to run.")
_METHODS = flags.DEFINE_list(
    "methods", ["newton", "newton_cg", "bfgs", "lbfgs", "cg", "scipy_bfgs", "scipy_lbfgsb",
                "scipy_cg", "scipy_newton_cg", "adam"], "Methods to run.")
_TRAIN_ITERS = flags.DEFINE_integer("train_iters", 100, "Iterations on the training problems.")
_ADAM_ITERS = flags.DEFINE_integer("adam_iters", 1000, "Adam iterations on training problems.")
_MAX_ITERS = flags.DEFINE_integer("max_iters", 5000, "Iteration cap on the test problems.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed for the quadratics and the MLP init.")

GTOL = 1e-5
# Our methods: name -> constructor of the optax transform (library defaults unless below).
OURS: dict[str, Callable[..., optax.GradientTransformationExtraArgs]] = {
    "newton": optim.newton,
    "newton_cg": optim.newton_cg,
    "bfgs": optim.bfgs,
    "lbfgs": functools.partial(optim.lbfgs, memory_size=10),
    "cg": functools.partial(optim.conjugate_gradient, beta="prp+"),
    "adam": functools.partial(optim.adam, learning_rate=1e-2),
}
# Extra kwargs per problem kind: Newton-CG capped at 10 HVPs per step when training
# (a 1-core budget; Martens 2010 uses up to 250).
KIND_KWARGS: dict[str, dict[str, dict[str, Any]]] = {
    "solve": {},
    "train": {"newton": {"cg_max_iters": 10}, "newton_cg": {"cg_max_iters": 10}},
}
EXACT_NEWTON_MAX_SIZE = 1000  # optim.newton's default ``exact_max_size``
SCIPY_BFGS_MAX_SIZE = 500
SCIPY: dict[str, str] = {"scipy_bfgs": "BFGS", "scipy_lbfgsb": "L-BFGS-B", "scipy_cg": "CG",
                         "scipy_newton_cg": "Newton-CG"}


# ----------------------------------------------------------------------------
# Runners.
# ----------------------------------------------------------------------------


def _uses_wolfe(state: Any) -> bool:
  is_ls = lambda s: isinstance(s, ls.WolfeLinesearchState)
  return any(is_ls(s) for s in jax.tree_util.tree_leaves(state, is_leaf=is_ls))


def _hessian_cost(name: str, state: Any) -> int:
  """Hessians (exact Newton: 1) or Hessian-vector products (Newton-CG) of one step."""
  if not name.startswith("newton"):
    return 0
  newton_state = state[0]
  iters = int(newton_state.cg_iters)
  return iters if iters > 0 else 1


def run_ours(name: str, f, x0, max_iters: int, stop_at_gtol: bool, accuracy=None,
             **kwargs: Any) -> dict[str, Any]:
  """Our optimizer from x0: history of f and the counts (evaluations, Hessians, seconds)."""
  opt = OURS[name](**kwargs)
  state0 = opt.init(x0)
  wolfe = _uses_wolfe(state0)
  first_order = name == "adam"
  value_and_grad = (optax.value_and_grad_from_state(f) if wolfe else jax.value_and_grad(f))

  @jax.jit
  def step(x, state):
    value, grad = value_and_grad(x, state=state) if wolfe else value_and_grad(x)
    updates, state = opt.update(grad, state, x, value=value, grad=grad, value_fn=f)
    gmax = jnp.max(jnp.stack([jnp.max(jnp.abs(g)) for g in jax.tree_util.tree_leaves(grad)]))
    return optax.apply_updates(x, updates), state, value, gmax

  jax.block_until_ready(step(x0, state0))  # compile
  x, state = x0, state0
  values, times, evals, hess = [], [], 0, 0
  start = time.perf_counter()
  produced_at = 0.0  # when the current iterate x was computed
  for it in range(max_iters + 1):
    new_x, new_state, value, gmax = step(x, state)
    values.append(float(value))
    times.append(produced_at)
    produced_at = time.perf_counter() - start
    if not wolfe or it == 0:
      evals += 1
    if (stop_at_gtol and float(gmax) <= GTOL) or it == max_iters or not np.isfinite(values[-1]):
      break
    if not first_order:
      evals += int(optax.tree.get(new_state, "num_evals"))
      hess += _hessian_cost(name, new_state)
    x, state = new_x, new_state
  out = dict(iters=it, nfev=evals, hess=hess, f=values[-1], gmax=float(gmax),
             seconds=times[-1], values=values, times=times)  # seconds to reach the last x
  if accuracy is not None:
    out["test_acc"] = float(accuracy(x))
  return out


def run_scipy(name: str, f, x0, max_iters: int, stop_at_gtol: bool, accuracy=None
              ) -> dict[str, Any]:
  """scipy.optimize.minimize on the flattened parameters (float64), same counts."""
  flat0, unravel = ravel_pytree(x0)
  dtype = flat0.dtype
  fg = jax.jit(jax.value_and_grad(lambda v: f(unravel(v.astype(dtype)))))
  hvp = jax.jit(lambda v, t: jax.jvp(jax.grad(lambda u: f(unravel(u.astype(dtype)))),
                                     (v,), (t,))[1])
  counts = {"hvp": 0}
  fg(flat0)  # compile
  hvp(flat0, flat0)
  seen: dict[bytes, float] = {}  # f at points scipy evaluated, so the callback costs nothing
  values, times = [], []

  def fun(v):
    value, grad = fg(jnp.asarray(v, dtype))
    seen[np.asarray(v).tobytes()] = float(value)
    return float(value), np.asarray(grad, np.float64)

  def hessp(v, t):
    counts["hvp"] += 1
    return np.asarray(hvp(jnp.asarray(v, dtype), jnp.asarray(t, dtype)), np.float64)

  def callback(v):
    key = np.asarray(v).tobytes()
    values.append(seen[key] if key in seen else float(fg(jnp.asarray(v, dtype))[0]))
    times.append(time.perf_counter() - start)

  method = SCIPY[name]
  options = {"maxiter": max_iters}
  if method in ("BFGS", "CG"):
    options["gtol"] = GTOL if stop_at_gtol else 0.0
  elif method == "L-BFGS-B":
    options.update(gtol=GTOL if stop_at_gtol else 0.0, ftol=1e-15 if stop_at_gtol else 0.0,
                   maxcor=10)
  elif method == "Newton-CG":
    options["xtol"] = 1e-10 if stop_at_gtol else 1e-30
  values.append(float(fg(flat0)[0]))
  times.append(0.0)
  start = time.perf_counter()
  res = scipy.optimize.minimize(fun, np.asarray(flat0, np.float64), jac=True, method=method,
                                hessp=hessp if method == "Newton-CG" else None,
                                callback=callback, options=options)
  seconds = time.perf_counter() - start
  x = unravel(jnp.asarray(res.x, dtype))
  gmax = float(np.max(np.abs(fun(res.x)[1])))
  out = dict(iters=int(res.nit), nfev=int(res.nfev), hess=counts["hvp"], f=float(res.fun),
             gmax=gmax, seconds=seconds, values=values, times=times)
  if accuracy is not None:
    out["test_acc"] = float(accuracy(x))
  return out


def run(problem: str, method: str, seed: int) -> dict[str, Any]:
  make, kind = PROBLEMS[problem]
  f, x0, accuracy = make(seed)
  if kind == "solve":
    if method == "adam":
      return {}
    max_iters = _MAX_ITERS.value
  else:
    max_iters = _ADAM_ITERS.value if method == "adam" else _TRAIN_ITERS.value
  n = ravel_pytree(x0)[0].size
  if method in SCIPY:
    if method == "scipy_bfgs" and n > SCIPY_BFGS_MAX_SIZE:
      return {}  # O(n^3) per iteration: scipy updates H with two dense matrix products
    return run_scipy(method, f, x0, max_iters, True, accuracy)
  if method == "newton" and n > EXACT_NEWTON_MAX_SIZE:
    return {}  # 'auto' picks Newton-CG here: the same run as newton_cg
  return run_ours(method, f, x0, max_iters, True, accuracy,
                  **KIND_KWARGS[kind].get(method, {}))


# ----------------------------------------------------------------------------
# Output.
# ----------------------------------------------------------------------------


def markdown_table(results: dict[str, dict[str, dict[str, Any]]]) -> str:
  lines = ["| problem | method | iterations | f evals | Hessians / HVPs | final f | "
           "max abs grad | seconds | test acc |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
  for problem, by_method in results.items():
    for method, r in by_method.items():
      if not r:
        continue
      acc = f"{r['test_acc']:.3f}" if "test_acc" in r else ""
      lines.append(f"| {problem} | {method} | {r['iters']} | {r['nfev']} | {r['hess']} | "
                   f"{r['f']:.6g} | {r['gmax']:.2e} | {r['seconds']:.3f} | {acc} |")
  return "\n".join(lines) + "\n"


def plot(problem: str, by_method: dict[str, dict[str, Any]], path: str) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, (ax_it, ax_t) = plt.subplots(1, 2, figsize=(11, 4))
  for method, r in by_method.items():
    if not r:
      continue
    values = np.asarray(r["values"])
    ax_it.plot(np.arange(len(values)), values, label=method)
    ax_t.plot(np.asarray(r["times"]) + 1e-4, values, label=method)
  for ax, xlabel in ((ax_it, "iteration"), (ax_t, "seconds (after compile)")):
    ax.set_xscale("log" if xlabel.startswith("seconds") else "symlog")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("training loss (incl. L2)")
    ax.grid(alpha=0.3)
  ax_it.legend(fontsize=8)
  fig.suptitle(f"MNIST-1D {problem}, full batch")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  jax.config.update("jax_enable_x64", True)  # float64 for the test problems; training is f32
  for name in _PROBLEMS.value:
    if name not in PROBLEMS:
      raise ValueError(f"Unknown problem {name!r}; valid: {', '.join(PROBLEMS)}")
  for name in _METHODS.value:
    if name not in OURS and name not in SCIPY:
      raise ValueError(f"Unknown method {name!r}; valid: {', '.join([*OURS, *SCIPY])}")
  out_dir = common.OUT_DIR.value or os.path.join("runs", "second_order")
  plot_dir = common.IMAGES_DIR if common.PUBLISH.value else out_dir
  results_dir = common.RESULTS_DIR if common.PUBLISH.value else out_dir
  os.makedirs(out_dir, exist_ok=True)
  os.makedirs(plot_dir, exist_ok=True)
  results: dict[str, dict[str, dict[str, Any]]] = {}
  for problem in _PROBLEMS.value:
    results[problem] = {}
    for method in _METHODS.value:
      r = run(problem, method, _SEED.value)
      results[problem][method] = r
      if r:
        print(f"{problem} {method}: iters {r['iters']}, nfev {r['nfev']}, f {r['f']:.6g}, "
              f"{r['seconds']:.3f}s", flush=True)
    if PROBLEMS[problem][1] == "train":
      plot(problem, results[problem], os.path.join(plot_dir, f"second_order_{problem}.png"))
  table = markdown_table(results)
  print(table)
  with open(os.path.join(out_dir, "second_order.md"), "w") as fh:
    fh.write(table)
  common.write_results(os.path.join(results_dir, "second_order.json"),
                       "experiments/second_order.py", results, table)


if __name__ == "__main__":
  app.run(main)
