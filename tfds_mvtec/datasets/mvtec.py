"""MVTec AD (Bergmann et al., CVPR 2019), and any folder in its layout (own products)."""

from tfds_mvtec import layout

MVTEC_AD = layout.Dataset(
    name='mvtec', title='MVTec AD', builder_name='mvtec_ad', categories=layout.CATEGORIES,
    archives=(layout.ARCHIVE_NAME,), top_folders=('mvtec_anomaly_detection',), marker='train',
    scan=layout.scan_folders,
    layout_help='<root>/<category>/train/good, test/<type>, ground_truth/<type>/<name>_mask.png',
    download_page=layout.DOWNLOAD_PAGE, licence='CC BY-NC-SA 4.0', inp_size=256)
