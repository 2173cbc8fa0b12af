"""Tests for flaxopt.optim.second_order: textbook iteration counts, exactness, references."""

import functools

from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from flaxopt import optim
from flaxopt.optim import second_order as so


def rosenbrock(x):
  return 100.0 * (x[1] - x[0] ** 2) ** 2 + (1.0 - x[0]) ** 2


def _minimize(opt, f, x0, tol=1e-5, max_iters=200):
  """Runs ``opt`` from x0 until ||grad|| <= tol; returns (x, iterations, evaluations)."""
  state = opt.init(x0)

  @jax.jit
  def step(x, state):
    value, grad = jax.value_and_grad(f)(x)
    updates, state = opt.update(grad, state, x, value=value, grad=grad, value_fn=f)
    gnorm = optax.tree.norm(grad)
    return optax.apply_updates(x, updates), state, gnorm

  x, evals = x0, 0
  for it in range(max_iters + 1):
    new_x, new_state, gnorm = step(x, state)
    if float(gnorm) <= tol:
      return x, it, evals
    x, state = new_x, new_state
    evals += int(optax.tree.get(state, "num_evals"))
  return x, max_iters, evals


# (name, constructor, kwargs, (min, max) iterations, inclusive, from (-1.2, 1) to
# ||grad|| <= 1e-5). Nocedal & Wright (2006, Section 3.5 / 6.1) report 21 iterations for
# Newton with a backtracking search and 34 for BFGS on this problem: both are pinned exactly
# (float64, deterministic). The others are measured (newton_exact_wolfe 21, newton_cg 21,
# newton_cg_forcing 63, lbfgs 34, cg fr/pr/prp+/hs/dy 53/33/35/35/53) and kept in bands.
ROSENBROCK_CASES = (
    ("newton", so.newton, {}, (21, 21)),
    ("newton_exact_wolfe", so.newton, {"method": "exact", "linesearch": "wolfe"}, (15, 29)),
    ("newton_cg", so.newton_cg, {"cg_tol": 1e-10}, (15, 29)),
    ("newton_cg_forcing", so.newton_cg, {}, (15, 99)),
    ("bfgs", so.bfgs, {}, (34, 34)),
    ("lbfgs", so.lbfgs, {"memory_size": 5}, (20, 49)),
    ("cg_fr", so.conjugate_gradient, {"beta": "fr"}, (20, 119)),
    ("cg_pr", so.conjugate_gradient, {"beta": "pr"}, (20, 119)),
    ("cg_prp+", so.conjugate_gradient, {"beta": "prp+"}, (20, 119)),
    ("cg_hs", so.conjugate_gradient, {"beta": "hs"}, (20, 119)),
    ("cg_dy", so.conjugate_gradient, {"beta": "dy"}, (20, 119)),
)


class RosenbrockTest(parameterized.TestCase):

  @parameterized.named_parameters(*ROSENBROCK_CASES)
  def test_converges_to_one_one(self, ctor, kwargs, band):
    with jax.enable_x64(True):
      x, iters, _ = _minimize(ctor(**kwargs), rosenbrock, jnp.array([-1.2, 1.0]),
                              max_iters=band[1] + 1)
      self.assertBetween(iters, band[0], band[1])
      chex.assert_trees_all_close(x, jnp.ones(2), atol=1e-4)


def _spd(n, eigenvalues, seed=0):
  q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(n, n)))
  return (q * np.asarray(eigenvalues, float)) @ q.T


def _quadratic(a, b):
  a, b = jnp.asarray(a), jnp.asarray(b)
  return lambda x: 0.5 * x @ a @ x - b @ x


def linear_cg_iterates(a, b, x0, num_steps):
  """Nocedal & Wright Algorithm 5.2 (linear CG) in numpy: the reference path."""
  x = np.array(x0, float)
  r = a @ x - b
  p = -r
  path = [x.copy()]
  for _ in range(num_steps):
    if np.linalg.norm(r) < 1e-14:
      break
    alpha = (r @ r) / (p @ a @ p)
    x = x + alpha * p
    r_new = r + alpha * (a @ p)
    p = -r_new + (r_new @ r_new) / (r @ r) * p
    r = r_new
    path.append(x.copy())
  return np.array(path)


