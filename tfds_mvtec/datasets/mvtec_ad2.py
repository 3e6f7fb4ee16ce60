"""MVTec AD 2 (Heckler-Kram et al., 2025): eight classes, large images.

Read: train/good, validation/good and the public test split test_public
(good and bad, masks in test_public/ground_truth/bad/<stem>_mask.png). The
private test splits have no labels and are not read. Examples carry their
split folder's name in ``split``.
"""

from tfds_mvtec import layout


def scan(dataset, category_dir, category, masks_required):
  return layout.scan_folders(
      dataset, category_dir, category, masks_required,
      split_dirs={'train': 'train', 'validation': 'validation', 'test': 'test_public'},
      gt_dir='test_public/ground_truth', with_split=True)


MVTEC_AD2 = layout.Dataset(
    name='mvtec_ad2', title='MVTec AD 2', builder_name='mvtec_ad2',
    categories=('can', 'fabric', 'fruit_jelly', 'rice', 'sheet_metal', 'vial', 'wallplugs',
                'walnuts'),
    archives=(), top_folders=('mvtec_ad_2',), marker='train', scan=scan,
    splits=('train', 'validation', 'test'), split_field=True,
    layout_help='<root>/<category>/train/good, validation/good, test_public/{good,bad}, '
                'test_public/ground_truth/bad/<name>_mask.png',
    download_page='https://www.mvtec.com/company/research/datasets/mvtec-ad-2',
    licence='CC BY-NC-SA 4.0', inp_size=256)
