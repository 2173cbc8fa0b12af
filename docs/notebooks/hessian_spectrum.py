# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # The Hessian spectrum with and without BatchNorm
#
# Ghorbani, Krishnan & Xiao (2019), "An investigation into neural net optimization via
# Hessian eigenvalue density", report that without BatchNorm the Hessian of a trained network
# has a few large outlier eigenvalues far beyond the bulk, and that BatchNorm removes them.
# This notebook (executed when the docs are built, at a small size) trains the same small MLP
# on scikit-learn's digits with and without BatchNorm, then estimates each Hessian's top
# eigenvalues (Lanczos, `flaxopt.curvature.top_eigenvalues`) and its eigenvalue density
# (stochastic Lanczos quadrature, `flaxopt.curvature.spectral_density`), and prints the ratio
# of the top eigenvalue to the edge of the bulk. It shows the tools; it does not settle the
# claim: the two models also reach different training losses, and the reproduction with its
# declared margin and seeds is `experiments/curvature_repro.py` (see the curvature guide for
# where it holds and where it does not).

# %%
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax
from sklearn.datasets import load_digits

from flaxopt import curvature
from flaxopt.nn import models
from flaxopt.training.steps import cross_entropy

digits = load_digits()
x = (digits.data / 16.0).astype(np.float32)
y = digits.target.astype(np.int32)
batches = [{"x": x[i:i + 600], "y": y[i:i + 600]} for i in range(0, 1800, 600)]

# %% [markdown]
# ## Train two MLPs that differ only in the normalizer
#
# Two hidden layers of 32 units, ReLU, Adam 3e-3, 400 full-batch-chunk steps. BatchNorm runs
# in training mode throughout, also for the Hessian (the batch statistics are part of the
# function whose curvature we measure, as in the paper).

# %%
def train(norm: str, steps: int = 400):
  model = models.build_model({"name": "mlp", "width": 32, "depth": 2, "norm": norm}, 10)
  variables = model.init(jax.random.key(0), x[:8], train=False)
  stats = variables.get("batch_stats", {})

  def loss_fn(params, batch):
    logits, _ = model.apply({"params": params, "batch_stats": stats}, batch["x"], train=True,
                            mutable=["batch_stats"])
    return jnp.mean(cross_entropy(logits, jax.nn.one_hot(batch["y"], 10)))

  tx = optax.adam(3e-3)
  params, opt_state = variables["params"], tx.init(variables["params"])

  @jax.jit
  def step(params, opt_state, batch):
    loss, grads = jax.value_and_grad(loss_fn)(params, batch)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  for t in range(steps):
    params, opt_state, loss = step(params, opt_state, batches[t % len(batches)])
  return params, loss_fn, float(loss)


runs = {norm: train(norm) for norm in ("none", "batch")}
for norm, (params, _, loss) in runs.items():
  n = sum(a.size for a in jax.tree.leaves(params))
  print(f"norm={norm}: {n} parameters, final training loss {loss:.4f}")

# %% [markdown]
# ## Top eigenvalues and the density of the spectrum
#
# `hessian_matvec` averages Hessian-vector products over the three chunks of the data;
# Lanczos with full reorthogonalization gives the top eigenvalues, and stochastic Lanczos
# quadrature (4 probes of 60 steps) the density, which integrates to 1.

# %%
results = {}
for norm, (params, loss_fn, _) in runs.items():
  matvec = curvature.hessian_matvec(loss_fn, params, batches)
  top, _ = curvature.top_eigenvalues(matvec, params, k=3, key=jax.random.key(1), num_iters=60)
  top = np.asarray(top)
  grid = jnp.linspace(-0.2 * top[0], 1.1 * top[0], 400)
  density, nodes, weights = curvature.spectral_density(matvec, params, jax.random.key(2),
                                                       num_probes=4, num_steps=60, grid=grid)
  edge = curvature.bulk_edge(nodes, weights)
  results[norm] = (top, grid, density, edge)
  print(f"norm={norm}: top eigenvalues {np.round(top, 3)}, bulk edge (99% of the mass) "
        f"{edge:.3f}, top / edge {top[0] / edge:.1f}")

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
for ax, (norm, (top, grid, density, edge)) in zip(axes, results.items()):
  ax.semilogy(grid, np.maximum(np.asarray(density), 1e-8))
  ax.axvline(edge, color="gray", linestyle="--", label="bulk edge")
  for lam in top:
    ax.axvline(lam, color="C3", alpha=0.6)
  ax.set_title(f"norm={norm}: top eigenvalue {top[0]:.2f}")
  ax.set_xlabel("eigenvalue")
  ax.legend()
axes[0].set_ylabel("density")
fig.tight_layout()
