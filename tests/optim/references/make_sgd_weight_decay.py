"""Records PyTorch SGD(momentum, weight_decay) on a softmax regression, for test_penalties.

Run once with a Python that has torch (the test suite does not need it):

  python tests/optim/references/make_sgd_weight_decay.py

It writes ``sgd_weight_decay.npz`` beside itself: the data, the initial weights, the
hyperparameters and the float64 parameter trajectory of ``torch.optim.SGD(lr, momentum,
weight_decay)`` minimising the mean softmax cross-entropy of ``x @ W + b``. Weights are
stored in flax's layout (kernel ``(in, out)``), torch's ``Linear.weight`` is its transpose.
"""

import os

import numpy as np
import torch

LEARNING_RATE, MOMENTUM, WEIGHT_DECAY, STEPS = 0.5, 0.9, 0.05, 25
N, D, K = 16, 4, 3


def main():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(N, D))
  y = rng.integers(0, K, size=N)
  kernel0 = rng.normal(size=(D, K))
  bias0 = rng.normal(size=K)

  torch.set_default_dtype(torch.float64)
  model = torch.nn.Linear(D, K)
  with torch.no_grad():
    model.weight.copy_(torch.from_numpy(kernel0.T))
    model.bias.copy_(torch.from_numpy(bias0))
  opt = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE, momentum=MOMENTUM,
                        weight_decay=WEIGHT_DECAY)
  xt, yt = torch.from_numpy(x), torch.from_numpy(y)
  kernels, biases = [], []
  for _ in range(STEPS):
    opt.zero_grad()
    torch.nn.functional.cross_entropy(model(xt), yt).backward()
    opt.step()
    kernels.append(model.weight.detach().numpy().T.copy())
    biases.append(model.bias.detach().numpy().copy())

  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sgd_weight_decay.npz")
  np.savez(path, x=x, y=y, kernel0=kernel0, bias0=bias0, kernels=np.array(kernels),
           biases=np.array(biases), learning_rate=LEARNING_RATE, momentum=MOMENTUM,
           weight_decay=WEIGHT_DECAY, torch_version=torch.__version__)
  print(f"wrote {path} (torch {torch.__version__})")


if __name__ == "__main__":
  main()
