"""The registry: one table per family, names only, clear errors."""

import pytest

from flaxopt import registry


@pytest.mark.parametrize("family", registry.FAMILIES)
def test_every_family_has_entries(family):
  names = registry.names(family)
  assert names, f"registry family {family!r} is empty"
  assert names == sorted(set(names))


@pytest.mark.parametrize("family", registry.FAMILIES)
def test_unknown_name_lists_valid_names(family):
  with pytest.raises(ValueError) as err:
    registry.get(family, "no_such_technique")
  message = str(err.value)
  assert family in message and "no_such_technique" in message
  for name in registry.names(family):
    assert name in message


def test_close_name_gets_a_suggestion():
  with pytest.raises(ValueError, match="Did you mean 'relu'"):
    registry.check("activation", "rleu")


def test_unknown_family():
  with pytest.raises(ValueError, match="Unknown registry family 'activations'"):
    registry.names("activations")


@pytest.mark.parametrize("name", ["relu", "gelu", "selu"])
def test_activation_entries_are_callables(name):
  import jax.numpy as jnp
  fn = registry.get("activation", name)
  assert fn(jnp.ones((3,))).shape == (3,)


# One contract per family: every entry of penalty, dropout and augment builds the object
# its family promises and nothing else.
def _penalty_contract(tx):
  import jax.numpy as jnp
  import optax
  assert isinstance(tx, optax.GradientTransformation)
  params = {"w": jnp.array([1.0, -2.0])}
  updates, _ = tx.update({"w": jnp.zeros(2)}, tx.init(params), params)
  assert updates["w"].shape == (2,)


def _dropout_contract(fn):
  import jax
  import jax.numpy as jnp
  x = jnp.ones((2, 3))
  assert fn(x, jax.random.PRNGKey(0)).shape == (2, 3)
  assert fn(x, None, deterministic=True) is x


def _augment_contract(fn):
  import jax
  import jax.numpy as jnp
  x, y = jnp.ones((2, 8, 8, 1)), jax.nn.one_hot(jnp.array([0, 1]), 2)
  out_x, out_y = jax.eval_shape(fn, jax.random.PRNGKey(0), x, y)
  assert (out_x.shape, out_y.shape) == (x.shape, y.shape)


_CONTRACTS = {
    "penalty": (_penalty_contract, {"weight": 0.1}),
    "dropout": (_dropout_contract, {"rate": 0.5}),
    "augment": (_augment_contract, {}),
}


@pytest.mark.parametrize("family,name", [(f, n) for f in _CONTRACTS for n in registry.names(f)])
def test_each_entry_keeps_its_family_contract(family, name):
  contract, kwargs = _CONTRACTS[family]
  contract(registry.get(family, name, **kwargs))


@pytest.mark.parametrize("family,name", [
    ("augment", "l2"), ("augment", "dropout"), ("penalty", "dropout"), ("penalty", "mixup"),
    ("dropout", "l2"), ("dropout", "cutout"),
])
def test_a_name_of_another_family_is_rejected(family, name):
  with pytest.raises(ValueError, match=f"Unknown {family} '{name}'.*Valid {family} names"):
    registry.check(family, name)


def test_close_match_within_the_family():
  with pytest.raises(ValueError, match="Did you mean 'mixup'"):
    registry.check("augment", "mixpu")


def test_the_split_regularizer_family_points_to_its_successors():
  with pytest.raises(ValueError, match="'regularizer' was split into penalty, dropout, augment"):
    registry.names("regularizer")
