"""Pure jnp functions: the math of every technique. ``import flaxopt.functional as F``."""

# pylint: disable=wildcard-import
from flaxopt.functional.activations import *
from flaxopt.functional.initializers import *
from flaxopt.functional.normalization import *
from flaxopt.functional.pooling import *
from flaxopt.functional.regularization import *
from flaxopt.functional.augmentation import *
from flaxopt.functional.hutchinson import *
