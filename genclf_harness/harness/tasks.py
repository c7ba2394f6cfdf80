"""Task helpers named by the YAMLs in ``genclf_harness/tasks/`` (``custom_dataset: !function ...``).

Default tasks (``genclf_<name>``) get rows with the plain prompt; lm-eval adds its own few-shot
demonstrations. Strategy tasks (``genclf_harness/tasks/strategies/``) pass ``strategy`` in ``dataset_kwargs`` (a
name such as ``sim3_def``, or a mapping of `PromptStrategy` fields); their rows carry the whole
rendered prompt, demonstrations included, and run with ``num_fewshot: 0``.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from typing import Any, Literal

from genclf_harness.data import get_spec, load_split
from genclf_harness.data.loader import resolve_data_root
from genclf_harness.data.specs import DatasetSpec
from genclf_harness.prompts import ClassificationPrompt, PromptStrategy, RenderedPrompt

Decoding = Literal["ppl", "gen"]


def strategy_task_name(
    dataset: str, strategy: str | Mapping[str, Any] | PromptStrategy, decoding: Decoding = "ppl"
) -> str:
    """``("sst2", "sim3", "gen")`` -> ``"genclf_sst2_sim3_gen"``; the zero-shot natural strategy
    is the default task (``genclf_sst2``, ``genclf_sst2_gen``)."""
    name = PromptStrategy.from_value(strategy).name
    parts = ["genclf", dataset] + ([] if name == "zero" else [name]) + (["gen"] if decoding == "gen" else [])
    return "_".join(parts)


STRATEGY_TEMPLATES: dict[tuple[Decoding, bool], str] = {
    ("ppl", False): "_strategy_yaml",
    ("ppl", True): "_strategy_unc_yaml",
    ("gen", False): "_strategy_gen_yaml",
    ("gen", True): "_strategy_gen_unc_yaml",
}
"""(decoding, the strategy has an "uncertain" answer) -> its template under ``genclf_harness/tasks/strategies/``."""
CHANNEL_TEMPLATE = "_strategy_channel_yaml"
"""The template of channel strategies (scored only): one context per label, the input scored after it."""


def strategy_task_yaml(task: str, dataset: str, strategy: str | Mapping[str, Any] | PromptStrategy,
                       decoding: Decoding, template_dir: str) -> str:
    """The YAML of a strategy task: its template (from ``template_dir``), data set and strategy."""
    chosen = PromptStrategy.from_value(strategy)
    if chosen.channel and decoding != "ppl":
        raise ValueError(f"task {task!r}: the channel strategy {chosen.name!r} is scored only, it has no generative form")
    template = CHANNEL_TEMPLATE if chosen.channel else STRATEGY_TEMPLATES[decoding, chosen.uncertainty]
    return (f"task: {task}\ninclude: {yaml_scalar(f'{template_dir}/{template}')}\n"
            f"dataset_kwargs:\n  dataset: {yaml_scalar(dataset)}\n  strategy: {chosen.name}\n")


def yaml_scalar(value: str) -> str:
    """``value`` as it is when YAML reads it back unchanged, else quoted (a JSON string is YAML):
    ``sst2`` stays bare, ``true``, ``null``, ``1.0`` or a path with spaces are quoted."""
    import yaml

    plain = re.fullmatch(r"[A-Za-z0-9_./-]+", value) is not None and yaml.safe_load(value) == value
    return value if plain else json.dumps(value)


def sweep_task_names(dataset: str) -> list[str]:
    """The tasks of the group ``genclf_<dataset>_strategies``: every swept strategy, scored then generated."""
    from genclf_harness.prompts import SWEEP_STRATEGIES

    return [strategy_task_name(dataset, name, decoding) for decoding in ("ppl", "gen") for name in SWEEP_STRATEGIES]


def _split_rows(dataset: str, split: str, data_dir: str | None) -> tuple[dict[str, Any], ...]:
    root = resolve_data_root(data_dir)
    return _cached_split_rows(dataset, split, None if root is None else str(root))


@functools.lru_cache(maxsize=16)
def _cached_split_rows(dataset: str, split: str, root: str | None) -> tuple[dict[str, Any], ...]:
    # Many strategy tasks of one data set load the same files in one run; rows are never mutated.
    return tuple(load_split(dataset, split, data_dir=root))


def load_classification(
    dataset: str,
    data_dir: str | None = None,
    strategy: str | Mapping[str, Any] | None = None,
    **_metadata: Any,
):
    """Load every split of a classification data set as a ``DatasetDict``.

    lm-eval calls this with the task's ``dataset_kwargs`` and ``metadata`` (and anything given to
    ``--metadata``) as keyword arguments; only ``dataset``, ``data_dir`` and ``strategy`` are ours.

    Without ``strategy`` each row keeps its fields and gains the plain prompt: ``instruction``,
    ``query``, ``choices``, ``gold``. With one, rows also get ``prompt`` (the whole user prompt),
    ``input``, ``target``, ``dataset``, ``strategy`` (its name) and ``demonstration_ids``, and
    ``instruction``/``query``/``choices``/``gold`` follow the strategy. The training split is the demonstration pool; its own
    rows are rendered without demonstrations (unless it is also the evaluated split).
    """
    import datasets

    spec = get_spec(dataset, data_dir)
    split_names = spec.splits or tuple(dict.fromkeys((spec.eval_split, spec.train_split)))
    if strategy is None:
        return datasets.DatasetDict({
            split: datasets.Dataset.from_list([_plain_row(spec, doc) for doc in _split_rows(dataset, split, data_dir)])
            for split in split_names
        })
    chosen = PromptStrategy.from_value(strategy)
    chosen.check(spec)  # e.g. definitions the data set lacks, "uncertain" in the channel direction
    pool = _split_rows(dataset, spec.train_split, data_dir)
    prompter = chosen.bind(spec, pool if chosen.needs_pool else None)
    pool_prompter = PromptStrategy(definitions=chosen.definitions, uncertainty=chosen.uncertainty,
                                   label_style=chosen.label_style, channel=chosen.channel).bind(spec)
    splits = {}
    for split in split_names:
        # The training split demonstrates, so its rows are rendered without demonstrations; a data
        # set evaluated on its only split draws them from its other rows (never the row itself).
        demonstrating = split == spec.train_split and split != spec.eval_split
        render = (pool_prompter if demonstrating else prompter).render
        rows = [_strategy_row(spec.name, doc, render(doc)) for doc in _split_rows(dataset, split, data_dir)]
        splits[split] = datasets.Dataset.from_list(rows)
    return datasets.DatasetDict(splits)


def _plain_row(spec: DatasetSpec, doc: dict[str, Any]) -> dict[str, Any]:
    prompt = ClassificationPrompt.render(spec, doc)
    return {**doc, "instruction": prompt.instruction, "query": prompt.query,
            "choices": list(prompt.choices), "gold": prompt.gold}


def _strategy_row(dataset: str, doc: dict[str, Any], rendered: RenderedPrompt) -> dict[str, Any]:
    return {
        **doc,
        "dataset": dataset,
        "strategy": rendered.strategy,
        "instruction": rendered.instruction,
        "query": rendered.query,
        "input": rendered.input,
        "prompt": rendered.prompt,
        "choices": list(rendered.choices),
        "gold": rendered.gold,
        "target": rendered.target,
        "demonstration_ids": list(rendered.demonstration_ids),
        **({"channel_contexts": list(rendered.contexts)} if rendered.channel else {}),
    }
