r"""Every regularizer and augmentation in the catalog on MNIST-1D's CNN (Adam 1e-2, 2,000 steps).

The paper's recipe overfits (train loss -> 0); each variant adds one regularizer at a common
strength. horizontal_flip is left out: it is for images (time reversal is not
label-preserving for signals).

  python -m experiments.compare --config=configs/studies/regularizers.py \
      --workdir=runs/regularizers --jobs=2 --report_dir=docs/studies --image_dir=docs/images
"""

from configs.studies import _common

VARIANTS = (
    "none:",
    "l1 1e-4: regularizer.l1=1e-4",
    "l2 2e-3: regularizer.l2=2e-3",
    "dropout 0.1: model.dropout=0.1",
    "dropconnect 0.2 (head): model.dropconnect=0.2",
    "translate 4: augment.ops=random_translate; augment.random_translate.max_shift=4",
    "random_crop 4 (edge): augment.ops=random_crop; augment.random_crop.padding=4; "
    "augment.random_crop.pad_mode=edge",
    "gaussian_noise 0.1: augment.ops=gaussian_noise; augment.gaussian_noise.stddev=0.1",
    "amplitude_scale 0.8-1.2: augment.ops=amplitude_scale",
    "cutout 8: augment.ops=cutout; augment.cutout.size=8",
    "mixup 0.2: augment.ops=mixup; augment.mixup.alpha=0.2",
    "cutmix 1.0: augment.ops=cutmix; augment.cutmix.alpha=1.0",
)


def get_config():
  return _common.study(
      "regularizers", "Regularizers and augmentations on the MNIST-1D CNN",
      _common.short_base(), variants=VARIANTS, seeds="0,1", target_accuracy=0.85)
