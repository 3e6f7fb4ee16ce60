"""Import timm beside CPU torch 2.13.0 (tests only, never the library).

PyPI's torchvision 0.28.0 that pip pairs with torch 2.13.0 is a CUDA build;
importing it registers fake kernels for ``torchvision::nms`` / ``qnms``, whose
schemas its missing compiled library would have defined, and fails with
"operator torchvision::nms does not exist". Defining the two schemas first
lets torchvision, and therefore timm, import; only the compiled ops (which we
never call) stay unavailable.
"""

import torch

_SCHEMAS = (
    'nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor',
    'qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor',
)
_library = None


def import_timm():
  """Returns the timm module, defining the torchvision op schemas if needed."""
  global _library
  try:
    import timm
    return timm
  except RuntimeError as err:
    if 'torchvision::nms' not in str(err):
      raise
  _library = torch.library.Library('torchvision', 'DEF')  # kept alive: owns the schemas
  for schema in _SCHEMAS:
    _library.define(schema)
  import sys
  for mod in [m for m in sys.modules if m.startswith(('torchvision', 'timm'))]:
    del sys.modules[mod]
  import timm
  return timm
