"""The reference's flows (FrEIA 0.2) and its training loss, in torch, for equivalence tests.

The flow is built as BGAD's ``conditional_flow_model`` / ``flow_model`` build it;
the loss restates the reference engine's per-chunk formula with torch boolean
indexing, so an empty set gives NaN there, exactly as in the reference.
"""

import math

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
                         normalizer=10.0, bgspp_lambda=1.0, focal_weighting=True,
                         empty_as_zero=False):
  """The reference engine's loss for one chunk after the first meta-epoch.

  ``empty_as_zero``: a mean over an empty set is 0, as bgad_jax reports it
  (the reference's is NaN; neither passes a gradient).
  """
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
  mean = lambda t: t.new_zeros(()) if empty_as_zero and not len(t) else torch.mean(t)
  return loss_ml + bgspp_lambda * (mean(loss_n) + mean(loss_a))


def reference_lr(train, epoch, sub_epoch, batch, loaders=2):
  """The reference few-shot engine's learning rate of one image batch.

  Its cosine rate of the meta-epoch, replaced during warm-up by a ramp from
  lr / 10 to the cosine rate after warm-up, whose progress it computes with
  batch id ``batch + sub_epoch * loaders`` out of ``loaders * sub_epochs`` per
  epoch (``loaders``: the length of its list of data loaders, 2).
  """
  eta_min = train.lr * train.lr_decay_rate ** 3
  cosine = lambda e: eta_min + (train.lr - eta_min) * (
      1 + math.cos(math.pi * e / train.meta_epochs)) / 2
  if not (train.lr_warm and epoch < train.lr_warm_epochs):
    return cosine(epoch)
  total = loaders * train.sub_epochs
  progress = (batch + sub_epoch * loaders + epoch * total) / (train.lr_warm_epochs * total)
  return train.lr / 10 + progress * (cosine(train.lr_warm_epochs) - train.lr / 10)


def reference_meta_epoch(flows, optimizer, epoch, plans, features, masks, conditions,
                         train, loss):
  """One meta-epoch of the reference few-shot engine's loop, on given vectors.

  Per sub-epoch and image batch: the batch's learning rate (`reference_lr`);
  per level: the batch's vectors in the reference's order (image by image),
  the plan's permutation of them in place of ``torch.randperm``, consecutive
  chunks, one Adam step each. In the first meta-epoch a chunk with abnormal
  vectors is skipped and the loss is mean(-log sigmoid(lp)); later, the
  reference's chunk loss.

  Args:
    flows: one FrEIA flow per level; optimizer: one torch Adam over all of them.
    plans: per sub-epoch, (image batches, per level the list of each batch's
      permutation); see `plan.SubEpochPlan.reference_permutations`.
    features: per level, float32 torch [N_images, positions, C];
    masks: per level, float32 torch [N_images, positions] (1 = abnormal);
    conditions: per level, float32 torch [positions, D] (rows of its positions).
    train: config.train; loss: config.loss.

  Returns:
    [(level, loss)] of every step taken, in the order taken; the loss as
    bgad_jax reports it (a mean over an empty set counts 0: the reference's
    NaN, which it back-propagates, passes no gradient).
  """
  log_sigmoid = torch.nn.LogSigmoid()
  steps = []
  for sub_epoch, (batches, permutations) in enumerate(plans):
    for i, batch in enumerate(batches):
      for group in optimizer.param_groups:
        group['lr'] = reference_lr(train, epoch, sub_epoch, i)
      for level, flow in enumerate(flows):
        batch_ids = torch.as_tensor(np.asarray(batch))
        e = features[level][batch_ids].reshape(-1, features[level].shape[-1])
        m = masks[level][batch_ids].reshape(-1)
        p = conditions[level].repeat(len(batch), 1)
        perm = torch.as_tensor(permutations[level][i])
        for k in range(len(e) // train.num_vectors):
          idx = perm[k * train.num_vectors:(k + 1) * train.num_vectors]
          if epoch == 0 and m[idx].sum() > 0:
            continue
          lp, _, _ = freia_lp(flow, e[idx], p[idx])
          if epoch == 0:
            value = reported = -log_sigmoid(lp).mean()
          else:
            settings = (loss.pos_beta, loss.margin_tau, loss.normalizer, loss.bgspp_lambda,
                        loss.focal_weighting)
            value = reference_chunk_loss(lp, m[idx], *settings)
            with torch.no_grad():
              reported = reference_chunk_loss(lp, m[idx], *settings, empty_as_zero=True)
          optimizer.zero_grad()
          value.backward()
          optimizer.step()
          steps.append((level, reported.item()))
  return steps
