"""Muon, Shampoo, SOAP, Sophia, Prodigy, D-Adapt Adam: references, properties, bad input.

1. Reference trajectories: float64 runs of 30 steps on the problem of
   ``references/generate_b.py`` are compared with the recorded reference trajectories
   (``references/b_<name>.npz``, produced by the authors' / PyTorch's code) always, and with
   the live reference when torch and the package are importable (skipped otherwise).
2. Structural checks the reference problem does not isolate (Newton-Schulz, Muon on conv
   kernels, Prodigy's zero step, Shampoo's blocks, Sophia's probes and GNB estimator, SOAP's
   bases, state bytes). The shared properties (convergence, dtypes, state structure, one
   compilation, registry, inject_hyperparams, bad hyperparameters) run over the one table of
   ``tests/optim/properties.py`` (test_properties.py).
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import tiny
from flaxopt import optim
from flaxopt.optim import lr_free
from flaxopt.optim import precond
from flaxopt.training import checkpoint as checkpoint_lib
from flaxopt.training import hooks as hooks_lib
from flaxopt.training import loop
from tests.optim import properties as props

# The programs here are tiny: XLA's compile time dominates, so compile without the expensive
# LLVM passes (about 40% less CPU per test; results unchanged at the tolerances used).
_jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0,
                                                    "xla_llvm_disable_expensive_passes": True})

REF_DIR = os.path.join(os.path.dirname(__file__), "references")
_spec = importlib.util.spec_from_file_location("generate_b",
                                               os.path.join(REF_DIR, "generate_b.py"))
gen = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gen)

# Per-optimizer tolerance against the reference (rtol, atol) and why it is not 1e-8.
TOLERANCE = {
    "prodigy": (1e-8, 1e-12),
    "dadapt_adam": (1e-8, 1e-12),
    "muon": (1e-8, 1e-12),
    "shampoo": (1e-8, 1e-12),
    "sophia": (1e-8, 1e-12),
    # SOAP: W's right statistic (4x4, rank 3) has a one-dimensional null space whose
    # eigenvector eigh/QR fix only to ~1e-16 / (eigenvalue gap); parameters agree to
    # <= 1e-10 absolute (a few entries near zero then exceed rtol 1e-8 alone).
    "soap": (1e-8, 1e-9),
}


def _schedule(base: float, kind: str | None):
  if kind is None:
    return base
  assert kind == "cosine"
  return lambda t: base * 0.5 * (1.0 + jnp.cos(jnp.pi * jnp.minimum(t, gen.STEPS) / gen.STEPS))


def _our_optimizer(name: str, kwargs: dict) -> optax.GradientTransformation:
  kw = dict(kwargs)
  kind = kw.pop("schedule", None)
  for key in ("learning_rate", "adam_learning_rate"):
    if key in kw:
      kw[key] = _schedule(kw[key], kind)
  return optim.REGISTRY[name](**kw)


def _our_trajectory(name: str, kwargs: dict, steps: int = gen.STEPS) -> dict:
  """flaxopt's float64 trajectory on the reference problem, {leaf: (steps + 1, *shape)}."""
  with jax.enable_x64(True):
    x, y, p0 = gen.problem(gen.PROBLEM_OF.get(name, "two_layer"))
    x, y = jnp.asarray(x), jnp.asarray(y)
    params = {k: jnp.asarray(v) for k, v in p0.items()}
    tx = _our_optimizer(name, kwargs)
    loss = lambda p: gen.loss_np_like(jnp, p, x, y)
    # Sophia: the same Hutchinson probes as the reference (injected on both sides).
    probes = jax.tree.map(lambda *z: jnp.asarray(np.stack(z)),
                          *[gen.sophia_probe(t) for t in range(1, steps + 1)])
    if name not in ("sophia",):
      probes = None

    @_jit
    def run(params, probes):
      def body(carry, probe):
        p, state = carry
        extra = dict(value_fn=loss, probe=probe) if name == "sophia" else {}
        u, state = tx.update(jax.grad(loss)(p), state, p, **extra)
        p = optax.apply_updates(p, u)
        return (p, state), p
      _, traj = jax.lax.scan(body, (params, tx.init(params)), probes, length=steps)
      return traj

    traj = run(params, probes)
    return {k: np.concatenate([np.asarray(params[k])[None], np.asarray(traj[k])])
            for k in params}


