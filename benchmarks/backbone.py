"""Backbone throughput: our Flax EfficientNet vs the PyTorch (timm) model, one run.

  python benchmarks/backbone.py [--size 256] [--batch 8] [--iters 5] [--dtype float32]
                                [--json out.json]

Both run on the same inputs and the same device: the CPU (torch with as many
threads as JAX sees cores), or the GPU when there is one (torch fp32 without
TF32). ``--dtype bfloat16`` computes our model in bfloat16 (the torch side
stays fp32). Lite0 uses its real weights; the B models random weights (speed
does not depend on the values). Prints a table and optionally writes JSON rows.
"""

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bgad_jax.models import backbone as backbone_lib  # noqa: E402
from bgad_jax.models import weight_conversion  # noqa: E402
from benchmarks import table  # noqa: E402


def _timed(fn, iters):
  fn()  # warm-up / compile
  start = time.perf_counter()
  for _ in range(iters):
    fn()
  return (time.perf_counter() - start) / iters


def bench(name, size, batch, iters, dtype='float32'):
  import torch
  from references.timm_shim import import_timm
  timm = import_timm()
  device = table.torch_device()
  timm_name = 'tf_' + name if name.startswith('efficientnet_lite') else name
  torch_model = timm.create_model(timm_name, features_only=True, out_indices=(1, 2, 3),
                                  pretrained=False).eval()
  if name.startswith('efficientnet_lite'):
    state = weight_conversion.read_backbone_state_dict(name)
    torch_model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()},
                                strict=False)
  variables = weight_conversion.backbone_variables_from_timm(torch_model.state_dict(), name)
  model = backbone_lib.EfficientNet(backbone_lib.arch_spec(name), dtype=jnp.dtype(dtype))
  images = np.random.default_rng(0).standard_normal((batch, size, size, 3)).astype(np.float32)
  apply = jax.jit(model.apply)
  taps = apply(variables, images)
  flax_s = _timed(lambda: jax.block_until_ready(apply(variables, images)), iters)
  torch_model = torch_model.to(device)
  torch_images = torch.from_numpy(images.transpose(0, 3, 1, 2).copy()).to(device)

  def torch_forward():
    torch_model(torch_images)
    table.torch_sync(device)

  with torch.inference_mode():
    torch_s = _timed(torch_forward, iters)
  params = sum(x.size for x in jax.tree.leaves(variables['params']))
  return dict(backbone=name, size=size, batch=batch, dtype=dtype, params_m=params / 1e6,
              taps=' '.join('x'.join(map(str, t.shape[1:])) for t in taps),
              flax_img_s=batch / flax_s, torch_img_s=batch / torch_s,
              ratio=torch_s / flax_s)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--backbones', default='efficientnet_lite0,tf_efficientnet_b6')
  parser.add_argument('--size', type=int, default=256)
  parser.add_argument('--batch', type=int, default=8)
  parser.add_argument('--iters', type=int, default=5)
  parser.add_argument('--dtype', default='float32', choices=['float32', 'bfloat16'])
  parser.add_argument('--json', default=None)
  args = parser.parse_args(argv)
  rows = [bench(n, args.size, args.batch, args.iters, args.dtype)
          for n in args.backbones.split(',')]
  table.report(rows, [('backbone', 'backbone', '20s'), ('params_m', 'params(M)', '9.2f'),
                      ('taps', 'taps (HxWxC, NHWC)', '30s'), ('flax_img_s', 'flax img/s', '10.2f'),
                      ('torch_img_s', 'torch img/s', '11.2f'), ('ratio', 'flax/torch', '10.2f')],
               f'{args.size}x{args.size}, batch {args.batch}, ours in {args.dtype}', args.json)
  return rows


if __name__ == '__main__':
  main()
