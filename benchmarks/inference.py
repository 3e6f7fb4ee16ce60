"""Inference speed of one model three ways, same CPU, one run: bgad_jax (jit), onnxruntime
(the ONNX export) and the official code's PyTorch forward.

  python benchmarks/inference.py [--workdir runs/demo] [--size 256] [--batches 1,16]
                                 [--repeats 5] [--json out.json]

Each side maps uint8 RGB images [B, S, S, 3], already resized and cropped, to
anomaly maps [B, S, S] and image scores, with the whole graph timed:
normalisation, backbone, the three conditional flows, log-likelihoods, maps.

- bgad_jax: ``export.inference_function`` (what ``--mode=export`` writes),
  jitted, with the backbone's CPU depthwise convolutions.
- onnxruntime: the ``--config.export.format=onnx`` file (plain depthwise
  convolutions), CPU provider, one thread per core.
- official: what the official code's test loop runs per batch: timm's
  encoder (features at strides 4/8/16), a 2D positional encoding per level,
  FrEIA's conditional flows on every feature vector of the batch, the
  per-dimension log-likelihood; then our maps step in torch (the official code
  builds maps in numpy over the whole test set afterwards). torch uses one
  thread per core, inference mode.

With ``--workdir`` the trained model of that workdir is used (its backbone,
size and flows); without it a fresh model of the demo config at ``--size``
(speed does not depend on weight values). The torch flows have the same
architecture and sizes, with FrEIA's initial weights. Latency is the best of
``--repeats`` calls per batch size after one warm-up call.
"""

import argparse
import json
import os
import sys
import tempfile

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import table  # noqa: E402
from bgad_jax import export  # noqa: E402
from bgad_jax.detector import Detector  # noqa: E402
from bgad_jax.models.pos_embed import positional_encoding_2d  # noqa: E402
from bgad_jax.training.features import FrozenBackbone  # noqa: E402
from bgad_jax.training.sharding import make_mesh  # noqa: E402
from bgad_jax.training.state import FlowTrainState  # noqa: E402
from configs import demo  # noqa: E402

COLUMNS = [('side', 'side', '12s'), ('batch', 'batch', '5d'), ('ms_per_call', 'ms/call', '9.1f'),
           ('ms_per_image', 'ms/image', '9.1f'), ('images_per_s', 'images/s', '9.1f'),
           ('vs_official', 'x official', '10.2f')]


def fresh_detector(size: int, tiny: bool = False) -> Detector:
  """An untrained model of the demo config at ``size`` (placeholder map constants)."""
  config = demo.get_config()
  config.data.inp_size = size
  if tiny:
    config.flow.coupling_layers, config.flow.pos_embed_dim = 2, 16
  backbone = FrozenBackbone.load(config, make_mesh())
  channels = backbone.channels(size)
  state = FlowTrainState.create(config, channels, jax.random.key(0))
  constants = dict(level_max=[0.0] * len(channels), map_max=float(len(channels)),
                   score_threshold=1.0, nll_threshold=1.0)
  return Detector(config, backbone, state, constants)


def jax_runner(detector: Detector):
  infer = jax.jit(export.inference_function(detector, portable=False))
  return lambda pixels: jax.block_until_ready(infer(pixels))


def onnx_runner(detector: Detector, folder: str):
  import onnxruntime
  path = os.path.join(folder, 'bgad.onnx')
  with open(path, 'wb') as f:
    f.write(export.export_onnx(detector))
  options = onnxruntime.SessionOptions()
  options.log_severity_level = 3   # the converter's shape-hint warnings
  options.intra_op_num_threads = os.cpu_count()
  session = onnxruntime.InferenceSession(path, options, providers=['CPUExecutionProvider'])
  return lambda pixels: session.run(None, {export.ONNX_INPUT: pixels})


