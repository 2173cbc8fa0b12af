"""Tests for flaxopt.optim.penalties: add_l2, add_l1 (subgradient and proximal), l1_prox."""

import functools
import os

from absl.testing import parameterized
import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import sklearn.linear_model

from flaxopt import optim
from flaxopt.training import state as train_state
from flaxopt.training import steps

_PARAMS = {"w": jnp.array([[0.5, -1.5, 0.0], [2.0, -0.05, 0.3]]), "b": jnp.array([0.2, -0.4, 1.0])}
_GRADS = {"w": jnp.array([[0.1, 0.2, -0.3], [0.0, 0.5, -0.1]]), "b": jnp.array([1.0, 1.0, -1.0])}
_WEIGHT, _LR = 0.3, 0.5


def _soft_threshold(z, t):
  return np.sign(z) * np.maximum(np.abs(z) - t, 0.0)


# name, transform, numpy closed form of the update from (g, w).
_CASES = (
    ("add_l2", optim.add_l2(_WEIGHT), lambda g, w: g + _WEIGHT * w),
    ("add_l1", optim.add_l1(_WEIGHT), lambda g, w: g + _WEIGHT * np.sign(w)),
    ("l1_prox", optim.l1_prox(_WEIGHT, _LR),
     lambda u, w: _soft_threshold(w + u, _LR * _WEIGHT) - w),
    ("add_l1_proximal", optim.add_l1(_WEIGHT, proximal=True, learning_rate=_LR),
     lambda u, w: _soft_threshold(w + u, _LR * _WEIGHT) - w),
)

# Masks in both optax.masked forms: the bias is excluded.
_MASKS = (
    ("tree", {"w": True, "b": False}),
    ("callable", lambda p: jax.tree_util.tree_map_with_path(
        lambda path, _: path[-1].key != "b", p)),
)


class PenaltyTransformTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(*_CASES)
  def test_update_matches_closed_form(self, tx, ref):
    update = self.variant(tx.update)
    got, _ = update(_GRADS, tx.init(_PARAMS), _PARAMS)
    expected = jax.tree.map(lambda g, w: ref(np.asarray(g), np.asarray(w)), _GRADS, _PARAMS)
    chex.assert_trees_all_close(got, expected, atol=1e-6)

  @parameterized.product(case=_CASES, mask=_MASKS)
  def test_mask_leaves_masked_leaves_untouched(self, case, mask):
    name, _, ref = case
    ctor = {"add_l2": lambda m: optim.add_l2(_WEIGHT, mask=m),
            "add_l1": lambda m: optim.add_l1(_WEIGHT, mask=m),
            "l1_prox": lambda m: optim.l1_prox(_WEIGHT, _LR, mask=m),
            "add_l1_proximal": lambda m: optim.add_l1(
                _WEIGHT, mask=m, proximal=True, learning_rate=_LR)}[name]
    tx = ctor(mask[1])
    got, _ = tx.update(_GRADS, tx.init(_PARAMS), _PARAMS)
    chex.assert_trees_all_equal(got["b"], _GRADS["b"])
    chex.assert_trees_all_close(got["w"], ref(np.asarray(_GRADS["w"]), np.asarray(_PARAMS["w"])),
                                atol=1e-6)

  @parameterized.named_parameters(*_CASES)
  def test_dtype_kept_and_params_required(self, tx, ref):
    del ref
    params = jax.tree.map(lambda p: p.astype(jnp.bfloat16), _PARAMS)
    grads = jax.tree.map(lambda g: g.astype(jnp.bfloat16), _GRADS)
    got, _ = tx.update(grads, tx.init(params), params)
    chex.assert_trees_all_equal_dtypes(got, grads)
    with self.assertRaisesRegex(ValueError, "params"):
      tx.update(_GRADS, tx.init(_PARAMS))

  @parameterized.named_parameters(
      ("l2_negative", lambda: optim.add_l2(-0.1), "weight"),
      ("l1_negative", lambda: optim.add_l1(-1e-3), "weight"),
      ("l1_nan", lambda: optim.add_l1(float("nan")), "weight"),
      ("prox_negative", lambda: optim.l1_prox(-0.1, 0.1), "weight"),
      ("prox_negative_lr", lambda: optim.l1_prox(0.1, -0.1), "learning_rate"),
      ("proximal_without_lr", lambda: optim.add_l1(0.1, proximal=True), "learning_rate"),
      ("lr_without_proximal", lambda: optim.add_l1(0.1, learning_rate=0.1), "proximal"),
      ("weight_not_number", lambda: optim.add_l2("0.1"), "weight"),
  )
  def test_bad_arguments_raise(self, make, pattern):
    with self.assertRaisesRegex(ValueError, pattern):
      make()