class QuadraticTest(parameterized.TestCase):

  @parameterized.named_parameters(("exact", "exact"), ("cg", "cg"))
  def test_newton_one_step(self, method):
    with jax.enable_x64(True):
      a, b = _spd(5, [1.0, 2.0, 5.0, 10.0, 50.0]), np.arange(5.0)
      f = _quadratic(a, b)
      x0 = jnp.ones(5)
      opt = so.newton(method=method, cg_tol=1e-12)
      value, grad = jax.jit(jax.value_and_grad(f))(x0)
      updates, state = jax.jit(functools.partial(opt.update, value_fn=f))(
          grad, opt.init(x0), x0, value=value, grad=grad)
      chex.assert_trees_all_close(optax.apply_updates(x0, updates), np.linalg.solve(a, b),
                                  rtol=1e-9)
      self.assertEqual(float(state[0].shift), 0.0)

  @parameterized.named_parameters(*[(b, b) for b in so.BETA_RULES])
  def test_nonlinear_cg_reproduces_linear_cg(self, beta):
    with jax.enable_x64(True):
      n = 6
      a, b = _spd(n, [1.0, 3.0, 7.0, 20.0, 60.0, 100.0], seed=1), np.linspace(-1, 1, n)
      f = _quadratic(a, b)
      x0 = np.full(n, 0.5)
      expected = linear_cg_iterates(a, b, x0, n)
      opt = so.conjugate_gradient(beta=beta)
      step = jax.jit(functools.partial(_step, opt, f))
      x, state = jnp.asarray(x0), opt.init(jnp.asarray(x0))
      for k in range(1, len(expected)):
        x, state = step(x, state)
        np.testing.assert_allclose(x, expected[k], rtol=1e-7, atol=1e-9)
      np.testing.assert_allclose(x, np.linalg.solve(a, b), rtol=1e-7)

  def test_cg_converges_in_r_steps_for_r_distinct_eigenvalues(self):
    with jax.enable_x64(True):
      a, b = _spd(6, [1.0, 1.0, 4.0, 4.0, 9.0, 9.0], seed=2), np.ones(6)
      f = _quadratic(a, b)
      opt = so.conjugate_gradient(beta="fr")
      step = jax.jit(functools.partial(_step, opt, f))
      x, state = jnp.zeros(6), opt.init(jnp.zeros(6))
      for _ in range(3):
        x, state = step(x, state)
      self.assertLess(float(jnp.linalg.norm(jax.grad(f)(x))), 1e-8)


def _step(opt, f, x, state):
  value, grad = jax.value_and_grad(f)(x)
  updates, state = opt.update(grad, state, x, value=value, grad=grad, value_fn=f)
  return optax.apply_updates(x, updates), state


def _tree_problem(params):
  """A non-quadratic objective of a pytree (a dict of a (2, 2) and a (3,) leaf)."""
  flat = jnp.concatenate([params["w"].reshape(-1), params["b"]])
  return _flat_problem(flat)


def _flat_problem(x):
  c = jnp.linspace(0.5, 2.0, x.shape[0], dtype=x.dtype)
  return jnp.sum(c * (x - 1.0) ** 2) + 0.25 * jnp.sum(x ** 4) + jnp.log1p(jnp.sum(jnp.exp(x)))


# Every alias with its default line search; the same table drives pytree/dtype/jit tests.
METHODS = (
    ("newton", so.newton, {}),
    ("newton_cg", so.newton_cg, {}),
    ("bfgs", so.bfgs, {}),
    ("lbfgs", so.lbfgs, {"memory_size": 3}),
    ("conjugate_gradient", so.conjugate_gradient, {}),
)


# Stacked runs (a leading "member" axis): float hyperparameters, line-search constants
# included, enter traced per member (Newton's damping and min_shift and BFGS's min_curvature
# trace too; one case keeps the test time down). Params float32, hyperparameters float64 (x64 on): the
# line searches keep their loop carries in the params' compute dtype.
STACKED = (
    ("cg_wolfe", lambda learning_rate, increase_factor, max_step, curv_rtol:
     so.conjugate_gradient(learning_rate, linesearch_kwargs={
         "increase_factor": increase_factor, "max_step": max_step, "curv_rtol": curv_rtol}),
     {"learning_rate": (1.0, 0.5, 0.8), "increase_factor": (2.0, 3.0, 1.5),
      "max_step": (1e10, 10.0, 100.0), "curv_rtol": (0.1, 0.5, 0.3)}),
)


