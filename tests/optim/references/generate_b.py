"""Records float64 reference trajectories of Muon, Shampoo, SOAP, Sophia, Prodigy, D-Adapt Adam.

Runs under a separate environment with PyTorch and the reference packages (never a
flaxopt dependency)::

    /work/venv-ref/bin/python tests/optim/references/generate_b.py [--only NAME]

Writes ``tests/optim/references/b_<name>.npz``: for each case ``<case>/<leaf>`` holds the
parameter trajectory (steps + 1, *shape) in flaxopt's layout, and ``meta`` a JSON string
(reference package and version, hyperparameters, problem). ``tests/optim/test_modern_b.py``
replays the same cases with flaxopt and compares; when torch is importable it also calls
``run_case`` live.

The problem: a two-layer linear model ``f(x) = x W1 W2 + b`` on fixed data, loss
``0.5 * mean_n ||f(x_n) - y_n||^2``; matrix (3x6, 6x2) and bias (2,) parameters, exact
gradients by autograd in float64, no randomness after the data. The cases list below
is plain data (importable without torch).
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import os
import sys
import textwrap

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
STEPS = 30
SHAPES = {"w1": (3, 6), "w2": (6, 2), "b": (2,)}


ONE_LAYER_SHAPES = {"w": (3, 4), "b": (4,)}
# SOAP's eigenbases are unique (up to sign) only where the statistics have at most a
# one-dimensional null space; the two-layer gradients have rank 2, so SOAP uses a one-layer
# problem, tanh(x W) + b (W's gradient has rank 3: null spaces of dimension 0 and 1).
PROBLEM_OF = {"soap": "one_layer"}


def problem(kind: str = "two_layer"):
  """Fixed data and initial parameters (float64 NumPy), flaxopt layout."""
  shapes = SHAPES if kind == "two_layer" else ONE_LAYER_SHAPES
  rng = np.random.RandomState(20261202)
  first = next(iter(shapes.values()))
  x = rng.randn(16, first[0])
  y = rng.randn(16, shapes["b"][0])
  params = {k: (0.5 if len(v) == 2 else 0.1) * rng.randn(*v) for k, v in shapes.items()}
  return x, y, params


def loss_np_like(xp, params, x, y):
  """The loss written against an array namespace (numpy, jax.numpy or torch)."""
  if "w" in params:
    r = xp.tanh(x @ params["w"]) + params["b"] - y
  else:
    r = x @ params["w1"] @ params["w2"] + params["b"] - y
  return 0.5 * (r * r).sum() / x.shape[0]


def one_layer_grad_np(params, x, y):
  """The gradient of the one-layer loss, by hand (NumPy float64)."""
  a = np.tanh(x @ params["w"])
  r = a + params["b"] - y
  return {"w": x.T @ (r * (1 - a * a)) / x.shape[0], "b": r.sum(0) / x.shape[0]}


def cosine(t: int, total: int = STEPS) -> float:
  """The cosine schedule both sides use: 0.5 (1 + cos(pi t / total))."""
  return 0.5 * (1.0 + math.cos(math.pi * min(t, total) / total))


# name -> list of (case id, flaxopt kwargs, reference kwargs). "schedule": "cosine" in the
# flaxopt kwargs means learning_rate * cosine(t) on both sides (LambdaLR in torch).
CASES = {
    "prodigy": [
        ("default", dict(learning_rate=1.0, d0=1e-3), dict(lr=1.0, d0=1e-3)),
        ("wd_bc_cosine", dict(learning_rate=1.0, d0=1e-3, weight_decay=0.1,
                              use_bias_correction=True, schedule="cosine", b3=0.98,
                              growth_rate=1.5),
         dict(lr=1.0, d0=1e-3, weight_decay=0.1, use_bias_correction=True, beta3=0.98,
              growth_rate=1.5)),
        ("coupled_safeguard", dict(learning_rate=0.5, d0=1e-3, weight_decay=0.05,
                                   decouple=False, safeguard_warmup=True, d_coef=2.0),
         dict(lr=0.5, d0=1e-3, weight_decay=0.05, decouple=False, safeguard_warmup=True,
              d_coef=2.0)),
    ],
    "dadapt_adam": [
        ("default", dict(learning_rate=1.0, d0=1e-3), dict(lr=1.0, d0=1e-3)),
        ("wd_bc_cosine", dict(learning_rate=1.0, d0=1e-3, weight_decay=0.1, decouple=True,
                              use_bias_correction=True, schedule="cosine", growth_rate=2.0),
         dict(lr=1.0, d0=1e-3, weight_decay=0.1, decouple=True, use_bias_correction=True,
              growth_rate=2.0)),
        ("coupled", dict(learning_rate=0.5, d0=1e-3, weight_decay=0.05, b1=0.8),
         dict(lr=0.5, d0=1e-3, weight_decay=0.05, betas=(0.8, 0.999))),
    ],
    "muon": [
        ("default", dict(learning_rate=0.02, mask="matrices", adam_learning_rate=0.01),
         dict(lr=0.02, adam_lr=0.01)),
        ("plain_wd_rms", dict(learning_rate=0.01, mask="matrices", nesterov=False,
                              weight_decay=0.05, momentum=0.9, adjust_lr_fn="match_rms_adamw",
                              adam_weight_decay=0.0, schedule="cosine"),
         dict(lr=0.01, nesterov=False, weight_decay=0.05, momentum=0.9,
              adjust_lr_fn="match_rms_adamw", adam_weight_decay=0.0)),
    ],
    # graft_type ints: pytorch_optimizer LayerWiseGrafting (0 none, 1 sgd, 2 adagrad,
    # 3 rmsprop, 4 sqrtn). Always use_svd=True, shape_interpretation=False (see precond.py).
    "shampoo": [
        ("rmsprop_graft", dict(learning_rate=0.05, b2=0.99, start_preconditioning_step=5,
                               preconditioning_compute_steps=3),
         dict(lr=0.05, betas=(0.9, 0.99), graft_type=3, start_preconditioning_step=5,
              preconditioning_compute_steps=3)),
        ("blocked_adagrad_coupled", dict(learning_rate=0.1, block_size=3, graft_type="adagrad",
                                         weight_decay=0.01, moving_average_for_momentum=True,
                                         nesterov=False, statistics_compute_steps=2,
                                         preconditioning_compute_steps=2,
                                         start_preconditioning_step=1, schedule="cosine"),
         dict(lr=0.1, block_size=3, graft_type=2, weight_decay=0.01,
              moving_average_for_momentum=True, nesterov=False, statistics_compute_steps=2,
              preconditioning_compute_steps=2, start_preconditioning_step=1)),
        ("sgd_graft_decoupled", dict(learning_rate=0.02, graft_type="sgd", b2=0.95,
                                     weight_decay=0.1, decoupled_weight_decay=True,
                                     inverse_exponent_override=2, block_size=6,
                                     start_preconditioning_step=3,
                                     preconditioning_compute_steps=1, matrix_eps=1e-3),
         dict(lr=0.02, graft_type=1, betas=(0.9, 0.95), weight_decay=0.1,
              decoupled_weight_decay=True, inverse_exponent_override=2, block_size=6,
              start_preconditioning_step=3, preconditioning_compute_steps=1, matrix_eps=1e-3)),
    ],
    # SophiaH's lr' clip(m / max(h, eps'), p) is ours with lr = lr' p, gamma = p,
    # eps = p eps', weight_decay = wd' / p. Probes injected on both sides (sophia_probe).
    "sophia": [
        ("period3", dict(learning_rate=0.5 * 0.1, gamma=0.1, eps=0.1 * 1e-12, b1=0.9, b2=0.95,
                         update_period=3),
         dict(lr=0.5, p=0.1, eps=1e-12, betas=(0.9, 0.95), update_period=3)),
        ("every_step_wd_cosine", dict(learning_rate=0.2 * 0.05, gamma=0.05, eps=0.05 * 1e-3,
                                      weight_decay=0.2 / 0.05, update_period=1,
                                      schedule="cosine"),
         dict(lr=0.2, p=0.05, eps=1e-3, weight_decay=0.2, update_period=1)),
    ],
}


CASES["soap"] = [
    # Reference kwargs use the authors' names (SOAP.__init__ of nikhilvyas/SOAP).
    ("default_wd", dict(learning_rate=0.02, precondition_frequency=3),
     dict(lr=0.02, precondition_frequency=3)),
    ("betas_shampoo_beta_cosine", dict(learning_rate=0.05, b1=0.9, b2=0.99, shampoo_beta=0.9,
                                       weight_decay=0.0, precondition_frequency=2,
                                       schedule="cosine"),
     dict(lr=0.05, betas=(0.9, 0.99), shampoo_beta=0.9, weight_decay=0.0,
          precondition_frequency=2)),
    ("normalize_nobias_maxdim", dict(learning_rate=0.01, normalize_gradient=True,
                                     correct_bias=False, max_precondition_dim=3,
                                     precondition_frequency=4),
     dict(lr=0.01, normalize_grads=True, correct_bias=False, max_precond_dim=3,
          precondition_frequency=4)),
]


def soap_numpy(params, grad_fn, steps, lr=3e-3, betas=(0.95, 0.95), shampoo_beta=-1,
               eps=1e-8, weight_decay=0.01, precondition_frequency=10, max_precond_dim=10000,
               normalize_grads=False, correct_bias=True, lr_factor=lambda t: 1.0):
  """A float64 NumPy transcription of the authors' SOAP step (nikhilvyas/SOAP, soap.py).

  Same structure as the authors' code: per-parameter state, the first step only builds
  the preconditioner, tensordot projections axis by axis, eigh (+1e-30 I, flipped) for the
  first bases, one power iteration + QR (here in float64) every precondition_frequency
  steps with exp_avg_sq permuted by the estimated eigenvalues, decoupled decay after the
  step, merge_dims=False, precondition_1d=False. ``lr_factor(k)`` is a LambdaLR factor.
  """
  beta1, beta2 = betas
  sbeta = beta2 if shampoo_beta < 0 else shampoo_beta
  state = {k: {} for k in params}
  p = {k: v.copy() for k, v in params.items()}
  traj = {k: [v.copy()] for k, v in p.items()}

  def project(g, st, back=False):
    for mat in st["Q"]:
      if len(mat) > 0:
        g = np.tensordot(g, mat, axes=[[0], [1 if back else 0]])
      else:
        g = np.transpose(g, [*range(1, g.ndim), 0])
    return g

  def update_preconditioner(g, st):
    if g.ndim > 1:
      for idx, dim in enumerate(g.shape):
        if dim <= max_precond_dim:
          axes = [*range(idx), *range(idx + 1, g.ndim)]
          outer = np.tensordot(g, g, axes=[axes, axes])
          st["GG"][idx] = st["GG"][idx] + (1 - sbeta) * (outer - st["GG"][idx])
    if st["Q"] is None:
      st["Q"] = [[] if len(m) == 0 else
                 np.flip(np.linalg.eigh(m + 1e-30 * np.eye(m.shape[0]))[1], axis=1)
                 for m in st["GG"]]
    if st["step"] > 0 and st["step"] % precondition_frequency == 0:
      exp_avg_sq = st["exp_avg_sq"]
      qs = []
      for ind, (m, o) in enumerate(zip(st["GG"], st["Q"])):
        if len(m) == 0:
          qs.append([])
          continue
        prod = m @ o
        est = (o * prod).sum(axis=0)
        order = np.argsort(-est, kind="stable")
        exp_avg_sq = np.take(exp_avg_sq, order, axis=ind)
        qs.append(np.linalg.qr(prod[:, order])[0])
      st["exp_avg_sq"] = exp_avg_sq
      st["Q"] = qs

  for k_step in range(steps):
    lr_t = lr * lr_factor(k_step)
    grads = grad_fn(p)
    for k in p:
      g, st = grads[k], state[k]
      if "step" not in st:
        st["step"] = 0
        st["exp_avg"] = np.zeros_like(g)
        st["exp_avg_sq"] = np.zeros_like(g)
        st["GG"] = ([[]] if g.ndim == 1 else
                    [np.zeros((d, d)) if d <= max_precond_dim else [] for d in g.shape])
        st["Q"] = None
        update_preconditioner(g, st)
        continue
      st["step"] += 1
      gp = project(g, st)
      st["exp_avg"] = beta1 * st["exp_avg"] + (1 - beta1) * g
      st["exp_avg_sq"] = beta2 * st["exp_avg_sq"] + (1 - beta2) * gp * gp
      denom = np.sqrt(st["exp_avg_sq"]) + eps
      norm_grad = project(project(st["exp_avg"], st) / denom, st, back=True)
      if normalize_grads:
        norm_grad = norm_grad / (1e-30 + np.mean(norm_grad ** 2) ** 0.5)
      step_size = lr_t
      if correct_bias:
        step_size = step_size * (1 - beta2 ** st["step"]) ** 0.5 / (1 - beta1 ** st["step"])
      p[k] = p[k] - step_size * norm_grad
      if weight_decay > 0:
        p[k] = p[k] + (-lr_t * weight_decay) * p[k]
      update_preconditioner(g, st)
    for k in p:
      traj[k].append(p[k].copy())
  return {k: np.stack(v) for k, v in traj.items()}


def sophia_probe(step: int) -> dict:
  """The Hutchinson probe of step ``step`` (from 1): N(0, I), fixed seed, flaxopt layout."""
  rng = np.random.RandomState(1000 + step)
  return {k: rng.randn(*v) for k, v in SHAPES.items()}


# ----------------------------------------------------------------------------
# The reference side (torch imported lazily: CASES is importable without it).
# ----------------------------------------------------------------------------


def _versions(*modules):
  import importlib.metadata as md  # pylint: disable=import-outside-toplevel
  out = {}
  for m in modules:
    try:
      out[m] = md.version(m)
    except md.PackageNotFoundError:
      out[m] = None
  return out


def _muon_without_bf16():
  """torch.optim.Muon with its Newton-Schulz bfloat16 cast replaced by a copy (.clone()).

  A copy, not nothing: the iteration divides in place, and without a copy it would divide
  the momentum buffer itself when nesterov=False (the cast is also a no-op copy-wise for
  bfloat16 tensors, so torch 2.14 has that aliasing with bfloat16 params).
  """
  import torch  # pylint: disable=import-outside-toplevel
  from torch.optim import _muon  # pylint: disable=import-outside-toplevel
  if getattr(_muon._zeropower_via_newtonschulz, "flaxopt_no_bf16", False):
    return torch.optim.Muon
  src = textwrap.dedent(inspect.getsource(_muon._zeropower_via_newtonschulz))
  if src.count(".bfloat16()") != 1:
    raise RuntimeError("torch.optim.Muon's Newton-Schulz changed; update the patch.")
  ns = dict(vars(_muon))
  exec(src.replace(".bfloat16()", ".clone()"), ns)  # pylint: disable=exec-used
  patched = ns["_zeropower_via_newtonschulz"]
  patched.flaxopt_no_bf16 = True
  _muon._zeropower_via_newtonschulz = patched
  return torch.optim.Muon


def _make_optimizers(name, ref_kwargs, tparams):
  """(list of torch optimizers, layout) for one case; layout 'T' means torch holds W^T."""
  import torch  # pylint: disable=import-outside-toplevel
  kw = dict(ref_kwargs)
  if name == "prodigy":
    import prodigyopt  # pylint: disable=import-outside-toplevel
    return [prodigyopt.Prodigy(list(tparams.values()), **kw)]
  if name == "dadapt_adam":
    import dadaptation  # pylint: disable=import-outside-toplevel
    return [dadaptation.DAdaptAdam(list(tparams.values()), **kw)]
  if name == "muon":
    muon_cls = _muon_without_bf16()
    adam_lr = kw.pop("adam_lr", kw["lr"])
    adam_wd = kw.pop("adam_weight_decay", 0.01)
    mats = [tparams["w1"], tparams["w2"]]
    return [muon_cls(mats, **kw),
            torch.optim.AdamW([tparams["b"]], lr=adam_lr, weight_decay=adam_wd)]
  if name == "shampoo":
    from pytorch_optimizer import ScalableShampoo  # pylint: disable=import-outside-toplevel
    return [ScalableShampoo(list(tparams.values()), use_svd=True, shape_interpretation=False,
                            **kw)]
  if name == "sophia":
    from pytorch_optimizer import SophiaH  # pylint: disable=import-outside-toplevel
    return [SophiaH(list(tparams.values()), **kw)]
  raise KeyError(name)


LAYOUT_T = {"muon"}  # torch keeps (out, in) weights: it holds W^T.


def run_case(name, case_id, steps=STEPS):
  """The reference trajectory {leaf: (steps + 1, *shape)} in flaxopt's layout."""
  if name == "soap":
    _, ours, ref = next(c for c in CASES[name] if c[0] == case_id)
    x, y, p0 = problem("one_layer")
    factor = cosine if ours.get("schedule") == "cosine" else (lambda t: 1.0)
    return soap_numpy(p0, lambda p: one_layer_grad_np(p, x, y), steps, lr_factor=factor,
                      **ref)
  import torch  # pylint: disable=import-outside-toplevel
  torch.set_default_dtype(torch.float64)
  _, ours, ref = next(c for c in CASES[name] if c[0] == case_id)
  x, y, p0 = problem()
  transposed = name in LAYOUT_T
  tparams = {k: torch.tensor(v.T.copy() if (transposed and v.ndim == 2) else v,
                             dtype=torch.float64, requires_grad=True) for k, v in p0.items()}
  opts = _make_optimizers(name, ref, tparams)
  scheds = []
  if ours.get("schedule") == "cosine":
    scheds = [torch.optim.lr_scheduler.LambdaLR(o, cosine) for o in opts]
  xt, yt = torch.tensor(x), torch.tensor(y)

  def as_ours(k, t):
    v = t.detach().numpy().copy()
    return v.T.copy() if (transposed and v.ndim == 2) else v

  traj = {k: [as_ours(k, t)] for k, t in tparams.items()}
  for step in range(1, steps + 1):
    view = {k: (t.T if (transposed and t.ndim == 2) else t) for k, t in tparams.items()}
    loss = loss_np_like(torch, view, xt, yt)
    for o in opts:
      o.zero_grad()
    if name == "sophia" and (step - 1) % ref["update_period"] == 0:
      # SophiaH's own Hutchinson products (autograd.grad of the gradients against a probe),
      # with our probe instead of torch.randn_like, passed in through step(hessian=...).
      names = list(tparams)
      leaves = [tparams[k] for k in names]
      grads = torch.autograd.grad(loss, leaves, create_graph=True)
      zs = [torch.tensor(sophia_probe(step)[k]) for k in names]
      h_zs = torch.autograd.grad(grads, leaves, grad_outputs=zs)
      for t, g in zip(leaves, grads):
        t.grad = g.detach()
      opts[0].step(hessian=[(hz * z).detach() for hz, z in zip(h_zs, zs)])
    else:
      loss.backward()
      for o in opts:
        o.step()
    for s in scheds:
      s.step()
    for k, t in tparams.items():
      traj[k].append(as_ours(k, t))
  return {k: np.stack(v) for k, v in traj.items()}


