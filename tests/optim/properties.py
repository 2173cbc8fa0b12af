"""One table of every first-order optimizer in ``flaxopt.optim``, for the shared properties.

``tests/optim/test_properties.py`` runs every case of ``CASES`` through every property
(convergence, dtypes and state structure, one compilation, jit = eager, inject_hyperparams
under vmap, composition with optax, ...). The reference comparisons stay with each family:
``test_alias.py`` (optax where conventions match), ``test_modern_a.py`` and
``test_modern_b.py`` (recorded trajectories of the authors' / PyTorch's code).

A case that cannot have a property lists it in ``Case.skip`` with the reason in ``WHY``;
the second-order methods (``SECOND_ORDER``) have their own table in test_second_order.py.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from flaxopt import optim

# The programs here are tiny: XLA's compile time dominates, so compile without the expensive
# LLVM passes (about 40% less CPU per test; results unchanged at the tolerances used).
fast_jit = functools.partial(jax.jit, compiler_options={
    "xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True})

SECOND_ORDER = frozenset({"bfgs", "conjugate_gradient", "lbfgs", "newton", "newton_cg"})

# Properties a case may skip, and why (every skip in the table names one of these).
WHY = {
    "rosenbrock": "the tuned step counts reach the parabola's minimum only (issue 18's table)",
    "float64": "float64 is checked by the recorded float64 reference trajectories instead",
    "moments_dtype": "second-moment statistics / eigenbases are kept in float32 by design",
}


@dataclasses.dataclass(frozen=True)
class Case:
  """One optimizer configuration.

  ``kwargs``/``steps``: the convergence run. ``hyper``: the kwargs of the hyperparameter
  properties (default: ``kwargs`` with a float learning rate). ``traced``: hyperparameters
  that get per-member values under vmap (None: every float argument, see ``traced_names``).
  ``static``: ``inject_hyperparams``' static_args (None: the str/bool/int kwargs).
  ``extra``: what ``update`` needs besides the gradient: "" | "value_fn" | "sophia".
  """
  name: str
  kwargs: dict
  steps: int
  extra: str = ""
  skip: frozenset = frozenset()
  hyper: dict | None = None
  traced: tuple | None = None
  static: tuple | None = None
  inject_rtol: float = 1e-6
  family: str = "alias"

  def make(self, **overrides: Any) -> optax.GradientTransformation:
    return optim.REGISTRY[self.name](**{**self.kwargs, **overrides})

  def hyperparameters(self) -> dict:
    if self.hyper is not None:
      return dict(self.hyper)
    lr = self.kwargs["learning_rate"]
    return {**self.kwargs, "learning_rate": MEMBER_VALUES["learning_rate"][0]
            if callable(lr) else lr}

  def static_args(self) -> tuple:
    if self.static is not None:
      return self.static
    return tuple(k for k, v in self.hyperparameters().items()
                 if isinstance(v, (str, bool, int)))

  def update_fn(self, tx, value_fn):
    """``update(g, state, params, t)`` with what this optimizer needs besides the gradient.

    Sophia gets a fixed +-1 probe shaped like the parameters (no RNG to compile).
    """
    tx = optax.with_extra_args_support(tx)

    def update(g, state, params, t):
      del t
      if self.extra == "value_fn":
        return tx.update(g, state, params, value_fn=value_fn)
      if self.extra == "sophia":
        probe = jax.tree.map(lambda x: jnp.where(jnp.arange(x.size).reshape(x.shape) % 3 == 0,
                                                 -1, 1).astype(x.dtype), params)
        return tx.update(g, state, params, value_fn=value_fn, probe=probe)
      return tx.update(g, state, params)
    return update

  def __str__(self) -> str:
    return f"{self.name}({','.join(k for k in self.kwargs if k != 'learning_rate')})"


_NO_ROSENBROCK_F64 = frozenset({"rosenbrock", "float64"})

CASES = [
    # flaxopt.optim.alias (issue 16): optax's first-order family with PyTorch's conventions.
    Case("sgd", dict(learning_rate=1e-3), 20000),
    Case("momentum", dict(learning_rate=1e-3, momentum=0.9), 5000),
    Case("nesterov", dict(learning_rate=1e-3, momentum=0.9), 5000),
    Case("adagrad", dict(learning_rate=0.5), 10000),
    Case("adadelta", dict(learning_rate=optax.cosine_decay_schedule(0.2, 10000)), 10000),
    Case("rmsprop", dict(learning_rate=1e-3), 10000),
    Case("rmsprop", dict(learning_rate=1e-3, centered=True, momentum=0.9), 5000),
    Case("adam", dict(learning_rate=1e-2), 5000),
    Case("adamax", dict(learning_rate=1e-2), 5000),
    Case("nadam", dict(learning_rate=1e-2), 5000),
    Case("nadam", dict(learning_rate=1e-2, constant_momentum=True), 5000),
    Case("amsgrad", dict(learning_rate=1e-2), 5000),
    Case("adafactor", dict(learning_rate=0.05), 50000),
    Case("adafactor", dict(learning_rate=1e-2, beta1=0.9), 5000),
    # Issue 17 part A.
    *[dataclasses.replace(c, family="a", traced=("learning_rate",), inject_rtol=1e-5,
                          skip=c.skip | {"float64"}) for c in [
        Case("adamw", dict(learning_rate=1e-2, weight_decay=1e-4), 4000),
        Case("radam", dict(learning_rate=1e-2), 4000),
        Case("lion", dict(learning_rate=optax.cosine_decay_schedule(3e-3, 6000)), 6000),
        Case("lamb", dict(learning_rate=optax.cosine_decay_schedule(1e-2, 6000), eps=1e-8),
             6000),
        Case("lars", dict(learning_rate=1e-3, trust_coefficient=0.1), 6000),
        Case("adopt", dict(learning_rate=1e-2), 4000),
        Case("ademamix", dict(learning_rate=1e-2, b3=0.99, alpha=2.0), 4000),
        Case("schedule_free_sgd", dict(learning_rate=2e-3, warmup_steps=10), 40000),
        Case("schedule_free_adamw", dict(learning_rate=1e-2), 6000),
        Case("lookahead", dict(learning_rate=1e-2, base="adam"), 5000),
        Case("sam", dict(learning_rate=1e-2, base="adam", rho=1e-3), 4000, extra="value_fn"),
    ]],
    # Issue 17 part B: preconditioned and learning-rate-free methods. Their hyperparameter
    # properties run with weight decay and frequent preconditioner refreshes (``hyper``).
    *[dataclasses.replace(c, family="b", traced=("learning_rate",),
                          inject_rtol=max(c.inject_rtol, 1e-5),
                          skip=c.skip | _NO_ROSENBROCK_F64) for c in [
        Case("muon", dict(learning_rate=optax.cosine_decay_schedule(0.1, 500),
                          mask="matrices"), 500,
             hyper=dict(learning_rate=0.05, momentum=0.9, weight_decay=0.1, mask="matrices"),
             static=("ns_steps", "mask")),
        Case("prodigy", dict(learning_rate=optax.cosine_decay_schedule(1.0, 500)), 500,
             hyper=dict(learning_rate=1.0, weight_decay=0.1, d0=1e-3), static=()),
        Case("dadapt_adam", dict(learning_rate=optax.cosine_decay_schedule(1.0, 500)), 500,
             hyper=dict(learning_rate=1.0, weight_decay=0.1, d0=1e-3), static=()),
        Case("shampoo", dict(learning_rate=optax.cosine_decay_schedule(0.05, 500),
                             start_preconditioning_step=2, preconditioning_compute_steps=2),
             500, skip=frozenset({"moments_dtype"}),
             hyper=dict(learning_rate=0.05, weight_decay=0.1, start_preconditioning_step=1,
                        preconditioning_compute_steps=2),
             static=("block_size", "start_preconditioning_step", "statistics_compute_steps",
                     "preconditioning_compute_steps", "inverse_exponent_override"),
             # Matrix roots of 2x2 / 3x3 float32 statistics amplify the rounding of float32
             # hyperparameter arrays (vs Python floats) to a few 1e-5 relative.
             inject_rtol=1e-4),
        Case("sophia", dict(learning_rate=optax.cosine_decay_schedule(0.05, 500), gamma=1.0,
                            update_period=2), 500, extra="sophia",
             hyper=dict(learning_rate=0.05, gamma=0.5, weight_decay=0.1, update_period=2),
             static=("update_period", "seed")),
        Case("soap", dict(learning_rate=optax.cosine_decay_schedule(0.05, 500),
                          weight_decay=0.0, precondition_frequency=3), 500,
             skip=frozenset({"moments_dtype"}),
             hyper=dict(learning_rate=0.05, weight_decay=0.1, precondition_frequency=2),
             static=("precondition_frequency", "max_precondition_dim"), inject_rtol=1e-4),
    ]],
]
IDS = [str(c) for c in CASES]
ONE_CASE_PER_NAME = list({c.name: c for c in reversed(CASES)}.values())


# Found when the three tables were folded into one (the properties had run on the alias
# table only): (property, optimizer) -> what fails. Strict xfails: a fix turns them into
# failures, and then the entry goes. None open (the five found were fixed in the library).
KNOWN_ISSUES: dict[tuple[str, str], str] = {}


def cases_for(prop: str, cases=None) -> list:
  """pytest params of ``cases`` (default: all) for property ``prop``: known issues xfail."""
  import pytest  # pylint: disable=g-import-not-at-top
  out = []
  for c in CASES if cases is None else cases:
    issue = KNOWN_ISSUES.get((prop, c.name))
    marks = [pytest.mark.xfail(strict=True, reason=issue)] if issue else []
    out.append(pytest.param(c, id=str(c), marks=marks))
  return out


# Per-member values of every float hyperparameter for the stacked (vmapped) runs; member 0
# of the learning rate is also the float learning rate of scheduled cases.
MEMBER_VALUES = {
    "learning_rate": (1e-2, 3e-3, 3e-2),
    "momentum": (0.9, 0.5, 0.1),
    "initial_accumulator_value": (0.0, 0.1, 1.0),
    "eps": (1e-8, 1e-4, 1e-2),
    "eps_root": (0.0, 1e-6, 1e-3),
    "rho": (0.9, 0.95, 0.5),
    "decay": (0.99, 0.9, 0.5),
    "b1": (0.9, 0.8, 0.6),
    "b2": (0.999, 0.99, 0.9),
    "momentum_decay": (4e-3, 1e-2, 0.1),
    "decay_rate": (0.8, 0.5, 1.0),
    "clipping_threshold": (1.0, 0.5, 2.0),
    "beta1": (0.9, 0.6, 0.1),
    "eps1": (1e-30, 1e-10, 1e-3),
    "eps2": (1e-3, 1e-2, 0.1),
}


def traced_names(case: Case) -> list[str]:
  """The hyperparameters given per-member values: ``case.traced``, else learning_rate and
  every argument of the case whose value is a float (not a bool or None)."""
  if case.traced is not None:
    return list(case.traced)
  params = inspect.signature(optim.REGISTRY[case.name]).parameters
  return [n for n, p in params.items() if n == "learning_rate"
          or isinstance(case.kwargs.get(n, p.default), float)]


# ----------------------------------------------------------------------------
# Problems.
# ----------------------------------------------------------------------------

PARABOLA_TARGET = {"w": jnp.array([[1.0, -1.0, 0.5], [2.0, 0.0, -0.5]]),
                   "b": jnp.array([1.0, -1.0, 1.0])}


def parabola(params):
  return sum(jnp.sum((params[k] - PARABOLA_TARGET[k]) ** 2) for k in params)


def rosenbrock(xy):
  return (1.0 - xy[0]) ** 2 + 100.0 * (xy[1] - xy[0] ** 2) ** 2


def small_problem(dtype=jnp.float32):
  """A (2, 3) matrix and a (3,) bias, with three fixed (rank-1) gradients."""
  params = {"w": jnp.linspace(-1.0, 1.0, 6).reshape(2, 3).astype(dtype),
            "b": jnp.array([0.5, -0.25, 2.0], dtype)}
  grads = [jax.tree.map(lambda p, s=s: (s * (p + 0.3)).astype(dtype), params)
           for s in (1.0, -0.5, 2.0)]
  return params, grads


def small_loss(params):
  """A loss for the optimizers that evaluate one (SAM, Sophia); its gradient is not ``grads``."""
  return sum(jnp.sum(jnp.cos(x.astype(jnp.float32))) for x in jax.tree.leaves(params))


def random_grads(params, num_steps=3):
  """Fixed full-rank gradients whose scale changes by 100x, so max/EMA branches switch."""
  rng = np.random.default_rng(0)
  return [jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape) * 10.0 ** (t % 3 - 1),
                                             p.dtype), params) for t in range(num_steps)]


def run_updates(case: Case, tx, params, grads, jit=True):
  """The updates of ``tx`` over ``grads`` (parameters move), and the final state."""
  update = case.update_fn(tx, small_loss)
  update = fast_jit(update) if jit else update
  state = tx.init(params)
  out = []
  for t, g in enumerate(grads):
    u, state = update(g, state, params, t)
    params = optax.apply_updates(params, u)
    out.append(u)
  return out, state
