r"""Second-order methods (full batch) against first-order ones on a small MLP on MNIST-1D.

A 1-hidden-layer MLP (width 32, tanh: smooth, 1,642 parameters) trained full-batch (all 4000
training examples per step) for 100 steps. Newton, Newton-CG, BFGS, L-BFGS and nonlinear CG
use their line searches with the first trial step 1.0; the first-order references use their
usual learning rates.

  python -m experiments.compare --config=configs/studies/optimizers_second_order.py \
      --workdir=runs/second_order --report_dir=docs/studies --image_dir=docs/images
"""

from configs.studies import _common


def get_config():
  base = _common.short_base(num_train_steps=100, eval_every=10)
  base.batch_size = 4000
  base.model.name = "mlp"
  base.model.width = 32
  base.model.depth = 1
  base.model.activation = "tanh"
  variants = tuple(f"{name}: optimizer.name={name}; optimizer.learning_rate={lr}"
                   for name, lr in (("sgd", 0.3), ("momentum", 0.1), ("adam", 1e-2),
                                    ("lbfgs", 1.0), ("bfgs", 1.0), ("conjugate_gradient", 1.0),
                                    ("newton_cg", 1.0), ("newton", 1.0)))
  return _common.study("optimizers_second_order",
                       "Second-order vs first-order methods, full batch, MLP 40-32-10 (tanh)",
                       base, variants=variants, seeds="0,1", target_accuracy=0.5)
