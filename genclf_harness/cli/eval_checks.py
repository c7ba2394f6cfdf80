"""``genclf-eval``'s checks of lm-eval's parsed arguments and of the data, run before any model work.

lm-eval 0.4.13 accepts values that fail only after the model has loaded (``--limit 0``,
``--batch_size 0``, a ``dtype`` torch does not have, a model folder that is not one, a model-arg
key the model does not take, a bad row of a data set), ignores a misspelt ``--metadata`` key, and
runs a whole evaluation whose results it then cannot save. Each check here raises
:class:`UsageError` (or the data layer's ``DataError``) with one line naming the value, the file
and line where there is one, and what to do. Model args: ``genclf_harness.cli.model_args``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from genclf_harness.cli.errors import UsageError, did_you_mean
from genclf_harness.cli.model_args import check_model_args
from genclf_harness.cli.results_file import check_output_path

GENCLF_METADATA_KEYS: dict[str, str] = {
    "data_dir": "the folder of local data sets (instead of GENCLF_DATA_DIR)",
    "inductive_docs": "training documents scored for the *_ind and label-shift metrics (default 100)",
    "threshold": "ProcessBench: the P(correct) below which a step counts as the first error",
    "candidates": "best-of-N tasks: the JSONL file of sampled candidates",
    "conformal_alpha": "the miscoverage level of the conformal label sets (default 0.1)",
    "conformal_calibration": "where the conformal sets' calibration documents come from: train (default) or cross_fit",
}
"""Every task-metadata key a genclf task reads (lm-eval also passes the model's ``pretrained``)."""


def check_arguments(args: Any, tasks: list[str]) -> None:
    """All checks that need nothing but the parsed arguments; the first failure raises."""
    if getattr(args, "output_path", None):
        check_output_path(str(args.output_path))
    _check_limit(getattr(args, "limit", None))
    _check_batch_size(getattr(args, "batch_size", None))
    shots = getattr(args, "num_fewshot", None)
    if shots is not None and int(shots) < 0:
        raise UsageError(f"--num_fewshot {shots}: must be 0 or more")
    _check_include_path(getattr(args, "include_path", None))
    metadata = getattr(args, "metadata", None)
    _check_metadata(metadata, tasks)
    check_model_args(getattr(args, "model", None), getattr(args, "model_args", None))
    check_data(tasks, metadata.get("data_dir") if isinstance(metadata, dict) else None)


def _check_limit(limit: Any) -> None:
    if limit is None:
        return
    if float(limit) <= 0:
        raise UsageError(f"--limit {limit}: must be positive (a number of documents per task, or a fraction "
                         "below 1 of each task's documents)")


def _check_batch_size(batch_size: Any) -> None:
    if batch_size is None:
        return
    text = str(batch_size).strip()
    head = text.split(":", 1)[0]
    if head == "auto":
        return
    try:
        value = int(head)
    except ValueError:
        raise UsageError(f"--batch_size {text}: must be a whole number or 'auto' (optionally 'auto:N')") from None
    if value < 1:
        raise UsageError(f"--batch_size {text}: must be 1 or more, or 'auto'")


def _check_include_path(include_path: Any) -> None:
    """lm-eval only logs a missing ``--include_path`` and goes on without the user's tasks."""
    paths = include_path.split(",") if isinstance(include_path, str) else list(include_path or [])
    for path in filter(None, (str(p).strip() for p in paths)):
        if not Path(path).expanduser().exists():
            raise UsageError(f"--include_path {path}: no such file or folder (a folder of task YAMLs, or one YAML)")


def _check_metadata(metadata: Any, tasks: list[str]) -> None:
    if not isinstance(metadata, dict) or not tasks or not all(t.startswith("genclf_") for t in tasks):
        return  # other tasks may read keys of their own (e.g. lm-eval's max_seq_lengths)
    known = sorted(GENCLF_METADATA_KEYS)
    for key in metadata:
        if key not in GENCLF_METADATA_KEYS and key != "pretrained":
            raise UsageError(f"--metadata key {key!r} is read by no genclf task{did_you_mean(key, known)} "
                             f"(keys: {', '.join(known)})")
    if "inductive_docs" in metadata:
        value = metadata["inductive_docs"]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise UsageError(f"--metadata inductive_docs {value!r}: must be a whole number, 0 or more")
    if "conformal_alpha" in metadata:
        value = metadata["conformal_alpha"]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
            raise UsageError(f"--metadata conformal_alpha {value!r}: must be a number between 0 and 1")
    if metadata.get("conformal_calibration", "train") not in ("train", "cross_fit"):
        raise UsageError(f"--metadata conformal_calibration {metadata['conformal_calibration']!r}: must be train "
                         "or cross_fit")
    if "data_dir" in metadata and not Path(str(metadata["data_dir"])).expanduser().is_dir():
        raise UsageError(f"--metadata data_dir {metadata['data_dir']!r}: no such folder")


def check_data(tasks: list[str], data_dir: str | None = None) -> None:
    """The data root and every classification data set the genclf tasks will read: ``meta.json``
    and the rows of the evaluated and the training split where they are local files (encoding,
    JSON, field types, NaN/inf, labels), so that a bad row fails now, not after the model loaded."""
    _check_verifier_sets(tasks, data_dir)
    names = dict.fromkeys(_datasets_of(tasks, data_dir))
    if not names:
        return
    from genclf_harness.data import get_spec, load_split
    from genclf_harness.data.root import resolve_data_root

    root = resolve_data_root(data_dir)  # a data root that is not a folder: the error names where it came from
    for name in names:
        spec = get_spec(name, data_dir)
        folder = Path(spec.folder) if spec.folder is not None else (root / name if root is not None else None)
        for split in dict.fromkeys((spec.eval_split, spec.train_split)):
            if folder is not None and (folder / f"{split}.jsonl").is_file():
                load_split(name, split, data_dir)  # hub copies are checked where they load


def _check_verifier_sets(tasks: list[str], data_dir: str | None) -> None:
    """Every row of the step-labelled splits (problem, steps, first wrong step), of the preference
    pairs and of the reasoning folders the tasks will read."""
    from genclf_harness.data.preference_sets import load_preference_pairs
    from genclf_harness.data.step_sets import load_step_rows, step_set_spec
    from genclf_harness.harness.local_tasks import preference_task, reasoning_task, step_task

    for folder in dict.fromkeys(found[0] for found in (preference_task(t, data_dir) for t in tasks) if found):
        load_preference_pairs(folder, None, data_dir)
    for folder in dict.fromkeys(found[0] for found in (reasoning_task(t, data_dir) for t in tasks) if found):
        if folder != "gsm8k":  # the built-in task reads its own files when it runs
            from genclf_harness.verifiers.genrm.reasoning_folder import folder_task

            folder_task(folder, data_dir)  # every row of every split, and every gold answer by the folder's rule

    for folder, split in dict.fromkeys(found for found in (step_task(t, data_dir) for t in tasks) if found):
        spec = step_set_spec(folder, data_dir)
        for member in spec.splits if split is None else (split,):
            load_step_rows(spec, member)


def _datasets_of(tasks: list[str], data_dir: str | None) -> Iterator[str]:
    """The classification data sets behind the requested ``genclf_*`` tasks (built-in or local)."""
    from genclf_harness.data.specs import SPECS
    from genclf_harness.harness.local_tasks import local_task

    for task in tasks:
        if not task.startswith("genclf_"):
            continue
        found = local_task(task, data_dir)  # a local data set's task (another family's folder raises)
        if found is not None:
            yield found[0]
            continue
        parts = task.removeprefix("genclf_").split("_")
        builtin = next(("_".join(parts[:cut]) for cut in range(len(parts), 0, -1)
                        if "_".join(parts[:cut]) in SPECS), None)
        if builtin is not None:  # genclf_sst2, genclf_sst2_cot_gen, genclf_sst2_strategies ...
            yield builtin
