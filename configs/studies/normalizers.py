r"""Every normalizer in MNIST-1D's CNN at batch sizes 2, 16 and 128 (Adam 3e-3, 2,000 steps).

Batch norm's statistics degrade at tiny batches (Ioffe & Szegedy, 2015; Wu & He, 2018 for
group norm as the remedy); layer, instance, group and weight norm do not depend on the batch.
The step count is fixed, so small batches see fewer examples.

  python -m experiments.compare --config=configs/studies/normalizers.py \
      --workdir=runs/normalizers --jobs=2 --report_dir=docs/studies --image_dir=docs/images
"""

from configs.studies import _common


def get_config():
  base = _common.short_base()
  base.optimizer.learning_rate = 3e-3
  return _common.study(
      "normalizers", "Normalizers in the MNIST-1D CNN across batch sizes", base,
      axes=("model.norm=none,batch,layer,instance,group,weight", "batch_size=2,16,128"),
      seeds="0,1", target_accuracy=0.85)