REFERENCE_PACKAGES = {
    "prodigy": ("prodigyopt", "prodigyopt.Prodigy"),
    "dadapt_adam": ("dadaptation", "dadaptation.DAdaptAdam"),
    "muon": ("torch", "torch.optim.Muon (bfloat16 cast removed) + torch.optim.AdamW"),
    "shampoo": ("pytorch_optimizer", "pytorch_optimizer.ScalableShampoo(use_svd=True, "
                "shape_interpretation=False)"),
    "sophia": ("pytorch_optimizer", "pytorch_optimizer.SophiaH, step(hessian=z * Hz) with "
               "injected probes z"),
    "soap": ("numpy", "float64 NumPy transcription of nikhilvyas/SOAP soap.py "
             "(generate_b.soap_numpy)"),
}


def write(name):
  """Runs every case of ``name`` and writes b_<name>.npz."""
  package, what = REFERENCE_PACKAGES[name]
  arrays, cases = {}, []
  for case_id, ours, ref in CASES[name]:
    for leaf, traj in run_case(name, case_id).items():
      arrays[f"{case_id}/{leaf}"] = traj
    cases.append(dict(id=case_id, flaxopt=ours, reference=ref))
  meta = dict(reference=what, versions=_versions(package, "torch"), steps=STEPS,
              problem="two-layer linear least squares, generate_b.problem()", cases=cases)
  path = os.path.join(HERE, f"b_{name}.npz")
  np.savez_compressed(path, meta=np.array(json.dumps(meta, default=str)), **arrays)
  print(f"wrote {path}: {len(cases)} cases, {meta['versions']}")


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--only", action="append", help="optimizer name(s) to regenerate")
  args = parser.parse_args(argv)
  for name in args.only or list(REFERENCE_PACKAGES):
    write(name)


if __name__ == "__main__":
  sys.exit(main())
