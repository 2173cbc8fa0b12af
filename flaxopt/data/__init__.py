"""Datasets and the input pipeline.

``flaxopt.data.load(name, ...)`` returns a whole dataset as numpy arrays (see
``flaxopt.data.datasets``); the TFDS builders of the embedded datasets live in
``flaxopt.data.builders``; shuffling, batching and sharding in ``flaxopt.data.pipeline``.
"""

from flaxopt.data.builders import default_data_dir
from flaxopt.data.datasets import Dataset, SPECS, load, names

__all__ = ["Dataset", "SPECS", "default_data_dir", "load", "names"]
