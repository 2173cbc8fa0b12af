"""Curvature and training-dynamics toolkit: pure, jit-able functions over parameter pytrees.

Hessian / GGN / Fisher vector products (``products``), Hutchinson trace and diagonal
(``estimators``), Lanczos top eigenpairs and stochastic-Lanczos-quadrature spectral densities
(``lanczos``), loss-landscape slices (``landscape``), the gradient noise scale and
update-to-parameter ratios (``dynamics``). ``from flaxopt import curvature``.

Conventions: ``loss_fn(params, batch) -> scalar`` (mean over the batch);
``matvec(v) -> A v`` over pytrees shaped like ``params``; randomness from explicit keys.
Models with BatchNorm enter in train mode (batch statistics), dropout off.
"""

# pylint: disable=wildcard-import
from flaxopt.curvature.products import *
from flaxopt.curvature.estimators import *
from flaxopt.curvature.lanczos import *
from flaxopt.curvature.landscape import *
from flaxopt.curvature.dynamics import *
