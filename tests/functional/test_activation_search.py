"""Tests for flaxopt.functional.activation_search: ops vs numpy, names vs functions, the
vectorised (lax.switch) path vs the plain one, enumeration, dedup and the non-finite filter."""

import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special

import flaxopt.functional as F
from flaxopt.functional import activation_search as S

GRID = np.linspace(-5.0, 5.0, 41)  # contains 0 and the integers
X = np.array([-7.3, -2.5, -1.0, -0.3, 0.0, 0.4, 1.0, 2.2, 6.1, 12.0])

# Independent numpy references for every op of the space.
UNARY_REF = {
    "x": lambda x: x,
    "neg": lambda x: -x,
    "abs": np.abs,
    "square": lambda x: x ** 2,
    "cube": lambda x: x ** 3,
    "sqrt_abs": lambda x: np.sqrt(np.abs(x)),
    "exp": lambda x: np.exp(np.minimum(x, 10.0)),
    "sin": np.sin,
    "cos": np.cos,
    "sigmoid": special.expit,
    "tanh": np.tanh,
    "atan": np.arctan,
    "relu": lambda x: np.maximum(x, 0.0),
    "min0": lambda x: np.minimum(x, 0.0),
    "erf": special.erf,
    "softplus": lambda x: np.logaddexp(0.0, x),
    "gauss": lambda x: np.exp(-x ** 2),
    "zero": np.zeros_like,
    "one": np.ones_like,
}
BINARY_REF = {
    "add": np.add,
    "mul": np.multiply,
    "sub": np.subtract,
    "max": np.maximum,
    "min": np.minimum,
    "sigmoid_mul": lambda a, b: a * special.expit(b),
    "gauss_diff": lambda a, b: np.exp(-(a - b) ** 2),
}

# (u1, u2, b) -> expected name, independent reference.
NAMED = (
    (("x", "sigmoid", "mul"), "x * sigmoid(x)", F.silu),
    (("x", "x", "sigmoid_mul"), "x * sigmoid(x)", F.silu),
    (("x", "zero", "max"), "max(x, 0)", F.relu),
    (("relu", "zero", "add"), "max(x, 0)", F.relu),
    (("zero", "tanh", "add"), "tanh(x)", np.tanh),
    (("exp", "one", "mul"), "exp(x)", np.exp),
    (("sin", "zero", "sub"), "sin(x)", np.sin),
    (("x", "tanh", "mul"), "x * tanh(x)", lambda x: x * np.tanh(x)),
    (("square", "sin", "add"), "x^2 + sin(x)", lambda x: x * x + np.sin(x)),
    (("erf", "x", "sub"), "erf(x) - x", lambda x: special.erf(x) - x),
    (("neg", "min0", "max"), "max(-x, min(x, 0))", lambda x: np.maximum(-x, np.minimum(x, 0))),
    (("x", "cube", "gauss_diff"), "exp(-(x - x^3)^2)", lambda x: np.exp(-(x - x ** 3) ** 2)),
)


def test_reference_tables_cover_the_space():
  assert set(UNARY_REF) == set(S.UNARY) and set(BINARY_REF) == set(S.BINARY)


@pytest.mark.parametrize("name", list(S.UNARY))
def test_unary_matches_numpy(name):
  got = S.UNARY[name][1](jnp.asarray(X, jnp.float32))
  np.testing.assert_allclose(got, UNARY_REF[name](X), rtol=2e-6, atol=2e-6)


@pytest.mark.parametrize("name", list(S.BINARY))
def test_binary_matches_numpy(name):
  a, b = np.meshgrid(X[:6], X[3:9])
  got = S.BINARY[name][1](jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32))
  np.testing.assert_allclose(got, BINARY_REF[name](a, b), rtol=2e-6, atol=2e-6)


