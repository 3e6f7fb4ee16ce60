"""MPDD, metal parts (Jezek et al., ICUMT 2021): the MVTec AD layout, six classes."""

from tfds_mvtec import layout

MPDD = layout.Dataset(
    name='mpdd', title='MPDD', builder_name='mpdd',
    categories=('bracket_black', 'bracket_brown', 'bracket_white', 'connector',
                'metal_plate', 'tubes'),
    archives=(), top_folders=('MPDD', 'mpdd'), marker='train', scan=layout.scan_folders,
    layout_help='<root>/<category>/train/good, test/<type>, ground_truth/<type>/<name>_mask.png',
    download_page='https://github.com/stepanje/MPDD', licence='see the download page',
    inp_size=256)
