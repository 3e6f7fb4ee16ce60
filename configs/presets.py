"""Named presets on top of a config, chosen after the class: configs/<file>.py:CLASS,best.

'best' combines the quality options that won in benchmarks/quality.py (README,
"Detection quality"); the faithful configs, without a preset, stay the reference.
"""

from typing import Optional, Tuple

PRESETS = ('best',)
# Pixels, at any inp_size: the noise it averages is that of the feature
# vectors, whose strides (4 to 16 px) do not scale with the input; PatchCore
# smooths with the same sigma.
SMOOTHING_SIGMA = 4.0
# 'best' trains one schedule on every config: the one its options were
# measured with on the real photographs (configs/demo.py's classes and the
# held-out fundus class, at 128 and 256 px). On the published configs it used
# to keep the published schedule (lr 2e-4, 25 x 8 meta-epochs of 4096 vectors
# per step, 5 CutPaste copies), never measured under 'best': on the 80 fundus
# crops at 128 px a 32-image batch holds 2048 vectors of the stride-16 level,
# fewer than one step, so that flow never trained (52.4 / 73.8 / 19.6 image /
# pixel AUROC / AUPRO); this schedule scored 84.1 / 92.2 / 57.0 on the same
# files in two thirds of the time (benchmarks/RESULTS.md, "configs/folder.py:
# CLASS,best on a small class", with the published schedule at 2048 vectors).
# Not measured on MVTec AD (none here); there it makes about half the
# published schedule's vector passes.
BEST_LR = 1e-3
# 12 meta-epochs: at 6 the maps were still improving on the real photographs;
# 25 raised the texture classes and cost the coins class 3 image AUROC in both
# seeds (benchmarks/RESULTS.md, "`best` at the published 25 x 8 meta-epochs").
BEST_META_EPOCHS = 12
# 8 sub-epochs, the published count: 12 x 8 over 12 x 2 on the real
# photographs, pixel AUROC +1.1 to +4.2 and AUPRO +1.0 to +7.7.
BEST_SUB_EPOCHS = 8
# Feature vectors per optimiser step, a quarter of the published 4096: four
# times the steps for the same vectors.
BEST_NUM_VECTORS = 1024
# 10 CutPaste copies per known anomaly instead of the published 5. The copies
# carry most of what the few labels teach (surface, seed 1, with the known
# anomalies alone: pixel AUROC 79.1 against 91.8); twice as many raised pixel
# AUROC by 0.5 and AUPRO by 1.2 over three real-photograph classes and seeds,
# image AUROC -0.5 (README, "Detection quality").
BEST_SYNTHETIC_REPEATS = 10
# The normal boundary b_n at the 5th percentile of a chunk's normal
# log-likelihoods instead of the published 1st: the pull term then lifts the
# rarest 5% of normal vectors, and the rare normal patterns that the flows
# fitted badly no longer outrank subtle defects (docs/QUALITY.md, "A wider
# normal boundary"). Measured on the demo photographs; no MVTec AD here. 0.1 lost on
# the surface class in every seed.
POS_BETA = 0.05
# On textures each tap's vectors are averaged over 3 x 3 neighbours
# (PatchCore's local aggregation): over 3 seeds tissue pixel AUROC +0.7 (the
# seen types' seed sd 1.3 -> 0.7) for -0.5 image AUROC, surface up on every
# metric, gravel's unseen stain +17 pixel AUROC; on the coins (an object) it
# cost 1.2 image AUROC, so objects keep the plain taps (README, "Texture
# photographs the preset was not tuned on").
TEXTURE_NEIGHBOURHOOD = 3


def split(arg: Optional[str]) -> Tuple[str, Tuple[str, ...]]:
  """'carpet,best' -> ('carpet', ('best',)); the class may be ''."""
  category, *names = (arg or '').split(',')
  unknown = [name for name in names if name not in PRESETS]
  if unknown:
    raise ValueError(f'unknown preset {unknown[0]!r} in config argument {arg!r}: '
                     f'presets are {", ".join(PRESETS)}')
  return category, tuple(names)


def apply_best(config):
  """The options beyond the reference that the quality benchmark measured as wins,
  with the schedule they were measured on (lr, meta- and sub-epochs, vectors per
  step, the published CutPaste mix with twice its copies) on every config."""
  config.maps.image_score = 'top_k_mean'         # mean of the top 1% of a map
  config.backbone.normalization = 'backbone'     # the weights' own input normalisation
  # The levels' mean log-likelihood, then smoothing: on the real-photograph
  # classes surface and coins +3.6 and +2.9 pixel AUROC, +6.9 and +4.6 AUPRO
  # over the summed likelihood, tissue within a point (benchmarks/RESULTS.md).
  # Smoothing alone, on the summed likelihood, had not paid.
  config.maps.level_aggregation = 'mean_log'
  config.maps.smoothing_sigma = SMOOTHING_SIGMA
  config.maps.score_unsmoothed = True   # smoothed maps ranked images 0.2-1.8 points worse
  # CutPaste copies on a texture land anywhere, not where the defect was: on
  # the cratered surface +0.9 pixel AUROC and +2.6 AUPRO over 3 seeds, the
  # seed sd halved; on the coins (an object) moving them cost image AUROC
  # in every seed, so objects keep the reference's placement (benchmarks/RESULTS.md).
  config.data.cutpaste_placement = 'random_on_textures'
  # ... and may reach the border, which cuts them as it cuts real defects there:
  # the reference keeps a moved copy whole inside, so the flows never saw a
  # defect at the border. With the defects anywhere, surface +2.3 AUPRO over
  # 3 seeds; with them centred tissue -0.5 image AUROC (docs/QUALITY.md,
  # "CutPaste copies that reach the border"). Every moved copy, not a share of them:
  # at 0.5 the centred classes gained at most 0.4 and grass with the defects
  # anywhere lost 1.4 pixel AUROC.
  config.data.cutpaste_reach_border = True
  config.backbone.neighbourhood = TEXTURE_NEIGHBOURHOOD
  config.backbone.neighbourhood_on = 'textures'
  config.loss.pos_beta = POS_BETA
  # A feature vector is abnormal when the defect covers half its cell or a part
  # narrower than half a cell crosses it, instead of the reference's one sampled
  # pixel per cell, which leaves most of a thin scratch labelled normal: coins'
  # weak seeds +4.9 and +5.4 image AUROC, tissue's thin scratches +3.2, surface
  # within a host's run-to-run difference (README, "Masks by covered share").
  config.data.mask_pooling = 'thin'
  # On objects only: on grass with the defects anywhere a cell a labelled
  # scratch crosses is mostly normal blades, and marking it cost 7.5 pixel
  # AUROC (unseen stains 66.1 -> 53.0), below PatchCore's; textures keep the
  # reference's sampling, at a price on tissue of 0.9 image AUROC and AUPRO.
  config.data.mask_pooling_on = 'objects'
  config.train.lr = BEST_LR
  config.train.meta_epochs = BEST_META_EPOCHS
  config.train.sub_epochs = BEST_SUB_EPOCHS
  config.train.num_vectors = BEST_NUM_VECTORS
  config.data.anomaly_strategy = ('real', 'cutpaste')   # the published mix
  config.data.synthetic_repeats = BEST_SYNTHETIC_REPEATS
  return config


def apply(config, names: Tuple[str, ...]):
  """Applies the named presets in order."""
  for name in names:
    {'best': apply_best}[name](config)
  return config