def _assert_trajectories_close(got: dict, want: dict, name: str) -> None:
  rtol, atol = TOLERANCE[name]
  assert set(got) == set(want)
  for k in want:
    assert got[k].shape == want[k].shape, (k, got[k].shape, want[k].shape)
    # The trajectory must actually move, else matching it proves nothing.
    assert np.max(np.abs(want[k][-1] - want[k][0])) > 1e-3, (name, k)
    np.testing.assert_allclose(got[k], want[k], rtol=rtol, atol=atol, err_msg=f"{name}/{k}")


REF_CASES = [(name, case_id, ours) for name, cases in gen.CASES.items()
             for case_id, ours, _ in cases]
REF_IDS = [f"{n}-{c}" for n, c, _ in REF_CASES]


@pytest.mark.parametrize("name,case_id,ours", REF_CASES, ids=REF_IDS)
def test_matches_recorded_reference(name: str, case_id: str, ours: dict) -> None:
  with np.load(os.path.join(REF_DIR, f"b_{name}.npz")) as f:
    meta = json.loads(str(f["meta"]))
    want = {k.split("/", 1)[1]: f[k] for k in f.files if k.startswith(f"{case_id}/")}
  recorded = next(c for c in meta["cases"] if c["id"] == case_id)
  assert recorded["flaxopt"] == json.loads(json.dumps(ours)), "regenerate the reference"
  _assert_trajectories_close(_our_trajectory(name, ours), want, name)


@pytest.mark.parametrize("name,case_id,ours", REF_CASES, ids=REF_IDS)
def test_matches_live_reference(name: str, case_id: str, ours: dict) -> None:
  pytest.importorskip("torch")
  pytest.importorskip(gen.REFERENCE_PACKAGES[name][0])
  _assert_trajectories_close(_our_trajectory(name, ours), gen.run_case(name, case_id), name)


# ----------------------------------------------------------------------------
# Structural checks of the math that the reference problem does not isolate.
# ----------------------------------------------------------------------------


def test_newton_schulz_matches_numpy_transcription_and_orthogonalizes() -> None:
  with jax.enable_x64(True):
    rng = np.random.RandomState(0)
    g = rng.randn(5, 8)
    a, b, c = precond.MUON_NS_COEFFICIENTS
    x = g / np.linalg.norm(g)
    for _ in range(5):
      gram = x @ x.T
      x = a * x + (b * gram + c * gram @ gram) @ x
    got = precond.newton_schulz(jnp.asarray(g))
    np.testing.assert_allclose(got, x, rtol=1e-12)
    np.testing.assert_allclose(precond.newton_schulz(jnp.asarray(g.T)), x.T, rtol=1e-12)
    # Singular values near 1 (the quintic's band), singular vectors those of g.
    u, s, vt = np.linalg.svd(g, full_matrices=False)
    sv = np.linalg.svd(np.asarray(got), compute_uv=False)
    assert np.all((sv > 0.6) & (sv < 1.25)), sv
    # With the cubic (1.5, -0.5, 0) and many steps it converges to the polar factor U V^T.
    polar = precond.newton_schulz(jnp.asarray(g), (1.5, -0.5, 0.0), steps=60)
    np.testing.assert_allclose(polar, u @ vt, atol=1e-10)


def test_muon_conv_kernel_is_muon_of_its_matrix_view() -> None:
  rng = np.random.RandomState(0)
  kernel = jnp.asarray(rng.randn(3, 3, 4, 8), jnp.float32)
  g = jnp.asarray(rng.randn(3, 3, 4, 8), jnp.float32)
  tx = precond.scale_by_muon()

  @_jit
  def both(g, p):
    conv = tx.update({"k": g}, tx.init({"k": p}))[0]["k"]
    mat = tx.update({"k": g.reshape(36, 8)}, tx.init({"k": p.reshape(36, 8)}))[0]["k"]
    return conv, mat

  conv, mat = both(g, kernel)
  chex.assert_trees_all_close(conv.reshape(36, 8), mat, rtol=1e-5, atol=1e-6)


def test_muon_without_mask_names_the_non_matrix_leaf() -> None:
  params = {"dense": {"kernel": jnp.ones((3, 4)), "bias": jnp.zeros(4)}}
  with pytest.raises(ValueError, match=r"\['dense'\]\['bias'\].*\(4,\)"):
    optim.muon(0.02).init(params)
  tx = optim.muon(0.02, mask={"dense": {"kernel": True, "bias": False}})
  u = jax.eval_shape(lambda p: tx.update(p, tx.init(p), p)[0], params)  # Traces, no error.
  chex.assert_trees_all_equal_shapes(u, params)


def test_reference_cases_cover_part_b_and_the_shared_table() -> None:
  """Every part-B optimizer has recorded cases and a row in tests/optim/properties.py."""
  names = {c.name for c in props.CASES if c.family == "b"}
  assert names == set(gen.CASES) and names <= set(optim.REGISTRY)