@pytest.mark.parametrize("ops, name, ref", NAMED, ids=[n + "/" + o[2] for o, n, _ in NAMED])
def test_name_and_function_agree(ops, name, ref):
  assert S.candidate_name(*ops) == name
  fn = S.core_unit(*ops)
  assert fn.__name__ == name
  x = np.linspace(-4.0, 4.0, 33)
  np.testing.assert_allclose(fn(jnp.asarray(x, jnp.float32)), np.asarray(ref(x), np.float64),
                             rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_core_unit_keeps_dtype_and_is_differentiable(dtype):
  fn = S.core_unit("x", "sigmoid", "mul")
  x = jnp.asarray(X, dtype)
  assert fn(x).dtype == dtype
  assert jax.jit(fn)(x).dtype == dtype
  grads = jax.vmap(jax.grad(fn))(jnp.asarray(X, jnp.float32))
  s = special.expit(X)
  np.testing.assert_allclose(grads, s + X * s * (1 - s), rtol=1e-5, atol=1e-6)
  with jax.enable_x64(True):
    assert fn(jnp.asarray(X, jnp.float64)).dtype == jnp.float64


def test_apply_core_unit_matches_core_unit_under_vmap():
  unary, binary = ("x", "square", "sigmoid", "relu", "zero"), ("add", "mul", "max",
                                                                "sigmoid_mul")
  triples = list(itertools.product(range(len(unary)), range(len(unary)), range(len(binary))))
  index = jnp.asarray(triples, jnp.int32)
  x = jnp.asarray(np.tile(X, (len(triples), 1)), jnp.float32)
  apply = lambda xi, idx: S.apply_core_unit(xi, idx, unary, binary)
  values = jax.jit(jax.vmap(apply))(x, index)
  grads = jax.jit(jax.vmap(jax.vmap(jax.grad(apply), in_axes=(0, None))))(x, index)
  expected = np.stack([S.core_unit(unary[i], unary[j], binary[k])(jnp.asarray(X, jnp.float32))
                       for i, j, k in triples])
  chex.assert_trees_all_close(values, expected, rtol=1e-6, atol=1e-6)
  chex.assert_tree_all_finite(grads)
  # Spot check: (x, sigmoid, mul) is silu, derivative s + x s (1 - s).
  n = triples.index((0, 2, 1))
  s = special.expit(X)
  np.testing.assert_allclose(grads[n], s + X * s * (1 - s), rtol=1e-5, atol=1e-6)


def test_enumeration_sizes():
  unary, binary = S.SPACES["tiny"]
  total = len(unary) ** 2 * len(binary)
  everything = S.enumerate_candidates(unary, binary, drop_affine=False, dedup=False)
  assert len(everything) == total == 32
  assert len({(c.unary1, c.unary2, c.binary) for c in everything}) == total
  # Affine ones in the tiny space: only x + x.
  assert [c.name for c in everything if c.name not in
          {d.name for d in S.enumerate_candidates(unary, binary, dedup=False)}] == ["x + x"]
  deduped = S.enumerate_candidates(unary, binary)
  # 32 - (x + x) = 31; "+" and "*" are symmetric, so the 6 unordered pairs u1 != u2 appear
  # twice per op: 31 - 12 = 19; and max(x, 0) * max(x, 0) == x * max(x, 0): 18.
  assert len(deduped) == 18
  assert 40 <= len(S.enumerate_candidates(*S.SPACES["small"], modulo_affine=True)) <= 100


def test_dedup_keeps_one_of_each_equivalence_class():
  unary, binary = ("x", "neg", "sigmoid", "relu", "zero"), ("mul", "sigmoid_mul", "max")
  kept = S.enumerate_candidates(unary, binary)
  everything = S.enumerate_candidates(unary, binary, drop_affine=False, dedup=False)
  x = jnp.asarray(S.PROBE_GRID, jnp.float32)
  kept_values = np.stack([np.asarray(c.fn(x)) for c in kept])
  # No two kept candidates agree on the grid ...
  for i, j in itertools.combinations(range(len(kept)), 2):
    assert not np.allclose(kept_values[i], kept_values[j], rtol=1e-4, atol=1e-5), (
        kept[i].name, kept[j].name)
  # ... and every non-affine candidate agrees with one kept candidate.
  for c in everything:
    v = np.asarray(c.fn(x))
    affine = np.polyfit(S.PROBE_GRID, v, 1)
    if np.allclose(np.polyval(affine, S.PROBE_GRID), v, atol=1e-3):
      continue
    assert any(np.allclose(v, k, rtol=1e-4, atol=1e-5) for k in kept_values), c.name
  names = [c.name for c in kept]
  assert names.count("x * sigmoid(x)") == 1 and "max(x, 0)" in names  # each has 2 routes
  assert "x * x" in names and "-x * -x" not in names  # same function
  assert "max(max(x, 0), max(x, 0))" not in names
  assert len(names) == len(set(names))


def test_modulo_affine_merges_scaled_and_shifted_copies():
  unary, binary = ("x", "neg", "sigmoid", "zero", "one"), ("add", "mul", "sub")
  exact = {c.name for c in S.enumerate_candidates(unary, binary)}
  merged = {c.name for c in S.enumerate_candidates(unary, binary, modulo_affine=True)}
  # sigmoid, -sigmoid, 1 - sigmoid, 2 sigmoid: one class modulo affine.
  assert {"sigmoid(x)", "-x * sigmoid(x)", "x * sigmoid(x)"} <= exact
  assert "sigmoid(x)" in merged and "sigmoid(x) + sigmoid(x)" not in merged
  assert "1 - sigmoid(x)" in exact and "1 - sigmoid(x)" not in merged
  assert merged < exact


def test_non_finite_candidates_are_dropped():
  names = {c.name for c in S.enumerate_candidates(("x", "sqrt_abs"), ("mul", "add"),
                                                  drop_affine=False)}
  # d/dx sqrt(|x|) is infinite at 0, so every candidate using it is dropped (0 * inf = NaN
  # in x * sqrt(|x|)); sqrt(|x|) * sqrt(|x|) = |x| as well, by the chain rule of autodiff.
  assert names == {"x * x", "x + x"}
  kept = S.enumerate_candidates(("x", "exp", "cube"), ("mul",))
  assert len(kept) == 6  # exp(x)^2 = exp(2x) etc. are finite thanks to the clip
  values = [c.fn(jnp.asarray(S.PROBE_GRID, jnp.float32)) for c in kept]
  chex.assert_tree_all_finite(values)


@pytest.mark.parametrize("call, match", [
    (lambda: S.core_unit("x", "swish", "mul"), "swish"),
    (lambda: S.candidate_name("x", "x", "div"), "div"),
    (lambda: S.enumerate_candidates(("x", "nope"), ("add",)), "nope"),
    (lambda: S.enumerate_candidates((), ("add",)), "unary"),
    (lambda: S.enumerate_candidates(("x",), ("add",), grid=np.zeros((2, 2))), "grid"),
    (lambda: S.apply_core_unit(jnp.ones(3), jnp.zeros(3, jnp.int32), ("x", "sqrt_abs"),
                               ("add",)), "sqrt_abs"),
])
def test_bad_arguments_raise(call, match):
  with pytest.raises(ValueError, match=match):
    call()
