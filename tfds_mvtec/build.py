"""Build a dataset's categories as array_record files, without TensorFlow.

  python -m tfds_mvtec.build --manual_dir DIR --data_dir DIR [--dataset mvtec] [--categories a,b]

--dataset: mvtec (MVTec AD, or any MVTec-layout folder), mpdd, btad, visa,
loco (MVTec LOCO AD) or mvtec_ad2. manual_dir holds the dataset's archive or
its extracted folders. Without --categories: every official category when its
archive is there, else every category folder found in manual_dir (an own
MVTec-layout folder), else every official category.
"""

import argparse
import os
import sys

from tfds_mvtec import layout, mvtec_ad
from tfds_mvtec.datasets import DATASETS


def default_categories(dataset: layout.Dataset, manual_dir: str):
  """The categories to build when none are named (see the module docstring)."""
  if any(os.path.isfile(os.path.join(manual_dir, a)) for a in dataset.archives):
    return list(dataset.categories)
  for root in [manual_dir] + [os.path.join(manual_dir, t) for t in dataset.top_folders]:
    if os.path.isdir(root):
      found = sorted(d for d in os.listdir(root)
                     if os.path.exists(os.path.join(root, d, dataset.marker)))
      if found:
        return found
  return list(dataset.categories)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--manual_dir', required=True)
  parser.add_argument('--data_dir', required=True)
  parser.add_argument('--dataset', default='mvtec', choices=sorted(DATASETS))
  parser.add_argument('--categories', default='', help='comma-separated; default: all')
  parser.add_argument('--masks_optional', action='store_true',
                      help='allow anomalies without ground truth in official category names')
  parser.add_argument('--force', action='store_true', help='rebuild existing datasets')
  args = parser.parse_args(argv)
  dataset = DATASETS[args.dataset]
  if not os.path.isdir(args.manual_dir):
    sys.exit(f'manual_dir {args.manual_dir} does not exist. '
             f'{mvtec_ad.BUILDERS[args.dataset].MANUAL_DOWNLOAD_INSTRUCTIONS}')
  categories = ([c for c in args.categories.split(',') if c]
                or default_categories(dataset, args.manual_dir))
  for category in categories:
    instance = mvtec_ad.build(category, args.data_dir, args.manual_dir,
                              masks_required=False if args.masks_optional else None,
                              force=args.force, dataset=args.dataset)
    splits = instance.info.splits
    counts = ', '.join(f'{name} {splits[name].num_examples}' for name in dataset.splits)
    print(f'{category}: {counts} -> {instance.data_path}')


if __name__ == '__main__':
  main()
