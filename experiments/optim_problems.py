"""Optimizer test problems for experiments/second_order.py: Rosenbrock, ill-conditioned
quadratics, and full-batch MNIST-1D softmax regression and a small tanh MLP.

* ``rosenbrock``: 2-D, from (-1.2, 1) (Nocedal & Wright's test), float64.
* ``quad1e2``, ``quad1e4``: 100-D convex quadratics 0.5 x'Ax - b'x with log-spaced
  eigenvalues, condition number 1e2 / 1e4, float64.
* ``logistic``: MNIST-1D softmax regression (410 parameters, L2 1e-4), float32.
* ``mlp``: MNIST-1D MLP 40-32-10 (tanh; 1,642 parameters, L2 1e-4), float32.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments import common

L2 = 1e-4
HIDDEN = 32


# Problems: name -> (make(seed) -> (f, x0, accuracy or None), kind). kind: 'solve' (to
# tolerance) or 'train'.

def rosenbrock_problem(seed: int):
  del seed
  f = lambda x: 100.0 * (x[1] - x[0] ** 2) ** 2 + (1.0 - x[0]) ** 2
  return f, jnp.array([-1.2, 1.0], jnp.float64), None


def quadratic_problem(condition: float, n: int = 100):
  def make(seed: int):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    a = jnp.asarray((q * np.logspace(0, np.log10(condition), n)) @ q.T)
    b = jnp.asarray(rng.normal(size=n))
    f = lambda x: 0.5 * x @ (a @ x) - b @ x
    return f, jnp.zeros(n, jnp.float64), None
  return make


def _xent(logits: jax.Array, y: jax.Array) -> jax.Array:
  return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def _l2(params: Any) -> jax.Array:
  return sum(jnp.sum(p ** 2) for p in jax.tree_util.tree_leaves(params))


def logistic_apply(params, x):
  return x @ params["w"] + params["b"]


def mlp_apply(params, x):
  h = jnp.tanh(x @ params["w1"] + params["b1"])
  return h @ params["w2"] + params["b2"]


def training_problem(model: str):
  def make(seed: int):
    d = common.load_mnist1d()
    mean, std = d["x"].mean(0), d["x"].std(0) + 1e-6
    x = jnp.asarray((d["x"] - mean) / std, jnp.float32)
    x_test = jnp.asarray((d["x_test"] - mean) / std, jnp.float32)
    y, y_test = jnp.asarray(d["y"], jnp.int32), jnp.asarray(d["y_test"], jnp.int32)
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
    if model == "logistic":
      apply = logistic_apply
      params = {"w": jnp.zeros((40, 10), jnp.float32), "b": jnp.zeros(10, jnp.float32)}
    else:
      apply = mlp_apply
      normal = lambda k, shape: jax.random.normal(k, shape, jnp.float32) / np.sqrt(shape[0])
      params = {"w1": normal(k1, (40, HIDDEN)), "b1": jnp.zeros(HIDDEN, jnp.float32),
                "w2": normal(k2, (HIDDEN, 10)), "b2": jnp.zeros(10, jnp.float32)}
    f = lambda p: _xent(apply(p, x), y) + L2 * _l2(p)
    accuracy = jax.jit(lambda p: jnp.mean(jnp.argmax(apply(p, x_test), -1) == y_test))
    return f, params, accuracy
  return make


PROBLEMS: dict[str, tuple[Callable[[int], Any], str]] = {
    "rosenbrock": (rosenbrock_problem, "solve"),
    "quad1e2": (quadratic_problem(1e2), "solve"),
    "quad1e4": (quadratic_problem(1e4), "solve"),
    "logistic": (training_problem("logistic"), "train"),
    "mlp": (training_problem("mlp"), "train"),
}
