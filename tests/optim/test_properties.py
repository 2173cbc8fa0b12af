"""Shared properties of every first-order optimizer, over the one table of tests/optim/properties.py.

Every case goes through every property unless ``Case.skip`` names it (with the reason in
``properties.WHY``). Adding an optimizer to ``optim.REGISTRY`` without a case fails
``test_table_covers_the_registry``. Bad hyperparameters of every optimizer are one table here.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import jax.test_util  # pylint: disable=unused-import
import optax
import orbax.checkpoint as ocp
import pytest

from flaxopt import optim
from flaxopt import registry
from flaxopt.optim import alias
from tests.optim import properties as props
from tests.optim.properties import CASES, IDS, Case

ALL = [pytest.param(c, id=i) for c, i in zip(CASES, IDS)]


def test_table_covers_the_registry() -> None:
  names = {c.name for c in CASES}
  assert names == set(optim.REGISTRY) - props.SECOND_ORDER
  assert names <= set(registry.names("optimizer"))
  assert {c.name for c in CASES if c.family == "alias"} == set(alias.REGISTRY)
  assert all(optim.REGISTRY[n] is alias.REGISTRY[n] for n in alias.REGISTRY)
  assert all(reason in props.WHY for c in CASES for reason in c.skip)


@pytest.mark.parametrize("case", ALL)
def test_registry_builds_it_and_rejects_unknown(case: Case) -> None:
  params, grads = props.small_problem()
  tx = registry.get("optimizer", case.name, **case.kwargs)
  assert isinstance(tx, optax.GradientTransformation)
  u = jax.eval_shape(  # Traced, not compiled: the update rules run in the other tests.
      lambda g, p: case.update_fn(tx, props.small_loss)(g, tx.init(p), p, 0)[0],
      grads[0], params)
  chex.assert_trees_all_equal_shapes_and_dtypes(u, params)
  with pytest.raises(ValueError, match="optimizer"):
    registry.get("optimizer", case.name + "m", **case.kwargs)


@pytest.mark.parametrize("case", ALL)
def test_minimizes_parabola_and_rosenbrock(case: Case) -> None:
  """Both objectives in one compilation (schedule-free: its evaluation point x)."""
  tx = case.make()
  rosenbrock = "rosenbrock" not in case.skip

  def minimize(objective, x):
    update = case.update_fn(tx, objective)

    def body(t, carry):
      x, state = carry
      u, state = update(jax.grad(objective)(x), state, x, t)
      return optax.apply_updates(x, u), state
    x, state = jax.lax.fori_loop(0, case.steps, body, (x, tx.init(x)))
    return (optim.schedule_free_eval_params(x, state) if case.name.startswith("schedule_free")
            else x)

  @jax.jit
  def run(x_parabola, x_rosenbrock):
    return (minimize(props.parabola, x_parabola),
            minimize(props.rosenbrock, x_rosenbrock) if rosenbrock else None)

  x, xy = run(jax.tree.map(jnp.zeros_like, props.PARABOLA_TARGET), jnp.zeros(2))
  chex.assert_trees_all_close(x, props.PARABOLA_TARGET, atol=1e-2)
  if rosenbrock:
    # Part A's schedule-free and sign-based methods stop within 2e-2 at their step counts.
    chex.assert_trees_all_close(xy, jnp.ones(2), atol=2e-2 if case.family == "a" else 1e-2)


@pytest.mark.parametrize("case", ALL)
def test_dtypes_state_structure_one_compilation_and_jit_equals_eager(case: Case) -> None:
  """float32, bfloat16 (and float64 unless the references check it) in = out; the state
  keeps its structure, dtypes and finiteness; the update compiles once per dtype; float32
  jitted updates equal the eager ones."""
  dtypes = [jnp.float32, jnp.bfloat16] + ([] if "float64" in case.skip else [jnp.float64])
  for dtype in dtypes:
    with jax.enable_x64(dtype == jnp.float64):
      params, _ = props.small_problem(dtype)
      # Full-rank gradients: rank-1 ones leave SOAP's eigenbases degenerate (jit and eager
      # eigh then pick different ones).
      grads = props.random_grads(params)
      tx = case.make()
      traces = []
      plain = case.update_fn(tx, props.small_loss)

      def counted(*args, plain=plain, traces=traces):
        traces.append(1)  # Python side effect: once per trace.
        return plain(*args)

      update = props.fast_jit(counted)
      state0 = tx.init(params)
      state, p, updates = state0, params, []
      for t, g in enumerate(grads):
        u, state = update(g, state, p, t)
        chex.assert_trees_all_equal_dtypes(u, params)
        chex.assert_tree_all_finite(u)
        p = optax.apply_updates(p, u)
        updates.append(u)
      assert len(traces) == 1 and update._cache_size() == 1, (case, dtype)  # pylint: disable=protected-access
      chex.assert_trees_all_equal_structs(state0, state)
      chex.assert_trees_all_equal_dtypes(state0, state)
      chex.assert_tree_all_finite(state)
      if "moments_dtype" not in case.skip:
        # Moments (every state array shaped like a parameter) are in the params' dtype.
        shaped = [x for x in jax.tree.leaves(state) if x.ndim > 0]
        assert all(x.dtype == dtype for x in shaped), (
            dtype, [x.dtype for x in shaped])
      if dtype == jnp.float32:
        eager, _ = props.run_updates(case, tx, params, grads, jit=False)
        chex.assert_trees_all_close(updates, eager, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("case", ALL)
def test_stacked_hyperparameters_match_solo_runs(case: Case) -> None:
  """vmap over 3 members of ``inject_hyperparams(opt)`` with traced per-member values gives
  each member the updates of the plain optimizer built with its values (float32, 3 steps).

  Traced hyperparameters skip validation. Alias cases trace every float hyperparameter;
  parts A and B the learning rate (the others enter as injected arrays of one value).
  """
  names = props.traced_names(case)
  base = case.hyperparameters()
  members = [{**base, **{n: props.MEMBER_VALUES[n][m] for n in names}} for m in range(3)]
  static = case.static_args()
  floats = [n for n in members[0] if n not in static]
  stacked = {n: jnp.stack([jnp.float32(hp[n]) for hp in members]) for n in floats}
  fixed = {k: v for k, v in base.items() if k in static}
  make = optax.inject_hyperparams(optim.REGISTRY[case.name], static_args=static)
  params, _ = props.small_problem()
  # Full-rank gradients: rank-1 ones make Shampoo/SOAP's eigenbases degenerate.
  grads = props.random_grads(params)

  @props.fast_jit  # One program: the stacked run and the three solo runs.
  def run(stacked):
    got = jax.vmap(lambda hps: props.run_updates(case, make(**fixed, **hps), params, grads,
                                                 jit=False)[0])(stacked)
    solo = [props.run_updates(case, optim.REGISTRY[case.name](**hps), params, grads,
                              jit=False)[0] for hps in members]
    return got, solo

  got, solo = run(stacked)
  for m, want in enumerate(solo):
    chex.assert_trees_all_close(jax.tree.map(lambda x, m=m: x[m], got), want,
                                rtol=case.inject_rtol, atol=1e-7)


@pytest.mark.parametrize("case", ALL)
def test_stored_learning_rate_is_live(case: Case) -> None:
  """Halving ``inject_hyperparams``' stored learning rate halves the first update."""
  params, grads = props.small_problem()
  hps = case.hyperparameters()
  static = case.static_args()
  injected = optax.inject_hyperparams(optim.REGISTRY[case.name], static_args=static)(**hps)
  update = props.fast_jit(case.update_fn(injected, props.small_loss))
  state = injected.init(params)
  u_full, _ = update(grads[0], state, params, 0)
  state.hyperparams["learning_rate"] = state.hyperparams["learning_rate"] / 2
  u_half, _ = update(grads[0], state, params, 0)
  # atol: schedule-free's update is a difference of parameters (float32 rounding ~1e-7).
  chex.assert_trees_all_close(u_half, jax.tree.map(lambda u: u / 2, u_full), rtol=1e-6,
                              atol=1e-7)