class ChainOrderTest(parameterized.TestCase):
  """Coupled L2 (add_l2 before Adam) vs decoupled decay (AdamW) is a chain-order choice."""

  def test_coupled_l2_is_adam_on_penalized_gradient(self):
    tx = optax.chain(optim.add_l2(_WEIGHT), optax.adam(0.1))
    ref = optax.adam(0.1)
    got, _ = tx.update(_GRADS, tx.init(_PARAMS), _PARAMS)
    penalized = jax.tree.map(lambda g, w: g + _WEIGHT * w, _GRADS, _PARAMS)
    expected, _ = ref.update(penalized, ref.init(_PARAMS))
    chex.assert_trees_all_close(got, expected, rtol=1e-6)

  def test_decoupled_chain_is_adamw_and_differs_from_coupled(self):
    decoupled = optax.chain(optax.scale_by_adam(), optax.add_decayed_weights(_WEIGHT),
                            optax.scale(-0.1))
    adamw = optax.adamw(0.1, weight_decay=_WEIGHT)
    coupled = optax.chain(optim.add_l2(_WEIGHT), optax.adam(0.1))
    updates = [tx.update(_GRADS, tx.init(_PARAMS), _PARAMS)[0]
               for tx in (decoupled, adamw, coupled)]
    chex.assert_trees_all_close(updates[0], updates[1], rtol=1e-6)
    self.assertGreater(float(jnp.abs(updates[0]["w"] - updates[2]["w"]).max()), 1e-2)


def _lasso_problem():
  rng = np.random.default_rng(0)
  a = rng.normal(size=(60, 12)).astype(np.float32)
  x_true = np.zeros(12, np.float32)
  x_true[:3] = [2.0, -1.5, 1.0]
  b = a @ x_true + 0.1 * rng.normal(size=60).astype(np.float32)
  return a, b


def _run(tx, a, b, steps):
  loss = lambda x: 0.5 * jnp.mean((a @ x - b) ** 2)

  @jax.jit
  def solve(x0):
    def body(_, carry):
      x, state = carry
      u, state = tx.update(jax.grad(loss)(x), state, x)
      return optax.apply_updates(x, u), state
    return jax.lax.fori_loop(0, steps, body, (x0, tx.init(x0)))[0]

  return np.asarray(solve(jnp.zeros(a.shape[1], jnp.float32)))


class LassoTest(parameterized.TestCase):
  """ISTA = chain(sgd(lr), l1_prox(lam, lr)) on 1/(2n)||Ax - b||^2 + lam ||x||_1."""

  def test_proximal_l1_solves_lasso_with_exact_zeros(self):
    a, b = _lasso_problem()
    lam, lr = 0.1, 0.2
    x = _run(optax.chain(optax.sgd(lr), optim.l1_prox(lam, lr)), a, b, 1500)
    # Independent reference: scikit-learn's coordinate-descent Lasso (same objective).
    ref = sklearn.linear_model.Lasso(alpha=lam, fit_intercept=False, tol=1e-12,
                                     max_iter=100_000).fit(a.astype(np.float64),
                                                           b.astype(np.float64)).coef_
    np.testing.assert_allclose(x, ref, atol=1e-4)
    self.assertGreater(int((ref == 0).sum()), 3)
    np.testing.assert_array_equal(x == 0, ref == 0)  # exact zeros, same support
    # KKT: |grad_i| <= lam where x_i = 0, grad_i = -lam sign(x_i) elsewhere.
    grad = a.T @ (a @ x - b) / a.shape[0]
    self.assertTrue(np.all(np.abs(grad[x == 0]) <= lam + 1e-5))
    np.testing.assert_allclose(grad[x != 0], -lam * np.sign(x[x != 0]), atol=1e-4)

  def test_subgradient_l1_does_not_reach_exact_zeros(self):
    a, b = _lasso_problem()
    x = _run(optax.chain(optim.add_l1(0.1), optax.sgd(0.2)), a, b, 300)
    self.assertEqual(int((x == 0).sum()), 0)

  def test_schedule_threshold_follows_the_step_count(self):
    schedule = optax.linear_schedule(1.0, 0.0, transition_steps=4)
    tx = optim.l1_prox(0.5, schedule)
    w = jnp.array([1.0, -2.0, 0.1])
    u = jnp.zeros(3)
    state = tx.init(w)
    for step in range(3):
      got, state = tx.update(u, state, w)
      expected = _soft_threshold(np.asarray(w), 0.5 * float(schedule(step))) - np.asarray(w)
      chex.assert_trees_all_close(got, expected, atol=1e-6)
    self.assertEqual(int(state.count), 3)


