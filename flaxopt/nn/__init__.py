"""Flax linen modules: own parameters and state, call flaxopt.functional for the math.

``import flaxopt.nn as fnn``.
"""

# pylint: disable=wildcard-import
from flaxopt.nn.activations import *
from flaxopt.nn.normalization import *
from flaxopt.nn.pooling import *
from flaxopt.nn.regularization import *
from flaxopt.nn.models import *
