"""Dropout and DropConnect as Flax linen modules (rng stream ``'dropout'``).

The math lives in ``flaxopt.functional.regularization``; these modules own the
kernel/bias parameters and draw keys from the ``'dropout'`` rng stream.
Both use the inverted convention (scale by ``1/keep`` at training time).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from flaxopt.functional import regularization as R

__all__ = ["Dropout", "DropConnectDense"]

Array = jax.Array
Initializer = Callable[..., Array]

_INFERENCE_RULES = ("mean", "gaussian")


class Dropout(nn.Module):
  """Inverted dropout (Srivastava et al., 2014); see ``F.dropout``.

  ``y = m * x / (1 - rate)``, ``m ~ Bernoulli(1 - rate)``; identity when
  ``deterministic``. Keys come from the rng stream
  ``rng_collection`` (default ``'dropout'``).

  Attributes:
    rate: drop probability in [0, 1).
    deterministic: default for the call argument (flax convention).
    rng_collection: rng stream name.
  """
  rate: float
  deterministic: Optional[bool] = None
  rng_collection: str = "dropout"

  @nn.compact
  def __call__(self, x: Array, deterministic: Optional[bool] = None) -> Array:
    deterministic = nn.merge_param("deterministic", self.deterministic, deterministic)
    R._check_rate(self.rate)  # pylint: disable=protected-access
    if deterministic or R._is_zero(self.rate):  # pylint: disable=protected-access
      return x
    return R.dropout(x, self.rate, self.make_rng(self.rng_collection))


class DropConnectDense(nn.Module):
  """Dense layer with DropConnect on its kernel (Wan et al., 2013).

  Training (``deterministic=False``): ``r = a(x @ (M * W / p) + b)`` with
  ``M ~ Bernoulli(p)``, ``p = 1 - rate`` (inverted mask; the bias is not
  dropped). Mask granularity:

  * ``per_example=False``: one ``(in, out)`` mask for the whole batch; cost one
    matmul, ``in * out`` extra memory. All examples share the dropped weights.
  * ``per_example=True``: an independent mask per example, as in the paper;
    cost ``B * in * out`` memory for the masks and a batched matmul.

  Inference (``deterministic=True``), ``inference=``:

  * ``'mean'``: ``r = a(x @ W + b)``. With the inverted mask this is the
    paper's mean rule ``p W v`` (the ``p`` was moved to training time).
  * ``'gaussian'``: the paper's moment matching (Alg. 2). Pre-activations are
    approximately ``u ~ N(x @ W, (1 - p) / p * (x*x) @ (W*W))`` (the paper's
    ``N(p W v, p (1-p) (W*W)(v*v))`` divided by ``p``). Draw ``num_samples``
    samples from the ``'dropout'`` rng stream, add the bias, apply the
    ``activation`` field and average: ``r = mean_s a(u_s + b)``. Since the
    nonlinearity must act before averaging, the activation belongs to this
    layer (``activation`` field); with ``activation=None`` the average is a
    Monte-Carlo estimate of the mean rule (only useful for testing). To get
    the raw samples use ``F.dropconnect_gaussian_samples``.

  The ``activation`` field, if set, is applied in every mode, so swap
  ``Dense -> act`` for ``DropConnectDense(..., activation=act)``.

  Attributes:
    features: output size.
    rate: drop probability of each weight, in [0, 1).
    per_example: one mask per example (True) or one per batch (False).
    inference: 'mean' or 'gaussian'.
    num_samples: Gaussian samples at inference (``'gaussian'`` only).
    activation: optional elementwise nonlinearity applied inside the layer.
    use_bias: add a bias.
    kernel_init, bias_init: initializers (flax Dense defaults: lecun_normal,
      zeros; PyTorch's nn.Linear uses U(+-1/sqrt(fan_in)) for both).
    dtype: computation dtype (None: promote inputs and params, as flax Dense).
    param_dtype: parameter dtype.
    deterministic: default for the call argument.
  """
  features: int
  rate: float = 0.5
  per_example: bool = False
  inference: str = "mean"
  num_samples: int = 1000
  activation: Optional[Callable[[Array], Array]] = None
  use_bias: bool = True
  kernel_init: Initializer = nn.initializers.lecun_normal()
  bias_init: Initializer = nn.initializers.zeros_init()
  dtype: Optional[Any] = None
  param_dtype: Any = jnp.float32
  deterministic: Optional[bool] = None
  rng_collection: str = "dropout"

  @nn.compact
  def __call__(self, x: Array, deterministic: Optional[bool] = None) -> Array:
    deterministic = nn.merge_param("deterministic", self.deterministic, deterministic)
    R._check_rate(self.rate)  # pylint: disable=protected-access
    if self.inference not in _INFERENCE_RULES:
      raise ValueError(f"inference must be one of {_INFERENCE_RULES}, got {self.inference!r}.")
    kernel = self.param("kernel", self.kernel_init, (x.shape[-1], self.features),
                        self.param_dtype)
    bias = (self.param("bias", self.bias_init, (self.features,), self.param_dtype)
            if self.use_bias else None)
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    act = self.activation if self.activation is not None else (lambda u: u)
    add_bias = (lambda u: u + bias) if bias is not None else (lambda u: u)
    zero_rate = R._is_zero(self.rate)  # pylint: disable=protected-access

    if deterministic or zero_rate:
      if self.inference == "mean" or zero_rate:
        return act(add_bias(x @ kernel))
      samples = R.dropconnect_gaussian_samples(
          x, kernel, self.rate, self.make_rng(self.rng_collection), self.num_samples)
      return jnp.mean(act(add_bias(samples)), axis=0)

    key = self.make_rng(self.rng_collection)
    if not self.per_example:
      return act(add_bias(x @ R.dropconnect(kernel, self.rate, key)))
    batch_shape = x.shape[:-1]
    flat = x.reshape((-1, x.shape[-1]))
    masks_shape = (flat.shape[0],) + kernel.shape
    keep = 1.0 - self.rate
    masks = jax.random.bernoulli(key, keep, masks_shape)
    weights = jnp.where(masks, kernel / jnp.asarray(keep, kernel.dtype),
                        jnp.zeros((), kernel.dtype))
    out = jnp.einsum("bi,bio->bo", flat, weights)
    return act(add_bias(out.reshape(batch_shape + (self.features,))))