@pytest.mark.parametrize("make,values", [c[1:] for c in STACKED], ids=[c[0] for c in STACKED])
def test_stacked_hyperparameters_match_solo_runs(make, values):
  def run(hps):
    x = jnp.linspace(-1.0, 1.5, 4, dtype=jnp.float32)
    opt = make(**hps)
    return jax.lax.fori_loop(0, 3, lambda _, c: _step(opt, _flat_problem, *c),
                             (x, opt.init(x)))[0]

  with jax.enable_x64(True):
    got = jax.jit(jax.vmap(run))({k: jnp.asarray(v, jnp.float64) for k, v in values.items()})
    solo = jax.jit(run)  # one compilation serves the three members' values
    for m in range(3):
      want = solo({k: jnp.float64(v[m]) for k, v in values.items()})
      assert got.dtype == want.dtype == jnp.float32
      np.testing.assert_allclose(got[m], want, rtol=1e-5, atol=1e-6)


class PropertiesTest(chex.TestCase):

  @parameterized.named_parameters(*METHODS)
  def test_pytree_path_equals_flat_path(self, ctor, kwargs):
    with jax.enable_x64(True):
      x0 = jnp.linspace(-1.0, 1.5, 7)
      tree0 = {"w": x0[:4].reshape(2, 2), "b": x0[4:]}
      opt = ctor(**kwargs)
      both = jax.jit(lambda x, xs, t, ts: (*_step(opt, _flat_problem, x, xs),
                                           *_step(opt, _tree_problem, t, ts)))
      x, xs = x0, opt.init(x0)
      t, ts = tree0, opt.init(tree0)
      for _ in range(5):
        x, xs, t, ts = both(x, xs, t, ts)
        chex.assert_trees_all_close(jnp.concatenate([t["w"].reshape(-1), t["b"]]), x,
                                    rtol=1e-9, atol=1e-12)

  # Eager (op-by-op) execution compiles every primitive separately and costs ~10 s per
  # method here, so whole steps are checked jitted; test_linesearch covers jit vs eager.
  @chex.variants(with_jit=True)
  @parameterized.named_parameters(*METHODS)
  def test_whole_step_jit_dtype_and_state(self, ctor, kwargs):
    opt = ctor(**kwargs)
    for dtype in (jnp.float32, jnp.bfloat16):
      params = {"w": jnp.full((2, 2), 0.3, dtype), "b": jnp.array([0.1, -0.2, 0.5], dtype)}
      f = lambda p: _tree_problem(jax.tree_util.tree_map(lambda v: v.astype(jnp.float32), p))
      state = opt.init(params)
      new_params, new_state = self.variant(functools.partial(_step, opt, f))(params, state)
      chex.assert_trees_all_equal_dtypes(new_params, params)
      chex.assert_tree_all_finite(new_params)
      chex.assert_trees_all_equal_structs(state, new_state)
      chex.assert_trees_all_equal_dtypes(state, new_state)
      self.assertTrue(all(isinstance(leaf, jax.Array) for leaf in jax.tree_util.tree_leaves(
          new_state)))
      f_jit = jax.jit(f)
      self.assertLess(float(f_jit(new_params)), float(f_jit(params)))


