"""BTAD, three industrial products (Mishra et al., ISIE 2021): ok/ko folders, BMP or PNG."""

from tfds_mvtec import layout

BTAD = layout.Dataset(
    name='btad', title='BTAD', builder_name='btad', categories=('01', '02', '03'),
    archives=('btad.zip',), top_folders=('BTech_Dataset_transformed', 'btad'), marker='train',
    scan=layout.scan_folders,
    layout_help='<root>/<category>/train/ok, test/ok and test/ko, ground_truth/ko/<name>.png '
                'or .bmp',
    download_page='https://avires.dimi.uniud.it/papers/btad/btad.zip',
    licence='see the download page', inp_size=256)
