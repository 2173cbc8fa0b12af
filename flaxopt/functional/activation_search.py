"""The search space of Ramachandran, Zoph & Le 2017, "Searching for Activation Functions".

A candidate activation is one *core unit* ``b(u1(x), u2(x))``: two unary ops applied to the
pre-activation ``x`` and combined by one binary op (the paper's Fig. 1 with one unit; the
paper's best functions, Swish ``x * sigmoid(beta x)`` among them, are all of this size).
The ops are a subset of the paper's Table 1 (section 3), as pure ``jnp`` functions:

- ``UNARY``: name -> ``(template, fn)``; the template formats the op applied to an argument,
  e.g. ``"sigmoid({})"``.
- ``BINARY``: name -> ``(template, fn)``; e.g. ``"{a} * sigmoid({b})"``.

``core_unit(u1, u2, b)`` is one candidate as a plain function, ``candidate_name(u1, u2, b)``
its readable name (``core_unit("x", "sigmoid", "mul")`` is ``"x * sigmoid(x)"``), and
``enumerate_candidates(unary, binary)`` lists the whole space, drops the candidates that are
non-finite (value or gradient) on a probe grid, constant or affine there, and keeps one
representative (the shortest name) of every group that agrees numerically on the grid.
``apply_core_unit(x, index, unary, binary)`` evaluates a candidate given by integer indices with
``lax.switch``, so many candidates can be trained at once under ``vmap``.

Deviations from the paper: no trainable ``beta`` (the paper's ``beta * x``, ``x + beta`` and
``beta`` ops are left out; ``x * sigmoid(x)`` is Swish with ``beta = 1``, i.e. SiLU), ``exp`` and
``sinh``-like ops are clipped at ``x <= 10`` so training cannot overflow, and the division op
``x1 / (x2 + eps)`` is not included.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Callable, Mapping, Optional, Sequence

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from flaxopt.functional import activations

Array = jax.Array
UnaryFn = Callable[[Array], Array]
BinaryFn = Callable[[Array, Array], Array]

__all__ = [
    "UNARY",
    "BINARY",
    "SPACES",
    "PROBE_GRID",
    "Candidate",
    "candidate_name",
    "core_unit",
    "apply_core_unit",
    "enumerate_candidates",
]

EXP_CLIP = 10.0  # exp(x) is evaluated at min(x, EXP_CLIP): finite values and gradients.


def _exp_clipped(x: Array) -> Array:
  """``exp(min(x, 10))``: the paper's ``exp(x)``, clipped so training cannot overflow."""
  return jnp.exp(jnp.minimum(x, EXP_CLIP))


def _const(value: float) -> UnaryFn:
  """The constant op ``x -> value`` (shape and dtype of ``x``)."""

  def fn(x: Array) -> Array:
    return jnp.full_like(x, value)

  return fn


# name -> (template, fn). Paper's Table 1 unary column (minus the beta ops, log, sinh, cosh,
# asinh, sinc). "sqrt(|x|)" has an infinite derivative at 0; enumerate_candidates drops the
# candidates whose gradient is non-finite on the probe grid (which contains 0).
UNARY: dict[str, tuple[str, UnaryFn]] = {
    "x": ("{}", lambda x: x),
    "neg": ("-{}", lambda x: -x),
    "abs": ("|{}|", jnp.abs),
    "square": ("{}^2", jnp.square),
    "cube": ("{}^3", lambda x: x * x * x),
    "sqrt_abs": ("sqrt(|{}|)", lambda x: jnp.sqrt(jnp.abs(x))),
    "exp": ("exp({})", _exp_clipped),
    "sin": ("sin({})", jnp.sin),
    "cos": ("cos({})", jnp.cos),
    "sigmoid": ("sigmoid({})", activations.sigmoid),
    "tanh": ("tanh({})", activations.tanh),
    "atan": ("atan({})", jnp.arctan),
    "relu": ("max({}, 0)", activations.relu),
    "min0": ("min({}, 0)", lambda x: jnp.minimum(x, 0.0)),
    "erf": ("erf({})", jax.scipy.special.erf),
    "softplus": ("softplus({})", activations.softplus),
    "gauss": ("exp(-{}^2)", lambda x: jnp.exp(-jnp.square(x))),
    "zero": ("0", _const(0.0)),
    "one": ("1", _const(1.0)),
}

