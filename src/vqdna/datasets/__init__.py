"""Downstream datasets of stage 3: the registry (`config/datasets*.tsv`), loaders for each
source format, validation, and the `vqdna prepare-dataset` stage that writes
`results/datasets/{dataset}/{train,dev,test}.parquet` for the fine-tuning jobs."""

from .registry import DatasetSpec, load_registry, dataset_names, get_spec  # noqa: F401
from .splits import SPLITS, Split  # noqa: F401