def test_member_values_cover_every_traced_hyperparameter() -> None:
  for case in CASES:
    assert set(props.traced_names(case)) <= set(props.MEMBER_VALUES), case


def test_inject_hyperparams_bfloat16_rounding_is_caught() -> None:
  # inject_hyperparams casts hyperparameters to the params' dtype: bf16(0.999) == 1.
  params = jnp.ones(3, jnp.bfloat16)
  with pytest.raises(ValueError, match="b2.*hyperparam_dtype"):
    optax.inject_hyperparams(alias.adam)(learning_rate=1e-3).init(params)


@pytest.mark.parametrize("case", ALL)
def test_vmap_over_independent_problems(case: Case) -> None:
  """vmap over two parameter sets equals two separate updates."""
  tx = case.make()
  params, grads = props.small_problem()
  other = jax.tree.map(lambda p: 2.0 * p - 1.0, params)
  stack = lambda a, b: jax.tree.map(lambda x, y: jnp.stack([x, y]), a, b)
  update = case.update_fn(tx, props.small_loss)

  pairs = ((params, grads[0]), (other, grads[1]))

  @props.fast_jit  # One program: the vmapped update and the two separate ones.
  def run(g, both):
    state = jax.vmap(tx.init)(both)
    got = jax.vmap(update, in_axes=(0, 0, 0, None))(g, state, both, 0)[0]
    return got, [update(g, tx.init(p), p, 0)[0] for p, g in pairs]

  got, solo = run(stack(grads[0], grads[1]), stack(params, other))
  for i, want in enumerate(solo):
    chex.assert_trees_all_close(jax.tree.map(lambda x, i=i: x[i], got), want, rtol=1e-6,
                                atol=1e-9)


