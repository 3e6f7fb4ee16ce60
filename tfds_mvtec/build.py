"""Build MVTec AD (or any MVTec-layout folder) as array_record files, without TensorFlow.

  python -m tfds_mvtec.build --manual_dir DIR --data_dir DIR [--categories a,b]

manual_dir holds mvtec_anomaly_detection.tar.xz or its extracted folders.
Without --categories: the 15 MVTec categories, or, when manual_dir is another
MVTec-layout folder, every category folder in it.
"""

import argparse
import os
import sys

from tfds_mvtec import layout, mvtec_ad


def _default_categories(manual_dir):
  if os.path.isfile(os.path.join(manual_dir, layout.ARCHIVE_NAME)):
    return list(layout.CATEGORIES)
  found = sorted(d for d in os.listdir(manual_dir)
                 if os.path.isdir(os.path.join(manual_dir, d, 'train')))
  return found or list(layout.CATEGORIES)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--manual_dir', required=True)
  parser.add_argument('--data_dir', required=True)
  parser.add_argument('--categories', default='', help='comma-separated; default: all')
  parser.add_argument('--masks_optional', action='store_true',
                      help='allow anomalies without ground truth in MVTec category names')
  parser.add_argument('--force', action='store_true', help='rebuild existing datasets')
  args = parser.parse_args(argv)
  if not os.path.isdir(args.manual_dir):
    sys.exit(f'manual_dir {args.manual_dir} does not exist. {mvtec_ad.MvtecAd.MANUAL_DOWNLOAD_INSTRUCTIONS}')
  categories = [c for c in args.categories.split(',') if c] or _default_categories(args.manual_dir)
  for category in categories:
    instance = mvtec_ad.build(category, args.data_dir, args.manual_dir,
                              masks_required=False if args.masks_optional else None,
                              force=args.force)
    splits = instance.info.splits
    print(f'{category}: train {splits["train"].num_examples}, test {splits["test"].num_examples}'
          f' -> {instance.data_path}')


if __name__ == '__main__':
  main()