def test_zero_gradient_step_moves_nothing_and_keeps_d() -> None:
  """Prodigy and D-Adapt Adam skip a step whose ||s||_1 is 0, as the authors' code does."""
  params, _ = props.small_problem()
  zeros = jax.tree.map(jnp.zeros_like, params)
  for tx in (lr_free.prodigy(1.0), lr_free.dadapt_adam(1.0)):
    state = tx.init(params)
    u, new_state = _jit(tx.update)(zeros, state, params)
    chex.assert_trees_all_equal(u, zeros)
    assert float(new_state[0].d) == float(state[0].d)
    assert int(new_state[0].k) == 0


def test_shampoo_block_size_must_divide_and_names_the_leaf() -> None:
  params = {"conv": {"kernel": jnp.ones((3, 3, 2, 8))}, "b": jnp.ones(5)}
  with pytest.raises(ValueError, match=r"block_size=4 does not divide dimension 18.*'conv'"):
    optim.shampoo(0.1, block_size=4).init(params)
  state = optim.shampoo(0.1, block_size=2).init(params)  # (18, 8) in 9 x 4 blocks of 2 x 2.
  assert state[0].stats_l["conv"]["kernel"].shape == (9, 4, 2, 2)
  # 1-D leaves take the graft step: 0-d placeholders (no zero-size arrays, see the orbax test).
  for field in ("stats_l", "stats_r", "precond_l", "precond_r"):
    assert getattr(state[0], field)["b"].shape == (), field


def test_sophia_needs_its_extra_args() -> None:
  params, grads = props.small_problem()
  tx = optim.sophia(0.1)
  with pytest.raises(ValueError, match="value_fn"):
    tx.update(grads[0], tx.init(params), params)
  with pytest.raises(ValueError, match="key"):
    optim.sophia(0.1, estimator="gnb", batch_size=3).update(
        grads[0], tx.init(params), params, value_fn=props.small_loss)


def test_sophia_without_key_draws_the_probe_from_its_seed_and_count() -> None:
  """No key: the probe of update t is fold_in(PRNGKey(seed), t); passing that key is identical."""
  params, grads = props.small_problem()
  # A Hessian with off-diagonal entries: z (H z) then depends on the probe z.
  coupled = lambda p: jnp.sin(jnp.sum(p["w"])) * jnp.sum(p["b"] ** 2)
  tx = optim.sophia(0.1, update_period=1, seed=3)
  state_a = state_b = tx.init(params)
  for t in range(3):
    ua, state_a = tx.update(grads[t], state_a, params, value_fn=coupled)
    key = jax.random.fold_in(jax.random.PRNGKey(3), t)
    ub, state_b = tx.update(grads[t], state_b, params, value_fn=coupled, key=key)
    chex.assert_trees_all_equal(ua, ub)
  # The probe (and so the Hessian estimate in the state) depends on the seed.
  other = optim.sophia(0.1, update_period=1, seed=4)
  _, state_c = other.update(grads[0], other.init(params), params, value_fn=coupled)
  _, state_a0 = tx.update(grads[0], tx.init(params), params, value_fn=coupled)
  assert not np.allclose(state_a0[0].hessian["w"], state_c[0].hessian["w"])


def test_sophia_gnb_estimate_is_unbiased_for_the_fisher_diagonal() -> None:
  """E[B g_hat^2] over labels drawn from the model = (1/B) sum_i sum_c p_ic (d l(x_i, c))^2.

  The expectation is taken exactly: every label vector (5^3 of them) weighted by its
  probability. ``value_fn(params, key)`` receives the label vector as its "key".
  """
  rng = np.random.RandomState(0)
  n, k = 3, 5
  x = jnp.asarray(rng.randn(n, 3), jnp.float32)
  params = {"w": jnp.asarray(0.5 * rng.randn(3, k), jnp.float32), "b": jnp.zeros(k)}
  logits_fn = lambda p: x @ p["w"] + p["b"]
  log_probs = lambda p: jax.nn.log_softmax(logits_fn(p))
  ce = lambda p, labels: -jnp.mean(jnp.take_along_axis(log_probs(p), labels[:, None], axis=1))

  tx = optim.scale_by_sophia(b2=0.0, estimator="gnb", batch_size=n, update_period=1)
  labels = jnp.asarray(np.array(np.meshgrid(*[np.arange(k)] * n)).reshape(n, -1).T)

  @_jit
  def expected_and_fisher(params):
    state0 = tx.init(params)
    weights = jnp.exp(sum(log_probs(params)[i][labels[:, i]] for i in range(n)))
    estimates = jax.vmap(lambda y: tx.update(params, state0, params, value_fn=ce,
                                             key=y)[1].hessian)(labels)
    got = jax.tree.map(lambda h: jnp.tensordot(weights, h, axes=1), estimates)
    probs = jnp.exp(log_probs(params))
    per_example = jax.vmap(jax.vmap(  # d l(x_i, c) / d params for every example and class.
        lambda i, c: jax.grad(lambda p: -log_probs(p)[i, c])(params),
        in_axes=(None, 0)), in_axes=(0, None))(jnp.arange(n), jnp.arange(k))
    fisher = jax.tree.map(lambda g: jnp.einsum("ic,ic...->...", probs, g * g) / n,
                          per_example)
    return jnp.sum(weights), got, fisher

  total, got, fisher = expected_and_fisher(params)
  np.testing.assert_allclose(float(total), 1.0, rtol=1e-5)
  chex.assert_trees_all_close(got, fisher, rtol=1e-4, atol=1e-7)