def official_runner(detector: Detector):
  """The official test forward in torch (see the module docstring)."""
  import torch
  import torch.nn.functional as F
  from benchmarks.parity import reference_encoder
  from references.freia_reference import build_freia_flow, freia_lp
  from references.timm_shim import import_timm
  torch.set_num_threads(os.cpu_count())
  config = detector.config
  if config.backbone.name == 'efficientnet_lite0':
    encoder = reference_encoder()
  else:
    name = config.backbone.name
    encoder = import_timm().create_model(name, features_only=True, out_indices=(1, 2, 3),
                                         pretrained=False).eval()
  channels = encoder.feature_info.channels()
  dim = config.flow.pos_embed_dim
  flows = [build_freia_flow(c, config.flow.coupling_layers, config.flow.clamp_alpha,
                            cond_dim=dim).eval() for c in channels]
  mean = torch.tensor(np.asarray(detector.backbone.mean, np.float32)).view(1, 3, 1, 1)
  std = torch.tensor(np.asarray(detector.backbone.std, np.float32)).view(1, 3, 1, 1)
  size = config.data.inp_size

  def run(pixels):
    with torch.inference_mode():
      images = (torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255.0 - mean) / std
      normal = 0.0
      for tap, flow in zip(encoder(images), flows):
        batch, c, h, w = tap.shape
        vectors = tap.permute(0, 2, 3, 1).reshape(-1, c)
        # The official loop computes the encoding for every batch, then repeats it.
        code = torch.from_numpy(np.array(positional_encoding_2d(dim, h, w)))
        cond = code.reshape(1, h * w, dim).expand(batch, -1, -1).reshape(-1, dim)
        lp = freia_lp(flow, vectors, cond)[0].reshape(batch, 1, h, w)
        lp = lp - lp.amax(dim=(1, 2, 3), keepdim=True)
        normal = normal + F.interpolate(torch.exp(lp), size=(size, size), mode='bilinear',
                                        align_corners=True)
      maps = normal.amax() - normal[:, 0]
      return maps, maps.amax(dim=(1, 2))

  return run


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--workdir', default='', help='a trained workdir (default: fresh model)')
  parser.add_argument('--size', type=int, default=256, help='input side without --workdir')
  parser.add_argument('--batches', default='1,16')
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument('--sides', default='bgad_jax,onnxruntime,official')
  parser.add_argument('--tiny', action='store_true', help='2 coupling layers (tests)')
  parser.add_argument('--json', default='')
  args = parser.parse_args(argv)
  detector = Detector.load(args.workdir) if args.workdir else fresh_detector(args.size, args.tiny)
  size = detector.config.data.inp_size
  sides = args.sides.split(',')
  with tempfile.TemporaryDirectory() as folder:
    builders = dict(bgad_jax=lambda: jax_runner(detector),
                    onnxruntime=lambda: onnx_runner(detector, folder),
                    official=lambda: official_runner(detector))
    runners = {side: builders[side]() for side in sides}
    rows = []
    for batch in [int(b) for b in args.batches.split(',')]:
      pixels = np.random.default_rng(batch).integers(0, 256, (batch, size, size, 3), np.uint8)
      names = list(runners)
      seconds = table.best_of_interleaved([lambda r=runners[n]: r(pixels) for n in names],
                                          args.repeats)
      official = dict(zip(names, seconds)).get('official')
      for name, second in zip(names, seconds):
        rows.append(dict(side=name, batch=batch, ms_per_call=1e3 * second,
                         ms_per_image=1e3 * second / batch, images_per_s=batch / second,
                         vs_official=official / second if official else None))
  setting = (f'{detector.config.backbone.name} {size} px, '
             f'{detector.config.flow.coupling_layers} coupling layers, '
             f'{"workdir " + args.workdir if args.workdir else "fresh weights"}')
  printable = [{**r, 'vs_official': r['vs_official'] or float('nan')} for r in rows]
  table.report(printable, COLUMNS, setting)
  if 'bgad_jax' in runners and 'onnxruntime' in runners:   # the same function, two runtimes
    pixels = np.random.default_rng(0).integers(0, 256, (2, size, size, 3), np.uint8)
    diff = float(np.abs(np.asarray(runners['bgad_jax'](pixels)[0])
                        - runners['onnxruntime'](pixels)[0]).max())
    print(f'onnxruntime maps vs bgad_jax maps: max |diff| {diff:.2e}')
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(dict(setting=setting, rows=rows), f, indent=2)
  return rows


if __name__ == '__main__':
  main()
