"""Datasets: raw formats in (``genrec data prepare``), a prepared directory out, and loading it.

Importing this package needs numpy and pyarrow only; polars is imported by the format readers
when preparing, never on the training/evaluation path.
"""

from genrec.data.cold_start import ColdStart, select_cold_items, write_cold_start
from genrec.data.dataset import PreparedDataset, load_prepared
from genrec.data.errors import DataError, DataFormatError, DownloadError, PreparedDatasetError
from genrec.data.paths import data_dir, dataset_dir
from genrec.data.registry import DATASETS, KnownDataset, get_dataset
from genrec.data.split import SPLIT_NAMES, LeaveOneOut, Split
from genrec.data.writer import build_item_table, write_prepared, write_prepared_arrays

__all__ = [
    "DATASETS",
    "SPLIT_NAMES",
    "ColdStart",
    "DataError",
    "DataFormatError",
    "DownloadError",
    "KnownDataset",
    "LeaveOneOut",
    "PreparedDataset",
    "PreparedDatasetError",
    "Split",
    "build_item_table",
    "data_dir",
    "dataset_dir",
    "get_dataset",
    "load_prepared",
    "select_cold_items",
    "write_cold_start",
    "write_prepared",
    "write_prepared_arrays",
]
