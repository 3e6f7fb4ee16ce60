"""The datasets tfds_mvtec builds, by name: MVTec AD (and any folder in its layout),
MPDD, BTAD, VisA, MVTec LOCO AD and MVTec AD 2. Each module describes one layout."""

from typing import Dict

from tfds_mvtec.datasets.btad import BTAD
from tfds_mvtec.datasets.loco import LOCO
from tfds_mvtec.datasets.mpdd import MPDD
from tfds_mvtec.datasets.mvtec import MVTEC_AD
from tfds_mvtec.datasets.mvtec_ad2 import MVTEC_AD2
from tfds_mvtec.datasets.visa import VISA
from tfds_mvtec.layout import Dataset

DATASETS: Dict[str, Dataset] = {d.name: d for d in (MVTEC_AD, MPDD, BTAD, VISA, LOCO, MVTEC_AD2)}