class ReferenceTest(parameterized.TestCase):

  def test_newton_shifts_indefinite_hessian(self):
    with jax.enable_x64(True):
      f = lambda x: x[0] ** 2 - 2.0 * x[1] ** 2 + x[1] ** 4 + x[0] * x[1]
      x0 = jnp.array([0.5, 0.1])  # Hessian [[2, 1], [1, -4 + 12 x1^2]] is indefinite here
      opt = so.scale_by_newton(method="exact")
      g = jax.jit(jax.grad(f))(x0)
      p, state = jax.jit(functools.partial(opt.update, value_fn=f))(g, opt.init(x0), x0)
      h = np.asarray(jax.jit(jax.hessian(f))(x0))
      tau = float(state.shift)
      self.assertGreater(tau, 0.0)
      self.assertGreater(np.linalg.eigvalsh(h + tau * np.eye(2)).min(), 0.0)
      # tau is a power-of-two multiple of the Algorithm 3.3 start, and half of it fails.
      self.assertLessEqual(np.linalg.eigvalsh(h + 0.5 * tau * np.eye(2)).min(), 0.0)
      np.testing.assert_allclose(p, np.linalg.solve(h + tau * np.eye(2), g), rtol=1e-10)
      self.assertGreater(float(p @ g), 0.0)  # -p is a descent direction

  def test_bfgs_secant_equation_and_skip(self):
    with jax.enable_x64(True):
      opt = so.scale_by_bfgs()
      opt = opt._replace(update=jax.jit(opt.update))
      x0, x1 = jnp.array([0.0, 0.0, 0.0]), jnp.array([0.1, -0.2, 0.3])
      g0, g1 = jnp.array([1.0, 0.0, -1.0]), jnp.array([1.5, -0.4, -0.2])
      _, state = opt.update(g0, opt.init(x0), x0)
      _, state = opt.update(g1, state, x1)
      s, y = x1 - x0, g1 - g0
      np.testing.assert_allclose(state.inv_hessian @ y, s, rtol=1e-10)  # H y = s
      self.assertEqual(int(state.num_updates), 1)
      h_before = state.inv_hessian
      x2, g2 = x1 + jnp.array([0.1, 0.0, 0.0]), g1 - jnp.array([0.5, 0.0, 0.0])  # s'y < 0
      p, state = opt.update(g2, state, x2)
      np.testing.assert_allclose(state.inv_hessian, h_before)
      np.testing.assert_allclose(p, h_before @ g2, rtol=1e-12)
      self.assertEqual(int(state.num_updates), 1)

  def test_lbfgs_two_loop_matches_explicit_recursion(self):
    with jax.enable_x64(True):
      m, n = 3, 5
      rng = np.random.default_rng(3)
      a = _spd(n, [1.0, 2.0, 3.0, 5.0, 8.0], seed=3)
      opt = so.scale_by_lbfgs(memory_size=m)
      opt = opt._replace(update=jax.jit(opt.update))
      state = opt.init(jnp.zeros(n))
      xs = [rng.normal(size=n) for _ in range(6)]
      gs = [a @ x + 0.1 * np.sin(x) for x in xs]
      for x, g in zip(xs, gs):
        p, state = opt.update(jnp.asarray(g), state, jnp.asarray(x))
      pairs = [(xs[k + 1] - xs[k], gs[k + 1] - gs[k]) for k in range(len(xs) - 1)][-m:]
      s_last, y_last = pairs[-1]
      h = (s_last @ y_last) / (y_last @ y_last) * np.eye(n)
      for s, y in pairs:  # BFGS recursion (eq. 6.17) from gamma I over the last m pairs
        rho = 1.0 / (s @ y)
        v = np.eye(n) - rho * np.outer(y, s)
        h = v.T @ h @ v + rho * np.outer(s, s)
      np.testing.assert_allclose(p, h @ gs[-1], rtol=1e-9)

  def test_registry_and_learning_rate(self):
    from flaxopt import registry  # pylint: disable=g-import-not-at-top
    for name in ("newton", "newton_cg", "bfgs", "lbfgs", "conjugate_gradient"):
      self.assertIn(name, optim.REGISTRY)
      self.assertIn(name, registry.names("optimizer"))
      opt = registry.get("optimizer", name, learning_rate=0.5)
      self.assertIsInstance(opt, optax.GradientTransformationExtraArgs)
    # Without a line search learning_rate is a plain step size: x - 0.5 H^{-1} g.
    with jax.enable_x64(True):
      a, b = _spd(3, [1.0, 2.0, 4.0]), np.ones(3)
      f = _quadratic(a, b)
      x0 = jnp.zeros(3)
      opt = so.newton(learning_rate=0.5, linesearch=None)
      g = jax.grad(f)(x0)
      u, _ = jax.jit(functools.partial(opt.update, value_fn=f))(
          g, opt.init(x0), x0, value=f(x0), grad=g)
      np.testing.assert_allclose(u, 0.5 * np.linalg.solve(a, b), rtol=1e-10)


@pytest.mark.parametrize("ctor,kwargs,bad", [
    (so.conjugate_gradient, {"beta": "polak"}, "polak"),
    (so.scale_by_nonlinear_cg, {"beta": "FR"}, "FR"),
    (so.conjugate_gradient, {"restart_every": 0}, "0"),
    (so.lbfgs, {"memory_size": 0}, "0"),
    (so.lbfgs, {"memory_size": -3}, "-3"),
    (so.lbfgs, {"memory_size": 2.5}, "2.5"),
    (so.newton, {"method": "cholesky"}, "cholesky"),
    (so.newton, {"damping": -1.0}, "-1.0"),
    (so.newton_cg, {"cg_max_iters": 0}, "0"),
    (so.bfgs, {"linesearch": "goldstein"}, "goldstein"),
    (so.bfgs, {"linesearch_kwargs": {"curv_rtol": 2.0}}, "2.0"),
])
def test_bad_arguments_raise(ctor, kwargs, bad):
  with pytest.raises(ValueError, match=bad.replace(".", r"\.").replace("+", r"\+")):
    ctor(**kwargs)