@pytest.mark.parametrize("case", props.cases_for("bfloat16_inject"))
def test_float32_hyperparameters_keep_bfloat16_updates(case: Case) -> None:
  """bfloat16 params need float32 hyperparameters (bf16(0.999) == 1); updates stay bf16."""
  params, _ = props.small_problem()
  injected = optax.inject_hyperparams(optim.REGISTRY[case.name], static_args=case.static_args(),
                                      hyperparam_dtype=jnp.float32)(**case.hyperparameters())
  p16 = jax.tree.map(lambda x: x.astype(jnp.bfloat16), params)
  u, _ = case.update_fn(injected, props.small_loss)(p16, injected.init(p16), p16, 0)
  chex.assert_trees_all_equal_dtypes(u, p16)
  chex.assert_tree_all_finite(u)


@pytest.mark.parametrize("case", [pytest.param(c, id=str(c)) for c in props.ONE_CASE_PER_NAME
                                  if c.family == "alias"])
def test_differentiable_through_updates(case: Case) -> None:
  """Gradients through two optimizer steps match finite differences (float64)."""
  with jax.enable_x64(True):
    tx = case.make()
    params, _ = props.small_problem(jnp.float64)

    def loss_after_two_steps(p):
      state = tx.init(p)
      for _ in range(2):
        updates, state = tx.update(jax.grad(props.parabola)(p), state, p)
        p = optax.apply_updates(p, updates)
      return props.parabola(p)

    # Jitted: check_grads' eager evaluations would compile every primitive on its own.
    jax.test_util.check_grads(jax.jit(loss_after_two_steps), (params,), order=1,
                              modes=["rev"], eps=1e-6, rtol=1e-4)


