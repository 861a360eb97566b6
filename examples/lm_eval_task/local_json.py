"""Load the JSONL files of a task from this folder, wherever lm-eval is run from.

``dataset_path: json`` with ``dataset_kwargs: {data_files: ...}`` reads paths relative to the
working directory; a task that names this function as its ``custom_dataset`` gets them relative
to the folder of this file instead.
"""

from pathlib import Path

import datasets

HERE = Path(__file__).resolve().parent


def load(data_files: dict[str, str], **metadata) -> datasets.DatasetDict:
    """``{split: file}`` (relative to this folder) as a DatasetDict; lm-eval's metadata is ignored."""
    files = {split: str(HERE / name) for split, name in data_files.items()}
    return datasets.load_dataset("json", data_files=files)
