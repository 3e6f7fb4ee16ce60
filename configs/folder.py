"""Any MVTec-layout folder (own products, BTAD): configs/folder.py:<category>.

  <data.root>/<category>/train/good/*.png
  <data.root>/<category>/test/<good|defect type>/*.png
  <data.root>/<category>/ground_truth/<defect type>/<name>_mask.png   (optional)

Published settings (strategy 0,1 included); with no masks, pixel metrics are reported as
unavailable. The default backbone is the offline Lite0.
"""

from configs import common, presets


def get_config(arg=None):
  """configs/folder.py:CATEGORY[,best]."""
  category, preset_names = presets.split(arg)
  config = common.get_config()
  config.backbone.name = 'efficientnet_lite0'
  config.data.source = 'folder'
  config.data.category = category
  return presets.apply(config, preset_names)