# name -> (template, fn). Paper's Table 1 binary column (minus x1 / (x2 + eps) and the beta ops;
# the paper's exp(-beta (x1 - x2)^2) with beta = 1).
BINARY: dict[str, tuple[str, BinaryFn]] = {
    "add": ("{a} + {b}", jnp.add),
    "mul": ("{a} * {b}", jnp.multiply),
    "sub": ("{a} - {b}", jnp.subtract),
    "max": ("max({a}, {b})", jnp.maximum),
    "min": ("min({a}, {b})", jnp.minimum),
    "sigmoid_mul": ("{a} * sigmoid({b})", lambda a, b: a * activations.sigmoid(b)),
    "gauss_diff": ("exp(-({a} - {b})^2)", lambda a, b: jnp.exp(-jnp.square(a - b))),
}

# Named (unary, binary) subsets. "small" is what experiments/search_activations.py scores by
# default; every op in it has a finite derivative everywhere (needed by apply_core_unit under
# vmap, where every branch is differentiated).
SPACES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "tiny": (("x", "sigmoid", "relu", "tanh"), ("mul", "add")),
    "small": (("x", "square", "sigmoid", "tanh", "relu", "sin", "zero"),
              ("add", "mul", "max", "sigmoid_mul")),
    "full": (tuple(UNARY), tuple(BINARY)),
}

# Probe points: dense on [-6, 6] (includes 0 and the integers), plus a few larger magnitudes.
PROBE_GRID = np.concatenate([np.linspace(-6.0, 6.0, 121), [-20.0, -10.0, 10.0, 20.0]])


@dataclasses.dataclass(frozen=True)
class Candidate:
  """One core unit ``b(u1(x), u2(x))``: op names, readable name and its plain function."""
  unary1: str
  unary2: str
  binary: str
  name: str
  fn: UnaryFn = dataclasses.field(compare=False, repr=False)


def _check(table: Mapping[str, object], names: Sequence[str], kind: str) -> None:
  unknown = [n for n in names if n not in table]
  if unknown:
    raise ValueError(f"Unknown {kind} op(s) {unknown}; valid: {', '.join(table)}")


# (binary, constant) pairs with b(u, constant) == u, and with b(constant, u) == u.
_NEUTRAL_RIGHT = {("add", "zero"), ("sub", "zero"), ("mul", "one")}
_NEUTRAL_LEFT = {("add", "zero"), ("mul", "one")}
_TRIVIAL_UNARY = ("x", "zero", "one")


def _reduces_to(unary1: str, unary2: str, binary: str) -> Optional[int]:
  """0 / 1 when ``b(u1, u2)`` is just ``u1`` / ``u2`` (``u + 0``, ``u * 1``), else None."""
  if (binary, unary2) in _NEUTRAL_RIGHT:
    return 0
  if (binary, unary1) in _NEUTRAL_LEFT:
    return 1
  return None


def candidate_name(unary1: str, unary2: str, binary: str) -> str:
  """Readable formula of ``b(u1(x), u2(x))``, e.g. ``("x", "sigmoid", "mul") -> "x * sigmoid(x)"``.

  ``u + 0``, ``0 + u``, ``u - 0``, ``u * 1`` and ``1 * u`` are written as ``u``.

  Raises:
    ValueError: for an op name not in ``UNARY`` / ``BINARY``.
  """
  _check(UNARY, (unary1, unary2), "unary")
  _check(BINARY, (binary,), "binary")
  a = UNARY[unary1][0].format("x")
  b = UNARY[unary2][0].format("x")
  reduced = _reduces_to(unary1, unary2, binary)
  if reduced is not None:
    return (a, b)[reduced]
  return BINARY[binary][0].format(a=a, b=b)


def _complexity(unary1: str, unary2: str, binary: str) -> int:
  """Number of non-trivial ops in the unit (``x``, constants and neutral binaries are free)."""
  count = sum(u not in _TRIVIAL_UNARY for u in (unary1, unary2))
  return count + (_reduces_to(unary1, unary2, binary) is None)


def core_unit(unary1: str, unary2: str, binary: str) -> UnaryFn:
  """The candidate ``f(x) = b(u1(x), u2(x))`` as a plain ``jnp`` function.

  Ramachandran, Zoph & Le 2017, section 3 (one core unit). The function keeps the dtype of a
  floating input (integer inputs are promoted to the default float).

  Raises:
    ValueError: for an op name not in ``UNARY`` / ``BINARY``.
  """
  _check(UNARY, (unary1, unary2), "unary")
  _check(BINARY, (binary,), "binary")
  u1, u2, b = UNARY[unary1][1], UNARY[unary2][1], BINARY[binary][1]

  def fn(x: jax.typing.ArrayLike) -> Array:
    x = jnp.asarray(x)
    x = x.astype(jnp.result_type(x, float))
    return b(u1(x), u2(x)).astype(x.dtype)

  fn.__name__ = candidate_name(unary1, unary2, binary)
  return fn


