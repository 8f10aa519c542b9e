"""Data for VPT tasks: built-in data sets (fetched once, cached) and users' own image data.

    from vptune.data import load_data
    cfg = timm.data.resolve_data_config({}, model=backbone)       # size and normalisation come from the backbone
    splits = load_data("fashion-mnist", img_size=112, mean=cfg["mean"], std=cfg["std"], seed=0)
    splits.train, splits.val, splits.trainval, splits.test        # (3 x 112 x 112 float32, int label) items
    splits.describe()                                             # JSON-able record of what was loaded

Modules: `builtin` (fetch + cache), `formats` (users' layouts), `splits` (seeded stratified sampling),
`transforms` (recipes), `datasets` (torch datasets, DataSplits), `load` (load_data = read_data + TaskData.datasets).
"""
from .builtin import BUILTIN_DATASETS, builtin_name
from .datasets import ArrayDataset, DataSplits, FileDataset, Sample, collate, decode_image, read_image, MAX_PIXELS
from .errors import DataError, DataWarning, FetchError
from .formats import expand_image_paths
from .load import TaskData, load_data, read_data
from .transforms import RANDOM_RECIPES, build_transform

__all__ = ["load_data", "read_data", "TaskData", "DataSplits", "BUILTIN_DATASETS", "builtin_name", "DataError",
           "DataWarning", "FetchError", "ArrayDataset", "FileDataset", "Sample", "collate", "read_image",
           "decode_image", "MAX_PIXELS", "RANDOM_RECIPES", "build_transform", "expand_image_paths"]
