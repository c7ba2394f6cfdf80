"""Data set specifications and the one loader every task uses (local JSONL folder or the hub)."""

from genclf_harness.data.loader import DataError, load_split, resolve_data_root
from genclf_harness.data.local import list_local, spec_from_folder
from genclf_harness.data.specs import DatasetSpec, HubSource, get_spec, list_specs

__all__ = [
    "DataError",
    "DatasetSpec",
    "HubSource",
    "get_spec",
    "list_local",
    "list_specs",
    "load_split",
    "resolve_data_root",
    "spec_from_folder",
]