def apply_core_unit(x: Array, index: Array, unary: Sequence[str],
                    binary: Sequence[str]) -> Array:
  """``b(u1(x), u2(x))`` with the ops picked by an integer ``index = (i1, i2, ib)``.

  ``i1``/``i2`` index ``unary`` and ``ib`` indexes ``binary``, via ``lax.switch``: under ``jit``
  with a concrete index only that branch runs; under ``vmap`` over ``index`` every branch is
  evaluated and selected, so one compiled program trains many candidates at once. Every op in
  the space must then have a finite derivative wherever it is evaluated (a non-selected
  branch's ``0 * inf`` would be NaN): ``"sqrt_abs"`` is not allowed here.

  Raises:
    ValueError: for unknown op names or ``"sqrt_abs"``.
  """
  _check(UNARY, unary, "unary")
  _check(BINARY, binary, "binary")
  if "sqrt_abs" in unary:
    raise ValueError("apply_core_unit needs ops with finite derivatives; got unary 'sqrt_abs'")
  unary_fns = [UNARY[n][1] for n in unary]
  binary_fns = [BINARY[n][1] for n in binary]
  index = jnp.asarray(index)
  u1 = lax.switch(index[0], unary_fns, x)
  u2 = lax.switch(index[1], unary_fns, x)
  return lax.switch(index[2], binary_fns, u1, u2).astype(x.dtype)


_PROBE_CHUNK = 8192


