"""The benchmark as a small package, driven by ``experiments/benchmark.py``.

* ``options``     the frozen :class:`~experiments.bench.options.Options` every measurement
                  takes (nothing here reads flags), the PyTorch reference's availability.
* ``timing``      interleaved rounds, medians and ratios; runners; timed subprocesses.
* ``optimizers``  bandwidth, optimizer updates vs optax, Adam vs PyTorch, state bytes.
* ``ops``         activations, normalizers and pooling vs jax.nn / flax.linen.
* ``train``       train steps vs hand-written JAX and PyTorch; gather overhead; scaling.
* ``end_to_end``  the main job vs the PyTorch recipe as subprocesses (equal work).
* ``torch_ref``   the PyTorch references (imports torch; optional).
* ``report``      metadata, the results JSON, Markdown tables, plots.
* ``sections``    the section table: name -> measurement.
"""
