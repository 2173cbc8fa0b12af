"""Tests for flaxopt.optim.linesearch: the conditions each search claims, exactness, wiring."""

import functools

from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from flaxopt.optim import linesearch as ls


def rosenbrock(x):
  return 100.0 * (x[1] - x[0] ** 2) ** 2 + (1.0 - x[0]) ** 2


def quadratic(x):
  a = jnp.array([[3.0, 1.0], [1.0, 2.0]], x.dtype)
  b = jnp.array([1.0, -1.0], x.dtype)
  return 0.5 * x @ a @ x - b @ x


def far_quadratic(x):  # minimiser far along the first step: needs bracketing expansion
  return 0.5 * jnp.sum((x - 100.0) ** 2)


def shifted_exp(x):
  return jnp.sum(jnp.exp(x) - 2.0 * x) + 0.1 * jnp.sum(x ** 4)


# (name, f, x0, direction scale): direction u = -scale * grad f(x0).
PROBLEMS = (
    ("rosenbrock_sd", rosenbrock, (-1.2, 1.0), 1.0),
    ("rosenbrock_small", rosenbrock, (-1.2, 1.0), 1e-4),
    ("quadratic", quadratic, (2.0, -3.0), 1.0),
    ("far_quadratic", far_quadratic, (0.0, 0.0), 0.01),
    ("shifted_exp", shifted_exp, (1.5, -1.0), 1.0),
)
PROBLEM_FNS = tuple(p[1] for p in PROBLEMS)


def mixture(x, weights):
  """sum_i w_i f_i(x): with one-hot weights, one traced function covers every problem."""
  return sum(w * f(x) for w, f in zip(weights, PROBLEM_FNS))


SEARCHES = (
    ("armijo", ls.scale_by_backtracking_linesearch, {}),
    ("armijo_c1", ls.scale_by_backtracking_linesearch, {"slope_rtol": 0.3, "decrease_factor": 0.3}),
    ("wolfe", ls.scale_by_wolfe_linesearch, {}),
    ("wolfe_tight", ls.scale_by_wolfe_linesearch, {"curv_rtol": 0.1}),
    ("wolfe_exact", ls.scale_by_wolfe_linesearch, {"curv_rtol": 0.1, "exact_quadratic": True}),
)


def _one_search(search, kwargs, f, x0, scale, dtype=jnp.float64):
  x = jnp.asarray(x0, dtype)
  tx = search(**kwargs)
  state = tx.init(x)
  value, grad = jax.value_and_grad(f)(x)
  u = -scale * grad
  step_update, state = jax.jit(functools.partial(tx.update, value_fn=f))(
      u, state, x, value=value, grad=grad)
  return x, value, grad, u, step_update, state


def _all_problems(search, kwargs):
  """Runs one search on every problem at once (vmap over one-hot weights: one compile)."""
  tx = search(**kwargs)
  weights = jnp.eye(len(PROBLEMS))
  xs = jnp.array([p[2] for p in PROBLEMS])
  scales = jnp.array([p[3] for p in PROBLEMS])

  rho = kwargs.get("decrease_factor", 0.5)

  def run(w, x, scale):
    f = lambda y: mixture(y, w)
    value, grad = jax.value_and_grad(f)(x)
    u = -scale * grad
    out, state = tx.update(u, tx.init(x), x, value=value, grad=grad, value_fn=f)
    new_value, new_grad = jax.value_and_grad(f)(x + out)
    prev_value = f(x + state.step_size / rho * u)  # the trial before the accepted one
    return value, grad, u, out, state, new_value, new_grad, prev_value

  return xs, jax.jit(jax.vmap(run))(weights, xs, scales)


class LinesearchConditionsTest(parameterized.TestCase):

  @parameterized.named_parameters(*SEARCHES)
  def test_conditions_hold(self, search, kwargs):
    with jax.enable_x64(True):
      xs, results = _all_problems(search, kwargs)
      c1 = kwargs.get("slope_rtol", 1e-4)
      for i, (name, *_) in enumerate(PROBLEMS):
        with self.subTest(name):
          value, grad, u, out, state, new_value, new_grad, prev_value = (
              jax.tree_util.tree_map(lambda t, i=i: np.asarray(t[i]), results))
          a = float(state.step_size)
          np.testing.assert_allclose(out, a * u, rtol=1e-12)
          slope0 = float(grad @ u)
          self.assertGreater(a, 0.0)
          self.assertLessEqual(float(new_value), float(value) + c1 * a * slope0)  # Armijo
          self.assertAlmostEqual(float(state.value), float(new_value), places=8)
          self.assertGreaterEqual(int(state.num_evals), 1)
          self.assertEqual(int(state.total_evals), int(state.num_evals))
          if isinstance(state, ls.WolfeLinesearchState):
            c2 = kwargs.get("curv_rtol", 0.9)
            self.assertTrue(bool(state.satisfied))
            self.assertLessEqual(abs(float(new_grad @ u)), c2 * abs(slope0) + 1e-12)
            np.testing.assert_allclose(state.grad, new_grad, rtol=1e-10)
          elif a < 1.0:  # backtracking: the trial before the accepted one failed Armijo.
            prev = a / kwargs.get("decrease_factor", 0.5)
            self.assertGreater(float(prev_value), float(value) + c1 * prev * slope0)


class LinesearchExactnessTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ("exact_flag", {"exact_quadratic": True}, 1.0),
      ("zoom_overshoot", {}, 5.0),   # a=1 fails Armijo -> one cubic zoom step is exact
      ("zoom_expand", {"curv_rtol": 0.01}, 0.05),  # expansion then zoom
  )
  def test_exact_minimiser_on_quadratic(self, kwargs, scale):
    with jax.enable_x64(True):
      x, _, grad, u, step_update, state = _one_search(
          ls.scale_by_wolfe_linesearch, kwargs, quadratic, (2.0, -3.0), scale)
      a_matrix = jnp.array([[3.0, 1.0], [1.0, 2.0]])
      exact = -float(grad @ u) / float(u @ a_matrix @ u)  # closed-form line minimiser
      self.assertAlmostEqual(float(state.step_size), exact, places=10)

  def test_cubic_minimizer_matches_closed_form(self):
    with jax.enable_x64(True):
      c = np.array([0.5, -2.0, 1.0, 3.0])  # p(t) = c0 t^3 + c1 t^2 + c2 t + c3
      p = np.poly1d(c)
      dp = p.deriv()
      a, b = -1.0, 3.0
      got = float(ls.cubic_minimizer(a, p(a), dp(a), b, p(b), dp(b)))
      roots = np.roots(dp.coeffs)
      expected = [r for r in roots if p.deriv(2)(r) > 0][0]
      self.assertAlmostEqual(got, float(expected), places=10)

  def test_budget_is_bounded(self):
    with jax.enable_x64(True):
      for search in (ls.scale_by_backtracking_linesearch, ls.scale_by_wolfe_linesearch):
        *_, state = _one_search(search, {"max_steps": 3}, rosenbrock, (-1.2, 1.0), 1e3)
        self.assertLessEqual(int(state.num_evals), 3)


class LinesearchWiringTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_jit_and_eager_agree(self):
    x = jnp.array([-1.2, 1.0])
    tx = ls.scale_by_wolfe_linesearch()
    value, grad = jax.value_and_grad(rosenbrock)(x)
    update = self.variant(functools.partial(tx.update, value_fn=rosenbrock))
    out, state = update(-grad, tx.init(x), x, value=value, grad=grad)
    ref, ref_state = jax.jit(functools.partial(tx.update, value_fn=rosenbrock))(
        -grad, tx.init(x), x, value=value, grad=grad)
    chex.assert_trees_all_close(out, ref, rtol=1e-5)
    self.assertEqual(int(state.num_evals), int(ref_state.num_evals))

  def test_chain_steepest_descent_with_state_reuse(self):
    tx = optax.chain(optax.scale(-1e-3), ls.scale_by_wolfe_linesearch(curv_rtol=0.5))
    value_and_grad = optax.value_and_grad_from_state(rosenbrock)
    x = jnp.array([-1.2, 1.0])
    state = tx.init(x)

    @jax.jit
    def step(x, state):
      value, grad = value_and_grad(x, state=state)
      updates, state = tx.update(grad, state, x, value=value, grad=grad, value_fn=rosenbrock)
      return optax.apply_updates(x, updates), state, value

    values = []
    for _ in range(20):
      x, state, value = step(x, state)
      values.append(float(value))
    self.assertTrue(all(b < a for a, b in zip(values, values[1:])))
    self.assertEqual(int(state[1].total_evals) >= 20, True)

  @parameterized.parameters(jnp.float32, jnp.bfloat16)
  def test_dtype_kept_and_state_stable(self, dtype):
    x = {"a": jnp.array([-1.2], dtype), "b": jnp.array([1.0], dtype)}
    f = lambda p: rosenbrock(jnp.concatenate([p["a"], p["b"]]).astype(jnp.float32))
    for tx in (ls.scale_by_backtracking_linesearch(), ls.scale_by_wolfe_linesearch()):
      state = tx.init(x)
      value, grad = jax.value_and_grad(f)(x)
      u = jax.tree_util.tree_map(lambda g: (-1e-3 * g).astype(g.dtype), grad)
      out, new_state = jax.jit(functools.partial(tx.update, value_fn=f))(
          u, state, x, value=value, grad=grad)
      chex.assert_trees_all_equal_dtypes(out, x)
      chex.assert_tree_all_finite(out)
      chex.assert_trees_all_equal_structs(state, new_state)
      chex.assert_trees_all_equal_dtypes(state, new_state)

  def test_non_descent_direction_gives_zero_step(self):
    x = jnp.array([-1.2, 1.0])
    value, grad = jax.value_and_grad(rosenbrock)(x)
    for tx in (ls.scale_by_backtracking_linesearch(), ls.scale_by_wolfe_linesearch()):
      out, _ = jax.jit(functools.partial(tx.update, value_fn=rosenbrock))(
          grad, tx.init(x), x, value=value, grad=grad)
      chex.assert_trees_all_close(out, jnp.zeros_like(x))


@pytest.mark.parametrize("ctor,kwargs", [
    (ls.scale_by_backtracking_linesearch, {"max_steps": 0}),
    (ls.scale_by_backtracking_linesearch, {"decrease_factor": 1.5}),
    (ls.scale_by_backtracking_linesearch, {"slope_rtol": 0.0}),
    (ls.scale_by_wolfe_linesearch, {"curv_rtol": 1e-5}),
    (ls.scale_by_wolfe_linesearch, {"increase_factor": 1.0}),
    (ls.scale_by_wolfe_linesearch, {"max_step": -1.0}),
    (ls.scale_by_wolfe_linesearch, {"initial_guess": "previous"}),
    (ls.scale_by_wolfe_linesearch, {"max_steps": 2.5}),
])
def test_bad_arguments_raise(ctor, kwargs):
  with pytest.raises(ValueError, match=repr(next(iter(kwargs.values())))[:4]):
    ctor(**kwargs)
