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
# # Composing flaxopt optimizers with optax
#
# Every optimizer in `flaxopt.optim` is an `optax.GradientTransformation`, so it chains with
# optax's own transforms (clipping, schedules, weight decay) and plugs into any optax training
# loop. This notebook (executed when the docs are built) checks that flaxopt's Adam takes the
# same steps as `optax.adam`, then trains a small logistic regression on scikit-learn's digits
# with a chain of optax and flaxopt transforms.

# %%
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax
from sklearn.datasets import load_digits

from flaxopt import optim, registry

# %% [markdown]
# ## The same update rule as optax
#
# Adam (Kingma & Ba, 2015) written from its update rule in `flaxopt.optim.scale_by_adam`:
#
# $$m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t,\quad v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2,\quad
# x_{t+1} = x_t - \eta\,\frac{m_t/(1-\beta_1^t)}{\sqrt{v_t/(1-\beta_2^t)} + \epsilon},$$
#
# checked against optax's implementation, for 50 steps on a random quadratic.

# %%
key_a, key_b = jax.random.split(jax.random.key(0))
a = jax.random.normal(key_a, (8, 8))
hessian = a @ a.T / 8 + jnp.eye(8)
target = jax.random.normal(key_b, (8,))


def quadratic(w):
  return 0.5 * (w - target) @ hessian @ (w - target)


grad_fn = jax.jit(jax.grad(quadratic))


def run(tx, steps=50):
  w = jnp.zeros(8)
  state = tx.init(w)
  path = []
  for _ in range(steps):
    updates, state = tx.update(grad_fn(w), state, w)
    w = optax.apply_updates(w, updates)
    path.append(float(quadratic(w)))
  return np.array(path)


ours, theirs = run(optim.adam(1e-1)), run(optax.adam(1e-1))
print("largest relative difference in loss over 50 steps:",
      float(np.max(np.abs(ours - theirs) / np.abs(theirs))))
assert np.allclose(ours, theirs, rtol=1e-4)

# %% [markdown]
# ## A chain: clipping, an L2 penalty, NAdam, a cosine schedule
#
# `optim.add_l2` adds `λ·w` to the gradient (coupled L2, as PyTorch's `weight_decay` in SGD
# and Adam); the learning rate may be any optax schedule. The registry builds the same
# optimizers from names, as configs do.

# %%
digits = load_digits()
x = jnp.asarray(digits.data / 16.0, jnp.float32)
y = jnp.asarray(digits.target)
x_train, y_train, x_test, y_test = x[:1500], y[:1500], x[1500:], y[1500:]


def loss_fn(params, xb, yb):
  logits = xb @ params["w"] + params["b"]
  return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()


def accuracy(params):
  return float(jnp.mean(jnp.argmax(x_test @ params["w"] + params["b"], -1) == y_test))


def train(tx, steps=300):
  params = {"w": jnp.zeros((64, 10)), "b": jnp.zeros(10)}
  state = tx.init(params)

  @jax.jit
  def step(params, state, xb, yb):
    loss, grads = jax.value_and_grad(loss_fn)(params, xb, yb)
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state, loss

  rng = np.random.default_rng(0)  # the same batches for every optimizer
  losses = []
  for _ in range(steps):
    idx = rng.choice(1500, 100, replace=False)
    params, state, loss = step(params, state, x_train[idx], y_train[idx])
    losses.append(float(loss))
  return np.array(losses), accuracy(params)


schedule = optax.cosine_decay_schedule(3e-2, decay_steps=300)
optimizers = {
    "sgd (registry)": registry.get("optimizer", "sgd", learning_rate=0.3),
    "adam (flaxopt)": optim.adam(1e-2),
    "clip + L2 + nadam + cosine": optax.chain(
        optax.clip_by_global_norm(1.0), optim.add_l2(1e-4), optim.nadam(schedule)),
}
results = {name: train(tx) for name, tx in optimizers.items()}
for name, (losses, acc) in results.items():
  print(f"{name:28s} final train loss {losses[-20:].mean():.3f}  test accuracy {acc:.3f}")

# %%
fig, ax = plt.subplots(figsize=(6, 3.5))
for name, (losses, _) in results.items():
  ax.plot(np.convolve(losses, np.ones(10) / 10, mode="valid"), label=name)
ax.set_xlabel("step")
ax.set_ylabel("train loss (10-step mean)")
ax.set_yscale("log")
ax.legend()
ax.set_title("Logistic regression on digits, batch 100")
fig.tight_layout()
plt.show()
