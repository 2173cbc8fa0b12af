"""HVP, GGN and Fisher products against dense matrices built with jax.hessian / jax.jacobian."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from flaxopt import curvature
from tests.curvature import problems


@pytest.fixture(scope="module", params=["mlp", "cnn"])
def problem(request):
  with jax.enable_x64(True):
    params, batch, apply_fn, loss_fn = problems.make_problem(request.param)
    hess = problems.dense_hessian(loss_fn, params, batch)
    ggn = problems.dense_ggn(apply_fn, problems.cross_entropy, params, batch)
    v = jax.tree.map(lambda p: jax.random.normal(jax.random.PRNGKey(7), p.shape, p.dtype), params)
    yield params, batch, apply_fn, loss_fn, hess, ggn, v


def test_hvp_matches_dense_hessian(problem):
  params, batch, _, loss_fn, hess, _, v = problem
  with jax.enable_x64(True):
    hv = jax.jit(lambda p, b, v: curvature.hvp(loss_fn, p, b, v))(params, batch, v)
  assert 100 < hess.shape[0] < 400
  np.testing.assert_allclose(problems.flat(hv), hess @ problems.flat(v), rtol=1e-10, atol=1e-12)


def test_ggn_vp_matches_explicit_jt_h_j(problem):
  params, batch, apply_fn, _, hess, ggn, v = problem
  with jax.enable_x64(True):
    gv = jax.jit(lambda p, b, v: curvature.ggn_vp(apply_fn, problems.cross_entropy, p, b, v))(
        params, batch, v)
  np.testing.assert_allclose(problems.flat(gv), ggn @ problems.flat(v), rtol=1e-10, atol=1e-12)
  # For a nonlinear net the GGN is not the Hessian (the residual term is dropped) and is PSD.
  assert np.linalg.norm(ggn - hess) > 1e-3 * np.linalg.norm(hess)
  assert np.linalg.eigvalsh(ggn).min() > -1e-10


def _dense_fishers(apply_fn, params, batch):
  """Empirical Fisher (1/N) sum_i g_i g_i^T at the data labels, and the exact sampled-label
  expectation (1/N) sum_i sum_c p_ic g_ic g_ic^T, from per-example Jacobians."""
  flat0, unravel = ravel_pytree(params)
  per_example = lambda f, y: jax.vmap(
      lambda x, yy: -jax.nn.log_softmax(apply_fn(unravel(f), {"x": x[None]})[0])[yy])(
          batch["x"], y)
  jac = jax.jit(jax.jacobian(per_example))
  n = batch["y"].shape[0]
  g_emp = np.asarray(jac(flat0, batch["y"]))  # (N, n)
  probs = np.asarray(jax.nn.softmax(jax.jit(apply_fn)(params, batch)))
  expected = 0
  for c in range(problems.NUM_CLASSES):
    g_c = np.asarray(jac(flat0, jnp.full((n,), c)))
    expected = expected + (g_c * probs[:, c:c + 1]).T @ g_c
  return g_emp.T @ g_emp / n, expected / n


def test_fisher_variants(problem):
  params, batch, apply_fn, _, _, ggn, v = problem
  with jax.enable_x64(True):
    emp_dense, expected_dense = _dense_fishers(apply_fn, params, batch)
    fisher = jax.jit(curvature.fisher_vp, static_argnums=0,
                     static_argnames=("variant", "num_samples"))
    emp = fisher(apply_fn, params, batch, v, variant="empirical")
    sampled = fisher(apply_fn, params, batch, v, variant="sampled",
                     key=jax.random.PRNGKey(3), num_samples=20000)
  fv = problems.flat(v)
  # The exact expectation over model-sampled labels is the GGN (softmax cross-entropy) ...
  np.testing.assert_allclose(expected_dense, ggn, rtol=1e-9, atol=1e-12)
  # ... our sampled estimate converges to it (Monte Carlo error ~ 1/sqrt(20000 * N)) ...
  gv = ggn @ fv
  assert np.linalg.norm(problems.flat(sampled) - gv) < 0.03 * np.linalg.norm(gv)
  # ... the empirical Fisher is exact against per-example gradients, and is not the GGN.
  np.testing.assert_allclose(problems.flat(emp), emp_dense @ fv, rtol=1e-10, atol=1e-12)
  assert np.linalg.norm(emp_dense - ggn) > 0.2 * np.linalg.norm(ggn)


def test_ggn_equals_hessian_for_linear_least_squares():
  with jax.enable_x64(True):
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(1), 3)
    params = {"w": jax.random.normal(k1, (4, 3), jnp.float64), "b": jnp.zeros(3, jnp.float64)}
    batch = {"x": jax.random.normal(k2, (9, 4), jnp.float64),
             "t": jax.random.normal(k3, (9, 3), jnp.float64)}
    apply_fn = lambda p, b: b["x"] @ p["w"] + p["b"]
    sq = lambda z, b: 0.5 * jnp.mean(jnp.sum((z - b["t"]) ** 2, -1))
    loss_fn = lambda p, b: sq(apply_fn(p, b), b)
    hess = problems.dense_hessian(loss_fn, params, batch)
    ggn = problems.dense_ggn(apply_fn, sq, params, batch)
    v = {"w": jnp.ones((4, 3)), "b": jnp.arange(3.0)}
    gv = problems.flat(jax.jit(lambda p, b, v: curvature.ggn_vp(apply_fn, sq, p, b, v))(
        params, batch, v))
    hv = problems.flat(jax.jit(lambda p, b, v: curvature.hvp(loss_fn, p, b, v))(
        params, batch, v))
  np.testing.assert_allclose(ggn, hess, rtol=1e-12, atol=1e-12)
  np.testing.assert_allclose(gv, hv, rtol=1e-12, atol=1e-12)
  np.testing.assert_allclose(hv, hess @ problems.flat(v), rtol=1e-12, atol=1e-12)


def test_hessian_matvec_weights_batches_by_size(problem):
  params, batch, _, loss_fn, hess, _, v = problem  # hess: of the mean over all 12 examples
  with jax.enable_x64(True):
    parts = [jax.tree.map(lambda a, s=s: a[s], batch) for s in (slice(0, 3), slice(3, 12))]
    matvec = curvature.hessian_matvec(loss_fn, params, parts)
    np.testing.assert_allclose(problems.flat(matvec(v)), hess @ problems.flat(v), rtol=1e-10)
    loss, grad = curvature.mean_loss_and_grad(loss_fn, params, parts)
    ref_loss, ref_grad = jax.jit(jax.value_and_grad(loss_fn))(params, batch)
  np.testing.assert_allclose(loss, ref_loss, rtol=1e-12)
  np.testing.assert_allclose(problems.flat(grad), problems.flat(ref_grad), rtol=1e-10)


def _bad_calls():
  params, batch, apply_fn, loss_fn = problems.make_problem("mlp", n=4)
  good_v = jax.tree.map(jnp.zeros_like, params)
  bad_v = {"dense_0": params["dense_0"], "head": {"kernel": params["head"]["kernel"]}}
  wrong_shape = jax.tree.map(lambda a: a[..., :1], params)
  vector_loss = lambda p, b: apply_fn(p, b).sum(-1)
  return [
      ("loss_fn", lambda: curvature.hvp(vector_loss, params, batch, good_v)),
      ("v", lambda: curvature.hvp(loss_fn, params, batch, bad_v)),
      ("v", lambda: curvature.hvp(loss_fn, params, batch, wrong_shape)),
      ("output_loss_fn", lambda: curvature.ggn_vp(apply_fn, lambda z, b: z, params, batch,
                                                  good_v)),
      ("v", lambda: curvature.ggn_vp(apply_fn, problems.cross_entropy, params, batch, bad_v)),
      ("variant", lambda: curvature.fisher_vp(apply_fn, params, batch, good_v, variant="true")),
      ("key", lambda: curvature.fisher_vp(apply_fn, params, batch, good_v, variant="sampled")),
      ("batches", lambda: curvature.hessian_matvec(loss_fn, params, batch)),
      ("loss_fn", lambda: curvature.hessian_matvec(vector_loss, params, [batch])),
  ]


@pytest.mark.parametrize("index", range(9))
def test_bad_input_raises_one_line_value_error(index):
  name, call = _bad_calls()[index]
  with pytest.raises(ValueError, match=name) as info:
    call()
  assert "\n" not in str(info.value)
