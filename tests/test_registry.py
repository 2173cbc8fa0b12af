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