def _probe_space(unary: Sequence[str], binary: Sequence[str],
                 grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Values and derivatives of every ``b(u1(x), u2(x))`` on ``grid``, float32.

  Returns two arrays of shape ``(len(unary), len(unary), len(binary), len(grid))``. The
  derivative is forward-mode (``jax.jvp``) through ``u1``, ``u2`` and ``b`` on all pairs at
  once: ``db/da u1' + db/db u2'``, the same products reverse mode forms (so ``0 * inf`` is NaN
  here exactly when it is in training).
  """
  x = jnp.asarray(grid, jnp.float32)
  ones = jnp.ones_like(x)
  unary_out = [jax.jvp(UNARY[n][1], (x,), (ones,)) for n in unary]
  u = jnp.stack([v for v, _ in unary_out])  # (U, G)
  du = jnp.stack([d for _, d in unary_out])
  shape = (len(unary), len(unary), x.shape[0])
  # All (u1, u2) pairs, flattened and padded to whole chunks: every space reuses the same
  # compiled shapes (eager op dispatch caches by shape).
  size = int(np.prod(shape))
  padded = -(-size // _PROBE_CHUNK) * _PROBE_CHUNK
  flat = lambda t: jnp.pad(jnp.broadcast_to(t, shape).reshape(-1), (0, padded - size))
  a, b = flat(u[:, None]), flat(u[None, :])
  da, db = flat(du[:, None]), flat(du[None, :])
  values, grads = [], []
  for name in binary:
    parts = [jax.jvp(BINARY[name][1], (a[i:i + _PROBE_CHUNK], b[i:i + _PROBE_CHUNK]),
                     (da[i:i + _PROBE_CHUNK], db[i:i + _PROBE_CHUNK]))
             for i in range(0, padded, _PROBE_CHUNK)]
    values.append(np.concatenate([np.asarray(v) for v, _ in parts])[:size].reshape(shape))
    grads.append(np.concatenate([np.asarray(d) for _, d in parts])[:size].reshape(shape))
  return (np.stack(values, axis=2).astype(np.float64),
          np.stack(grads, axis=2).astype(np.float64))


def _is_affine(values: np.ndarray, grid: np.ndarray, tol: float) -> bool:
  """Whether ``values`` is ``a x + c`` on ``grid`` (constant included) up to ``tol``."""
  design = np.stack([grid, np.ones_like(grid)], axis=1)
  coef, *_ = np.linalg.lstsq(design, values, rcond=None)
  residual = np.max(np.abs(design @ coef - values))
  return residual <= tol * (1.0 + np.max(np.abs(values)))


def _normalize(values: np.ndarray) -> np.ndarray:
  """``values`` centred and scaled to unit Euclidean norm (a constant gives zeros)."""
  centred = values - values.mean()
  norm = np.linalg.norm(centred)
  return centred / norm if norm > 0 else centred


def _matches_any(values: np.ndarray, kept: np.ndarray, rtol: float, atol: float,
                 both_signs: bool) -> bool:
  """Whether ``values`` agrees with a row of ``kept`` within ``atol + rtol |values|``."""
  signs = (1.0, -1.0) if both_signs else (1.0,)
  return any(
      np.any(np.all(np.abs(s * values - kept) <= atol + rtol * np.abs(values), axis=1))
      for s in signs)


def enumerate_candidates(
    unary: Optional[Sequence[str]] = None,
    binary: Optional[Sequence[str]] = None,
    *,
    grid: Optional[np.ndarray] = None,
    rtol: float = 1e-4,
    atol: float = 1e-5,
    drop_affine: bool = True,
    dedup: bool = True,
    modulo_affine: bool = False,
) -> list[Candidate]:
  """All core units ``b(u1(x), u2(x))`` over the given ops, filtered and deduplicated.

  Steps: every ``(u1, u2, b)`` in ``unary x unary x binary``; drop the candidates whose value or
  derivative is non-finite anywhere on ``grid`` (default ``PROBE_GRID``); with ``drop_affine``
  drop those that are affine (or constant) on the grid (a network of them is linear); with
  ``dedup`` keep one candidate of every group whose values agree on the grid within
  ``atol + rtol * |value|`` (symmetric binary ops, ``max(x, 0)`` as both ``max(x, 0)`` and
  ``max(x, 0) + 0``), preferring the fewest non-trivial ops, then the shortest name, then
  enumeration order. The result is sorted that way too.
  With ``modulo_affine`` two candidates are also duplicates when ``f = a g + c`` on the grid
  (``a != 0``): followed by a Dense layer with a bias, both give the same set of networks
  (``x * x`` and ``x * -x``, ``sigmoid(x) + sigmoid(x)`` and ``sigmoid(x) * sigmoid(0)``).

  Args:
    unary: names from ``UNARY`` (default: all).
    binary: names from ``BINARY`` (default: all).
    grid: 1-D probe points.
    rtol: relative tolerance of the numerical equivalence (and of the affine test).
    atol: absolute tolerance of the numerical equivalence.
    drop_affine: drop candidates affine on the grid.
    dedup: drop numerical duplicates.
    modulo_affine: duplicates up to an output scale and shift (compared after centring and
      scaling to unit norm, both signs; same tolerances).

  Returns:
    a list of ``Candidate``.

  Raises:
    ValueError: for unknown op names, empty op lists or a non-1-D / empty grid.
  """
  unary = tuple(UNARY) if unary is None else tuple(unary)
  binary = tuple(BINARY) if binary is None else tuple(binary)
  if not unary or not binary:
    raise ValueError(f"enumerate_candidates needs ops, got unary={unary}, binary={binary}")
  _check(UNARY, unary, "unary")
  _check(BINARY, binary, "binary")
  grid = PROBE_GRID if grid is None else np.asarray(grid, np.float64)
  if grid.ndim != 1 or grid.size < 3:
    raise ValueError(f"enumerate_candidates needs a 1-D grid of >= 3 points, got {grid.shape}")

  all_values, all_grads = _probe_space(unary, binary, grid)
  index = list(itertools.product(range(len(unary)), range(len(unary)), range(len(binary))))
  names = [candidate_name(unary[i], unary[j], binary[k]) for i, j, k in index]
  ops_of = lambda n: (unary[index[n][0]], unary[index[n][1]], binary[index[n][2]])
  order = sorted(range(len(index)), key=lambda n: (_complexity(*ops_of(n)), len(names[n]), n))
  kept: list[Candidate] = []
  kept_values: list[np.ndarray] = []
  for n in order:
    values, grads = all_values[index[n]], all_grads[index[n]]
    if not (np.all(np.isfinite(values)) and np.all(np.isfinite(grads))):
      continue
    if drop_affine and _is_affine(values, grid, rtol):
      continue
    key = _normalize(values) if modulo_affine else values
    if dedup and kept_values and _matches_any(key, np.stack(kept_values), rtol, atol,
                                              modulo_affine):
      continue
    ops = ops_of(n)
    kept.append(Candidate(*ops, name=names[n], fn=core_unit(*ops)))
    kept_values.append(key)
  return kept
