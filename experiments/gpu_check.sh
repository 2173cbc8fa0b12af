#!/usr/bin/env bash
# The prepared accelerator check, run from the repository root on a lent GPU machine (the
# workplace's `device` tool) whose image has jax/flax/optax/chex/orbax but not the packages in
# .whl/ (carried wheels: tensorflow-datasets, mnist1d, ml_collections, tensorboardX, ...).
#   1. the op / module / optimizer tests on the GPU;
#   2. the main job on the GPU (jit), and 1000 steps with parallel=pmap;
#   3. the benchmark's optimizer, ops and train-step sections (--quick), without PyTorch.
# Everything it measures lands in $OUT (or ./gpu_out when OUT is unset).
# The wheels (Python 3.12, manylinux x86_64; .whl/ is git-ignored): tensorflow-datasets==4.9.10
# mnist1d==0.0.2.post1 ml_collections==1.1.0 tensorboardX==2.6.5 array_record==0.8.6
# simple_parsing==0.1.9 promise==2.3 (pip wheel) tensorflow-metadata==1.21.0 immutabledict==4.3.1
# dm-tree==0.1.10 docstring-parser==0.18.0 toml==0.10.2 googleapis-common-protos==1.76.0
# termcolor==3.3.0, fetched with `pip download --no-deps --only-binary=:all: --python-version 3.12`.
set -uo pipefail
OUT=${OUT:-gpu_out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false \
  FLAXOPT_DATA_DIR=/tmp/tfds TF_CPP_MIN_LOG_LEVEL=3
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, jax.devices())"

echo "== 1. tests on the GPU"
timeout 170 python3 -m pytest -q -p no:cacheprovider -n 6 tests/functional tests/nn tests/optim \
  tests/test_registry.py 2>&1 | tee "$OUT/gpu_pytest.log" | tail -25

echo "== 2. main job on the GPU"
for par in jit; do
  /usr/bin/time -f "end-to-end %e s, peak RSS %M KB" python3 -m experiments.train \
    --workdir=/tmp/g_$par --config.parallel=$par > "$OUT/gpu_train_$par.log" 2>&1
  tail -2 "$OUT/gpu_train_$par.log"; cp /tmp/g_$par/summary.json "$OUT/gpu_summary_$par.json"
done
timeout 60 python3 -m experiments.train --workdir=/tmp/g_pmap --config.parallel=pmap \
  --config.num_train_steps=1000 > "$OUT/gpu_train_pmap.log" 2>&1; tail -1 "$OUT/gpu_train_pmap.log" | cut -c1-400

echo "== 3. benchmarks"
timeout 200 python3 -m experiments.benchmark --quick --notorch --sections=optimizers,ops,train_step \
  --opt_sizes=1e6,1e7,5e7 --out="$OUT/gpu_bench.json" --markdown="$OUT/gpu_bench.md" \
  > "$OUT/gpu_bench.log" 2>&1; tail -60 "$OUT/gpu_bench.md" 2>/dev/null || tail -30 "$OUT/gpu_bench.log"