class L2ConventionTest(parameterized.TestCase):
  """One ``l2``: ``regularizer.l2 = a`` in the train step (loss + a/2 sum w^2),
  ``optim.add_l2(a)`` before SGD and PyTorch's ``SGD(weight_decay=a)`` move the weights
  alike, on softmax regression with momentum (float64, 25 steps)."""

  _REF = np.load(os.path.join(os.path.dirname(__file__), "references", "sgd_weight_decay.npz"))

  def _numpy_torch_sgd(self):
    """torch.optim.SGD's documented update, transcribed in float64 NumPy:
    ``d_p = g + weight_decay * p``; ``buf = momentum * buf + d_p`` (``buf = d_p`` at the
    first step); ``p -= lr * buf``. ``g`` is the closed-form gradient of the mean CE."""
    r = self._REF
    lr, mu, wd = float(r["learning_rate"]), float(r["momentum"]), float(r["weight_decay"])
    x, onehot = r["x"], np.eye(r["kernel0"].shape[1])[r["y"]]
    params = [r["kernel0"].copy(), r["bias0"].copy()]
    bufs = [None, None]
    path = []
    for _ in range(len(r["kernels"])):
      logits = x @ params[0] + params[1]
      p = np.exp(logits - logits.max(1, keepdims=True))
      p /= p.sum(1, keepdims=True)
      delta = (p - onehot) / len(x)
      grads = [x.T @ delta, delta.sum(0)]
      for i, (w, g) in enumerate(zip(params, grads)):
        d_p = g + wd * w
        bufs[i] = d_p.copy() if bufs[i] is None else mu * bufs[i] + d_p
        params[i] = w - lr * bufs[i]
      path.append([q.copy() for q in params])
    return path

  def _jax_path(self, l2, tx):
    """Float64 loop: mean softmax CE + ``steps.regularized_loss(params, l2=l2)``, then ``tx``."""
    r = self._REF
    x, onehot = jnp.asarray(r["x"]), jax.nn.one_hot(r["y"], r["kernel0"].shape[1])

    def loss(p):
      ce = optax.softmax_cross_entropy(x @ p["kernel"] + p["bias"], onehot).mean()
      return ce + steps.regularized_loss(p, l2=l2)

    @jax.jit
    def run(p):
      def body(carry, _):
        p, opt_state = carry
        updates, opt_state = tx.update(jax.grad(loss)(p), opt_state, p)
        p = optax.apply_updates(p, updates)
        return (p, opt_state), [p["kernel"], p["bias"]]
      return jax.lax.scan(body, (p, tx.init(p)), length=len(r["kernels"]))[1]

    kernels, biases = run({"kernel": jnp.asarray(r["kernel0"]), "bias": jnp.asarray(r["bias0"])})
    return [[np.asarray(k), np.asarray(b)] for k, b in zip(kernels, biases)]

  def _train_step_path(self, l2, tx):
    """The real ``steps.train_step`` (its cross-entropy runs in float32) on a flax Dense."""
    r = self._REF
    k = r["kernel0"].shape[1]
    model = nn.Dense(k)

    def apply_fn(variables, x, train=False, **kwargs):
      del train
      return model.apply(variables, x, **kwargs)

    params = {"params": {"kernel": jnp.asarray(r["kernel0"]), "bias": jnp.asarray(r["bias0"])}}
    state = train_state.create_train_state(params, tx, jax.random.PRNGKey(0))
    batch = {"x": jnp.asarray(r["x"]), "y": jnp.asarray(r["y"])}
    step = jax.jit(functools.partial(steps.train_step, apply_fn=apply_fn, tx=tx,
                                     num_classes=k, l2=l2))
    path = []
    for _ in range(len(r["kernels"])):
      state, _ = step(state, batch)
      path.append([np.asarray(state.params["kernel"]), np.asarray(state.params["bias"])])
    return path

  def _assert_paths_close(self, paths, want, **tol):
    for name, path in paths.items():
      for t, (got, ref) in enumerate(zip(path, want)):
        for g, w in zip(got, ref):
          np.testing.assert_allclose(g, w, err_msg=f"{name} step {t}", **tol)

  def test_loss_l2_add_l2_and_torch_weight_decay_agree_float64(self):
    r = self._REF
    lr, mu, wd = float(r["learning_rate"]), float(r["momentum"]), float(r["weight_decay"])
    torch_path = [[kern, bias] for kern, bias in zip(r["kernels"], r["biases"])]
    with jax.enable_x64(True):
      paths = {
          "numpy transcription": self._numpy_torch_sgd(),
          "loss + l2/2 sum w^2": self._jax_path(wd, optim.momentum(lr, mu)),
          "add_l2 before SGD": self._jax_path(
              0.0, optax.chain(optim.add_l2(wd), optim.momentum(lr, mu))),
      }
      no_decay = self._jax_path(0.0, optim.momentum(lr, mu))
    self._assert_paths_close(paths, torch_path, rtol=1e-10, atol=1e-12)
    # The decay matters at this scale: without it the weights end elsewhere.
    self.assertGreater(np.abs(no_decay[-1][0] - torch_path[-1][0]).max(), 1e-2)

  def test_train_step_l2_equals_add_l2_and_torch(self):
    r = self._REF
    lr, mu, wd = float(r["learning_rate"]), float(r["momentum"]), float(r["weight_decay"])
    torch_path = [[kern, bias] for kern, bias in zip(r["kernels"], r["biases"])]
    with jax.enable_x64(True):
      loss_path = self._train_step_path(wd, optim.momentum(lr, mu))
      chain_path = self._train_step_path(
          0.0, optax.chain(optim.add_l2(wd), optim.momentum(lr, mu)))
    self._assert_paths_close({"train_step l2 vs add_l2": loss_path}, chain_path,
                             rtol=1e-12, atol=1e-14)
    self._assert_paths_close({"train_step l2 vs torch": loss_path}, torch_path,
                             rtol=1e-6, atol=1e-7)