@pytest.mark.parametrize("case", props.cases_for("masked"))
def test_composes_with_clipping_masks_and_none_leaves(case: Case) -> None:
  """chain(clip, masked(opt)) = opt on the clipped, unmasked leaves; masked-out and None
  leaves pass through untouched."""
  params, _ = props.small_problem()
  grads = props.random_grads(params)  # Full rank (see the dtype test).
  clip = optax.clip_by_global_norm(1.0)
  with_none = lambda t: {**t, "frozen": None}
  run = lambda tx, params, grads: props.run_updates(case, tx, params, grads, jit=False)[0]

  @props.fast_jit  # One program for the four runs.
  def runs(params):
    # Clipped in the same program as chain(clip, ...): eager clipping differs by an ulp,
    # which Shampoo's matrix roots amplify to ~1e-5 relative.
    clipped = [clip.update(g, clip.init(params))[0] for g in grads]
    masked = optax.chain(clip, optax.masked(case.make(), {"w": True, "b": False}))
    return (clipped, run(masked, params, grads),
            run(case.make(), {"w": params["w"]}, [{"w": c["w"]} for c in clipped]),
            run(case.make(), with_none(params), [with_none(g) for g in grads]),
            run(case.make(), params, grads))

  clipped, got, want, got_none, want_none = runs(params)
  for t in range(len(grads)):
    chex.assert_trees_all_close(got[t]["w"], want[t]["w"], rtol=1e-5, atol=1e-7)
    chex.assert_trees_all_close(got[t]["b"], clipped[t]["b"])  # Masked out: untouched.
  assert got_none[-1]["frozen"] is None
  chex.assert_trees_all_close({k: got_none[-1][k] for k in params}, want_none[-1])


@pytest.mark.parametrize("case", [pytest.param(c, id=str(c)) for c in CASES
                                  if not callable(c.kwargs["learning_rate"])])
def test_constant_schedule_equals_float(case: Case) -> None:
  params, grads = props.small_problem()
  lr = case.kwargs["learning_rate"]
  got, _ = props.run_updates(case, case.make(learning_rate=optax.constant_schedule(lr)),
                             params, grads)
  want, _ = props.run_updates(case, case.make(), params, grads)
  chex.assert_trees_all_close(got, want, rtol=1e-6)


ORBAX_OK = [c for c in CASES if ("orbax", c.name) not in props.KNOWN_ISSUES]


@pytest.mark.parametrize("cases", [pytest.param(ORBAX_OK, id="all")] + [
    pytest.param([c], id=str(c), marks=pytest.mark.xfail(
        strict=True, reason=props.KNOWN_ISSUES[("orbax", c.name)]))
    for c in CASES if ("orbax", c.name) in props.KNOWN_ISSUES])
def test_states_checkpoint_with_orbax(cases, tmp_path) -> None:
  params, grads = props.small_problem()
  states = {}
  for i, case in enumerate(cases):
    _, states[f"{i}_{case.name}"] = props.run_updates(case, case.make(), params, grads[:1])
  ckpt = ocp.StandardCheckpointer()
  ckpt.save(tmp_path / "opt_states", states)
  ckpt.wait_until_finished()
  restored = ckpt.restore(tmp_path / "opt_states",
                          jax.tree.map(ocp.utils.to_shape_dtype_struct, states))
  chex.assert_trees_all_equal_structs(restored, states)
  chex.assert_trees_all_equal(restored, states)


# ----------------------------------------------------------------------------
# Bad input: a one-line ValueError naming the argument, at construction.
# ----------------------------------------------------------------------------

# Optimizers whose learning rate has a default (learning-rate-free methods: a multiplier).
LR_DEFAULT = {"prodigy", "dadapt_adam"}


