"""flaxopt: classic techniques for training deep networks, in JAX, Flax and Optax."""

__version__ = "0.1.0"