def test_soap_first_step_only_builds_the_bases() -> None:
  """Step 0 moves nothing; its bases are the eigenvectors of G G^T and G^T G."""
  params, grads = props.small_problem()
  tx = optim.soap(0.1)
  u, state = _jit(tx.update)(grads[0], tx.init(params), params)
  chex.assert_trees_all_equal(u, jax.tree.map(jnp.zeros_like, u))
  g = np.asarray(grads[0]["w"], np.float64)
  q_l = np.asarray(state[0].q_l["w"])
  # Q_L^T (G G^T) Q_L is diagonal with decreasing entries.
  d = q_l.T @ (g @ g.T) @ q_l
  np.testing.assert_allclose(d - np.diag(np.diag(d)), 0.0, atol=1e-5)
  assert np.all(np.diff(np.diag(d)) <= 1e-6)
  for field in ("gg_l", "gg_r", "q_l", "q_r"):  # 1-D leaves: 0-d placeholders.
    assert getattr(state[0], field)["b"].shape == (), field


@pytest.mark.parametrize("name,kwargs,shape,want", [
    ("adam", dict(learning_rate=1e-3), (512, 512), 8.0),
    ("muon", dict(learning_rate=0.02), (512, 512), 4.0),
    ("shampoo", dict(learning_rate=0.1), (512, 512), 28.0),        # 4 (3 + 4)
    ("shampoo", dict(learning_rate=0.1), (1024, 256), 32.0),       # 4 (3 + 2 (512^2 + 256^2) / (512 256))
    ("shampoo", dict(learning_rate=0.1, graft_type="sgd"), (512, 512), 24.0),
    ("soap", dict(learning_rate=0.01), (1024, 256), 42.0),         # 4 (2 + 2 (1024^2 + 256^2) / (1024 256))
    ("prodigy", dict(), (512, 512), 16.0),
    ("dadapt_adam", dict(), (512, 512), 12.0),
])
def test_state_bytes_per_parameter_in_the_docs_table(name, kwargs, shape, want) -> None:
  params = {"x": jax.ShapeDtypeStruct(shape, jnp.float32)}
  state = jax.eval_shape(optim.REGISTRY[name](**kwargs).init, params)
  got = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state)) / np.prod(shape)
  np.testing.assert_allclose(got, want, atol=1e-3)


@pytest.mark.parametrize("compatible", [False, True], ids=["full_extra_args", "masked_extra_args"])
def test_sophia_under_optax_masked_equals_sophia_on_the_unmasked_leaves(compatible) -> None:
  """masked(sophia) with a probe / estimate shaped like the full params (or masked by optax,
  ``mask_compatible_extra_args``) = sophia on the unmasked leaf alone; its value_fn gets the
  masked params and closes over the masked-out leaf (a coupled loss: H z depends on it)."""
  params, grads = props.small_problem()
  coupled = lambda p: jnp.sin(jnp.sum(p["w"])) * jnp.sum(p["b"] ** 2) + jnp.sum(p["w"] ** 3)
  value_fn = lambda p: coupled({"w": p["w"], "b": params["b"]})  # p["b"]: MaskedNode / absent.
  probe = jax.tree.map(lambda x: jnp.where(jnp.arange(x.size).reshape(x.shape) % 2 == 0,
                                           -1.0, 1.0), params)
  h = jax.tree.map(lambda x: jnp.full_like(x, 0.5), params)
  masked = optax.masked(optim.sophia(0.1, gamma=0.5, update_period=2), {"w": True, "b": False},
                        mask_compatible_extra_args=compatible)
  alone = optim.sophia(0.1, gamma=0.5, update_period=2)
  only_w = lambda t: {"w": t["w"]}

  @_jit
  def run():
    s_masked, s_alone, out = masked.init(params), alone.init(only_w(params)), []
    for t, g in enumerate(grads):  # Steps 0 and 2 refresh from the probe; step 1 from h.
      extra = dict(hessian_diag=h) if t == 1 else dict(probe=probe)
      u_masked, s_masked = masked.update(g, s_masked, params, value_fn=value_fn, **extra)
      extra = jax.tree.map(only_w, extra, is_leaf=lambda x: isinstance(x, dict) and "w" in x)
      u_alone, s_alone = alone.update(only_w(g), s_alone, only_w(params), value_fn=value_fn,
                                      **extra)
      out.append((u_masked, u_alone, s_masked.inner_state[0].hessian["w"],
                  s_alone[0].hessian["w"]))
    return out

  for t, (u_masked, u_alone, h_masked, h_alone) in enumerate(run()):
    chex.assert_trees_all_close(u_masked["w"], u_alone["w"], rtol=1e-6, atol=1e-7)
    chex.assert_trees_all_close(h_masked, h_alone, rtol=1e-6, atol=1e-7)
    chex.assert_trees_all_equal(u_masked["b"], grads[t]["b"])  # Masked out: untouched.