@pytest.mark.parametrize("name", sorted({c.name for c in CASES}))
def test_learning_rate_is_required_and_positive(name: str) -> None:
  for bad in (None, 0.0, -1e-3, float("nan"), float("inf")):
    with pytest.raises(ValueError, match="learning_rate") as info:
      optim.REGISTRY[name](learning_rate=bad)
    assert "\n" not in str(info.value)
  if name not in LR_DEFAULT:
    with pytest.raises(TypeError):
      optim.REGISTRY[name]()  # pylint: disable=no-value-for-parameter


BAD = [
    # alias
    ("momentum", dict(momentum=1.0), "momentum"),
    ("nesterov", dict(momentum=-0.1), "momentum"),
    ("adagrad", dict(initial_accumulator_value=-1.0), "initial_accumulator_value"),
    ("adagrad", dict(eps=-1e-3), "eps"),
    ("adadelta", dict(rho=1.5), "rho"),
    ("rmsprop", dict(decay=1.0), "decay"),
    ("rmsprop", dict(momentum=2.0), "momentum"),
    ("rmsprop", dict(eps_root=-1.0), "eps_root"),
    ("adam", dict(b1=1.0), "b1"),
    ("adam", dict(b2=-0.5), "b2"),
    ("adam", dict(eps=-1e-8), "eps"),
    ("adamax", dict(b2=1.0), "b2"),
    ("nadam", dict(momentum_decay=-1.0), "momentum_decay"),
    ("amsgrad", dict(b1=2.0), "b1"),
    ("adafactor", dict(decay_rate=0.0), "decay_rate"),
    ("adafactor", dict(clipping_threshold=0.0), "clipping_threshold"),
    ("adafactor", dict(beta1=1.0), "beta1"),
    ("adafactor", dict(eps2=-1.0), "eps2"),
    # part A
    ("adamw", dict(b1=1.0), "b1"),
    ("adamw", dict(b2=-0.1), "b2"),
    ("adamw", dict(eps=-1e-8), "eps"),
    ("adamw", dict(weight_decay=float("nan")), "weight_decay"),
    ("radam", dict(b2=1.5), "b2"),
    ("radam", dict(weight_decay=-1.0), "weight_decay"),
    ("lion", dict(b1=1.0), "b1"),
    ("lion", dict(b2=-0.5), "b2"),
    ("lion", dict(weight_decay=float("inf")), "weight_decay"),
    ("lamb", dict(b1=2.0), "b1"),
    ("lamb", dict(max_weight_norm=0.0), "max_weight_norm"),
    ("lamb", dict(weight_decay=-0.1), "weight_decay"),
    ("lars", dict(momentum=1.0), "momentum"),
    ("lars", dict(trust_coefficient=-1.0), "trust_coefficient"),
    ("lars", dict(dampening=1.5), "dampening"),
    ("adopt", dict(b2=1.0), "b2"),
    ("adopt", dict(clip_exponent=-0.25), "clip_exponent"),
    ("ademamix", dict(b3=1.0), "b3"),
    ("ademamix", dict(alpha=-1.0), "alpha"),
    ("ademamix", dict(warmup_steps=0), "warmup_steps"),
    ("schedule_free_sgd", dict(b1=0.0), "b1"),
    ("schedule_free_sgd", dict(warmup_steps=-1), "warmup_steps"),
    ("schedule_free_adamw", dict(b2=1.0), "b2"),
    ("schedule_free_adamw", dict(weight_lr_power=-1.0), "weight_lr_power"),
    ("schedule_free_adamw", dict(r=float("nan")), "r"),
    ("lookahead", dict(sync_period=0), "sync_period"),
    ("lookahead", dict(alpha=0.0), "alpha"),
    ("lookahead", dict(alpha=1.5), "alpha"),
    ("sam", dict(rho=-0.1), "rho"),
    ("sam", dict(base="sam"), "base"),
    # part B
    ("muon", dict(momentum=1.0), "momentum"),
    ("muon", dict(ns_steps=-1), "ns_steps"),
    ("muon", dict(eps=0.0), "eps"),
    ("muon", dict(weight_decay=-0.1), "weight_decay"),
    ("muon", dict(ns_coefficients=(1.0, 2.0)), "ns_coefficients"),
    ("muon", dict(adjust_lr_fn="spectral"), "adjust_lr_fn"),
    ("muon", dict(mask="all"), "mask"),
    ("muon", dict(mask="matrices", adam_b2=1.0), "adam_b2"),
    ("muon", dict(mask="matrices", adam_learning_rate=0.0), "learning_rate"),
    ("prodigy", dict(b1=1.0), "b1"),
    ("prodigy", dict(b2=-0.1), "b2"),
    ("prodigy", dict(b3=1.5), "b3"),
    ("prodigy", dict(eps=0.0), "eps"),
    ("prodigy", dict(d0=0.0), "d0"),
    ("prodigy", dict(d_coef=-1.0), "d_coef"),
    ("prodigy", dict(growth_rate=0.5), "growth_rate"),
    ("prodigy", dict(weight_decay=-1.0), "weight_decay"),
    ("dadapt_adam", dict(b1=float("nan")), "b1"),
    ("dadapt_adam", dict(b2=1.0), "b2"),
    ("dadapt_adam", dict(d0=-1e-6), "d0"),
    ("dadapt_adam", dict(growth_rate=0.9), "growth_rate"),
    ("dadapt_adam", dict(eps=-1.0), "eps"),
    ("shampoo", dict(b1=1.0), "b1"),
    ("shampoo", dict(b2=1.0), "b2"),
    ("shampoo", dict(block_size=0), "block_size"),
    ("shampoo", dict(block_size=2.5), "block_size"),
    ("shampoo", dict(graft_type="adam"), "graft_type"),
    ("shampoo", dict(preconditioning_compute_steps=0), "preconditioning_compute_steps"),
    ("shampoo", dict(statistics_compute_steps=0), "statistics_compute_steps"),
    ("shampoo", dict(start_preconditioning_step=-1), "start_preconditioning_step"),
    ("shampoo", dict(matrix_eps=0.0), "matrix_eps"),
    ("shampoo", dict(diagonal_eps=-1.0), "diagonal_eps"),
    ("shampoo", dict(weight_decay=float("nan")), "weight_decay"),
    ("sophia", dict(b1=1.0), "b1"),
    ("sophia", dict(b2=2.0), "b2"),
    ("sophia", dict(gamma=0.0), "gamma"),
    ("sophia", dict(eps=-1.0), "eps"),
    ("sophia", dict(update_period=0), "update_period"),
    ("sophia", dict(estimator="fisher"), "estimator"),
    ("sophia", dict(probe_distribution="uniform"), "probe_distribution"),
    ("sophia", dict(estimator="gnb"), "batch_size"),
    ("sophia", dict(weight_decay=-1.0), "weight_decay"),
    ("soap", dict(b1=1.0), "b1"),
    ("soap", dict(b2=-0.5), "b2"),
    ("soap", dict(shampoo_beta=1.0), "shampoo_beta"),
    ("soap", dict(eps=-1.0), "eps"),
    ("soap", dict(weight_decay=-0.01), "weight_decay"),
    ("soap", dict(precondition_frequency=0), "precondition_frequency"),
    ("soap", dict(max_precondition_dim=0), "max_precondition_dim"),
]


def test_bad_table_names_every_optimizer() -> None:
  assert {n for n, _, _ in BAD} == {c.name for c in CASES} - {"sgd"}  # sgd: only the lr.


@pytest.mark.parametrize("name,kwargs,arg", BAD,
                         ids=[f"{n}-{a}-{i}" for i, (n, _, a) in enumerate(BAD)])
def test_bad_hyperparameters_raise_one_line(name: str, kwargs: dict, arg: str) -> None:
  with pytest.raises(ValueError, match=arg) as info:
    optim.REGISTRY[name](learning_rate=1e-3, **kwargs)
  assert "\n" not in str(info.value)
