"""Task helpers named by the YAMLs in ``tasks/`` (``custom_dataset: !function ...``)."""

from __future__ import annotations

from typing import Any

from genclf_harness.data import get_spec, load_split
from genclf_harness.prompts import ClassificationPrompt


def load_classification(dataset: str, data_dir: str | None = None, **_metadata: Any):
    """Load every split of a classification data set as a ``DatasetDict``.

    lm-eval calls this with the task's ``dataset_kwargs`` and ``metadata`` (and anything given to
    ``--metadata``) as keyword arguments; only ``dataset`` and ``data_dir`` are ours. Each row keeps
    its fields and gains the rendered prompt: ``instruction``, ``query``, ``choices``, ``gold``.
    """
    import datasets

    spec = get_spec(dataset)
    splits = {}
    for split in spec.splits or dict.fromkeys((spec.eval_split, spec.train_split)):
        rows = []
        for doc in load_split(dataset, split, data_dir=data_dir):
            prompt = ClassificationPrompt.render(spec, doc)
            rows.append(
                {
                    **doc,
                    "instruction": prompt.instruction,
                    "query": prompt.query,
                    "choices": list(prompt.choices),
                    "gold": prompt.gold,
                }
            )
        splits[split] = datasets.Dataset.from_list(rows)
    return datasets.DatasetDict(splits)
