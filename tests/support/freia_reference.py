"""The reference's flows (FrEIA 0.2) and its training loss, in torch, for equivalence tests.

The flow is built as BGAD's ``conditional_flow_model`` / ``flow_model`` build it;
the loss restates the reference engine's per-chunk formula with torch boolean
indexing, so an empty set gives NaN there, exactly as in the reference.
"""

import numpy as np
import torch
from torch import nn
import FrEIA.framework as Ff
import FrEIA.modules as Fm

LOG_SQRT_2PI = 0.9189385332046727


def reference_subnet(dims_in, dims_out):
  return nn.Sequential(nn.Linear(dims_in, 2 * dims_in), nn.ReLU(),
                       nn.Linear(2 * dims_in, dims_out))


def build_freia_flow(channels, coupling_layers=8, clamp_alpha=1.9,
                     cond_dim=None, seed=0):
  """FrEIA SequenceINN of AllInOneBlocks (permute_soft, SOFTPLUS), seeded."""
  np.random.seed(seed)   # special_ortho_group draws from numpy's global rng
  torch.manual_seed(seed)
  flow = Ff.SequenceINN(channels)
  cond_kwargs = {} if cond_dim is None else dict(cond=0, cond_shape=(cond_dim,))
  for _ in range(coupling_layers):
    flow.append(Fm.AllInOneBlock, subnet_constructor=reference_subnet,
                affine_clamping=clamp_alpha, global_affine_type='SOFTPLUS',
                permute_soft=True, **cond_kwargs)
  return flow


def freia_lp(flow, x, cond=None):
  """Reference per-dimension log-likelihood lp = logp / C (and z, logdet)."""
  z, logdet = flow(x) if cond is None else flow(x, [cond])
  channels = x.shape[1]
  logp = channels * -LOG_SQRT_2PI - 0.5 * torch.sum(z ** 2, 1) + logdet
  return logp / channels, z, logdet


def _normal_weights(lp, normalizer=10.0):
  u = lp / normalizer
  focal = 11.7 * (1 - torch.exp(u)).pow(0.5) * torch.abs(u)
  return torch.where(u > -0.2, torch.ones_like(u), focal)


def _abnormal_weights(lp, normalizer=10.0):
  u = lp / normalizer
  focal = 0.53 * (1 + torch.exp(u)).pow(2) / torch.abs(u)
  return torch.where(u <= -1.0, torch.ones_like(u), focal)


def reference_chunk_loss(lp, mask, pos_beta=0.01, margin_tau=0.1,
                         normalizer=10.0, bgspp_lambda=1.0, focal_weighting=True):
  """The reference engine's loss for one chunk after the first meta-epoch."""
  log_sigmoid = torch.nn.LogSigmoid()
  normal, abnormal = mask == 0, mask == 1
  if mask.sum() == 0:
    if focal_weighting:
      return (-log_sigmoid(lp) * _normal_weights(lp.detach(), normalizer)).mean()
    return -log_sigmoid(lp).mean()
  detached = lp.detach()
  weights = torch.zeros_like(detached)
  if focal_weighting:
    weights[normal] = _normal_weights(detached[normal], normalizer)
    weights[abnormal] = _abnormal_weights(detached[abnormal], normalizer)
    loss_ml = torch.mean(-log_sigmoid(lp[normal]) * weights[normal])
  else:
    loss_ml = torch.mean(-log_sigmoid(lp[normal]))
  # Boundary: the floor(N_normal * pos_beta)-th smallest normal lp.
  normal_lp = detached[normal]
  index = int((normal.sum() * pos_beta).item())
  b_n = torch.sort(normal_lp)[0][index] / normalizer
  b_a = b_n - margin_tau
  v = lp / normalizer
  pull = normal & (v <= b_n)
  push = abnormal & (v >= b_a)
  loss_n = b_n - v[pull]
  loss_a = v[push] - b_a
  if focal_weighting:
    loss_n = loss_n * weights[pull]
    loss_a = loss_a * weights[push]
  return loss_ml + bgspp_lambda * (torch.mean(loss_n) + torch.mean(loss_a))