def test_sophia_hessian_diag_forces_a_refresh_with_that_estimate() -> None:
  """``hessian_diag=`` (SophiaH's step(hessian=...)): h = b2 h + (1 - b2) estimate, any step."""
  params, grads = props.small_problem()
  tx = optim.scale_by_sophia(b1=0.5, b2=0.0, gamma=2.0, update_period=1000)
  h = jax.tree.map(lambda p: jnp.full_like(p, 0.25), params)

  @_jit
  def two_steps(state):
    _, state = tx.update(grads[0], state, params, hessian_diag=h)
    return tx.update(grads[1], state, params, hessian_diag=h)

  u, state = two_steps(tx.init(params))
  chex.assert_trees_all_close(state.hessian, h)
  m = jax.tree.map(lambda a, b: 0.5 * (0.5 * a) + 0.5 * b, grads[0], grads[1])
  chex.assert_trees_all_close(u, jax.tree.map(lambda m: jnp.clip(m / 0.5, -1, 1), m),
                              rtol=1e-6)


# ----------------------------------------------------------------------------
# End to end: the training loop checkpoints Shampoo's and SOAP's states and resumes.
# ----------------------------------------------------------------------------


class _StepsRun(hooks_lib.Hooks):
  """Records the steps a run takes."""

  def __init__(self):
    self.steps = []

  def after_step(self, step: int) -> None:
    self.steps.append(step)


# Preconditioners refreshed before and after the checkpoint at step 4, so the saved state
# (statistics, roots / eigenbases, 0-d placeholders of the biases) decides the last steps.
LOOP_CASES = {
    "shampoo": dict(start_preconditioning_step=1, preconditioning_compute_steps=2),
    "soap": dict(precondition_frequency=2),
}


@pytest.mark.slow  # ~8-15 s on 2 busy cores: three short runs, the first compiles.
@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", sorted(LOOP_CASES))
def test_training_loop_checkpoints_and_resumes(name: str, tmp_path) -> None:
  """4 steps (checkpoints at 2 and 4), then resumed to 6: steps 5 and 6 only, and the same
  final evaluation as an uninterrupted 6-step run (orbax round-trips the optimizer state)."""
  def config(num_steps):
    c = tiny.get_config()
    c.optimizer.name = name
    c.optimizer.update(LOOP_CASES[name])
    c.num_train_steps = num_steps
    c.checkpoint_every = c.eval_every = c.log_every = 2
    return c

  straight = loop.train_and_evaluate(config(6), str(tmp_path / "straight"))
  workdir = str(tmp_path / "resumed")
  assert loop.train_and_evaluate(config(4), workdir)["status"] == "completed"
  ckpt = checkpoint_lib.Checkpointer(os.path.join(workdir, "checkpoints"))
  assert ckpt.latest_step() == 4
  ckpt.close()
  steps = _StepsRun()
  resumed = loop.train_and_evaluate(config(6), workdir, hooks=steps)
  assert steps.steps == [5, 6]
  assert resumed["status"] == straight["status"] == "completed"
  assert resumed["step"] == straight["step"] == 6
  assert resumed["final"]["step"] == straight["final"]["step"] == 6
  for key in ("train_loss", "test_loss", "test_accuracy"):
    np.testing.assert_allclose(resumed["final"][key], straight["final"][key], rtol=1e-6,
                               err_msg=key)
