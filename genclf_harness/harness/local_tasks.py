"""lm-eval tasks for local data sets of your own, written for the run that asks for them.

The built-in data sets have their task YAMLs under ``genclf_harness/tasks/``; a local data set
(``genclf_harness.data.local``) gets the same tasks under the same names when a run asks for them:
``genclf_<name>`` (scored, the classification template), ``genclf_<name>_gen``, the strategy tasks
``genclf_<name>_<strategy>[_gen]`` and the group ``genclf_<name>_strategies``. ``genclf-eval`` and the
``genclf-bench`` commands put ``local_include_path(tasks)`` on lm-eval's include path.

A step-labelled folder (``processbench``, or ``meta.json`` with ``"kind": "steps"``;
:mod:`genclf_harness.data.step_sets`) gets ``genclf_<name>_<split>`` for each of its splits (the
step-judge template, ``genclf_harness/tasks/verifiers/_step_task_template_yaml``) and the group ``genclf_<name>``,
the unweighted mean of the splits' figures (ProcessBench's average F1). A preference folder
(``llmbar``, or ``"kind": "preference"``; :mod:`genclf_harness.data.preference_sets`) gets
``genclf_<name>`` (pointwise, IPO) and ``genclf_<name>_pairwise`` (both orders) over its evaluated
split, from the templates ``genclf_harness/tasks/verifiers/_preference_{pointwise,pairwise}_template_yaml``. A
reasoning folder (``gsm8k``, or ``"kind": "reasoning"``; :mod:`genclf_harness.data.reasoning_sets`)
gets ``genclf_<name>_verify`` and ``genclf_<name>_bon`` (``_reasoning_{verify,bon}_template_yaml``).
"""

from __future__ import annotations

import atexit
import difflib
import functools
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

LOCAL_HEADER = "# Written for a local data set by genclf_harness.harness.local_tasks.\n"
STEP_TEMPLATE = "_step_task_template_yaml"


def family_task(task: str, data_dir: str | None = None) -> tuple[str, str, str | None] | None:
    """``(kind, folder, part)`` when ``task`` names a task of a verifier family's folder under the
    data root: ``genclf_<folder>`` (steps: the group; preference: pointwise),
    ``genclf_<folder>_<split>`` (steps), ``genclf_<folder>_pairwise`` (preference),
    ``genclf_<folder>_verify`` / ``_bon`` (reasoning); None otherwise."""
    from genclf_harness.data.folders import folder_kind

    root = _root_or_none(task, data_dir)
    if root is None:
        return None
    rest = task.removeprefix("genclf_")
    name, _, suffix = rest.rpartition("_")
    kind = folder_kind(root / rest) if rest else None
    if kind == "steps":
        return kind, rest, None
    if kind == "preference":
        return kind, rest, "pointwise"
    kind = folder_kind(root / name) if name else None
    if kind == "steps" or (kind == "preference" and suffix == "pairwise") or (
            kind == "reasoning" and suffix in ("verify", "bon")):
        return kind, name, suffix
    return None


def step_task(task: str, data_dir: str | None = None) -> tuple[str, str | None] | None:
    """``(folder, split)`` for ``genclf_<folder>_<split>`` of a step-labelled folder, ``(folder, None)``
    for its group ``genclf_<folder>`` (split names hold no ``_``)."""
    found = family_task(task, data_dir)
    return found[1:] if found and found[0] == "steps" else None


def preference_task(task: str, data_dir: str | None = None) -> tuple[str, str] | None:
    """``(folder, "pointwise" or "pairwise")`` for ``genclf_<folder>`` / ``genclf_<folder>_pairwise``."""
    found = family_task(task, data_dir)
    return found[1:] if found and found[0] == "preference" else None  # type: ignore[return-value]


def reasoning_task(task: str, data_dir: str | None = None) -> tuple[str, str] | None:
    """``(folder, "verify" or "bon")`` for ``genclf_<folder>_verify`` / ``genclf_<folder>_bon``."""
    found = family_task(task, data_dir)
    return found[1:] if found and found[0] == "reasoning" else None  # type: ignore[return-value]


def _root_or_none(task: str, data_dir: str | None) -> Any:
    from genclf_harness.data.root import resolve_data_root
    from genclf_harness.data.specs import DataError

    if not task.startswith("genclf_"):
        return None
    try:
        return resolve_data_root(data_dir)
    except DataError:
        return None


def _single_task_yaml(task: str, kind: str, folder: str, part: str, data_dir: str | None) -> dict[str, str]:
    """The YAML of a preference (``part``: pointwise, pairwise) or reasoning (verify, bon) folder's task:
    its template and the folder (the built-in ones, llmbar's and gsm8k's, ship as YAMLs)."""
    from genclf_harness.data.preference_sets import preference_set_spec
    from genclf_harness.data.reasoning_sets import reasoning_set_spec
    from genclf_harness.harness.tasks import yaml_scalar
    from genclf_harness.resources import tasks_dir

    if task in _builtin_task_names():
        return {}
    (preference_set_spec if kind == "preference" else reasoning_set_spec)(folder, data_dir)  # a bad meta.json: now
    template = yaml_scalar(str(tasks_dir() / "verifiers" / f"_{kind}_{part}_template_yaml"))
    key = "dataset" if kind == "preference" else "task"
    return {task: f"{LOCAL_HEADER}task: {task}\ninclude: {template}\ndataset_kwargs:\n  {key}: {yaml_scalar(folder)}\n"}


def _step_task_yamls(task: str, folder: str, split: str | None, data_dir: str | None) -> dict[str, str]:
    """The YAMLs of a step-labelled folder's task, or of its group and every member task."""
    from genclf_harness.data.specs import DataError
    from genclf_harness.data.step_sets import step_set_spec
    from genclf_harness.harness.tasks import yaml_scalar
    from genclf_harness.harness.verifier_tasks.stepwise import PROCESSBENCH_METRICS
    from genclf_harness.resources import tasks_dir

    spec = step_set_spec(folder, data_dir)
    template = yaml_scalar(str(tasks_dir() / "verifiers" / STEP_TEMPLATE))
    splits = spec.splits if split is None else (split,)
    unknown = [s for s in splits if s not in spec.splits]
    if unknown:
        raise DataError(f"task {task}: the step-labelled folder {spec.folder} has no split {unknown[0]!r} "
                        f"(splits: {', '.join(spec.splits)})")
    written: dict[str, str] = {}
    for member in splits:
        name = f"genclf_{folder}_{member}"
        if name not in _builtin_task_names():
            written[name] = (f"{LOCAL_HEADER}task: {name}\ninclude: {template}\ndataset_kwargs:\n"
                             f"  dataset: {yaml_scalar(folder)}\n  split: {yaml_scalar(member)}\n")
    if split is None:
        listed = "".join(f"  - genclf_{folder}_{member}\n" for member in spec.splits)
        metrics = "".join(f"  - metric: {metric}\n    aggregation: mean\n    weight_by_size: false\n"
                          for metric in PROCESSBENCH_METRICS)
        written[task] = (f"{LOCAL_HEADER}group: {task}\ntask:\n{listed}aggregate_metric_list:\n{metrics}"
                         "metadata:\n  version: 1.0\n")
    return written


def local_task(task: str, data_dir: str | None = None) -> tuple[str, Any, str] | None:
    """``(data set, strategy, decoding)`` when ``task`` names a task of a local data set:
    ``genclf_<name>``, ``genclf_<name>_<strategy>``, either with ``_gen``, or the group
    ``genclf_<name>_strategies`` (strategy None); built-in data sets have their YAMLs already."""
    from genclf_harness.data.local import OTHER_FAMILIES, local_spec
    from genclf_harness.data.specs import SPECS, DataError
    from genclf_harness.prompts import PromptStrategy

    if not task.startswith("genclf_") or family_task(task, data_dir):
        return None
    if task in _builtin_task_names():  # a local folder named sst2_bal3 does not take genclf_sst2_bal3 over
        if task.removeprefix("genclf_") in OTHER_FAMILIES:  # genclf_llmbar: its own family's folder
            return None
        shadowed = local_spec(task.removeprefix("genclf_"), data_dir)
        if shadowed is not None:
            logger.warning("%s is a built-in task; the local data set in %s cannot have that name (rename "
                           "its folder)", task, shadowed.folder)
        return None
    rest = task.removeprefix("genclf_")
    options = [(rest, "ppl")] + ([(rest.removesuffix("_gen"), "gen")] if rest.endswith("_gen") else [])
    if rest.endswith("_strategies"):
        options.insert(0, (rest.removesuffix("_strategies"), "group"))
    for body, decoding in options:
        parts = body.split("_")
        for cut in range(len(parts), 0, -1):  # the longest data set name first
            dataset, strategy_name = "_".join(parts[:cut]), "_".join(parts[cut:])
            if dataset in SPECS or (decoding == "group" and strategy_name):
                continue
            try:
                strategy = None if decoding == "group" else PromptStrategy.parse(strategy_name or "zero")
            except ValueError:
                continue
            spec = local_spec(dataset, data_dir)
            if spec is not None:
                clash = [name for name in (f"genclf_{dataset}", f"genclf_{dataset}_gen") if name in _builtin_task_names()]
                if clash:
                    raise DataError(f"local data set {dataset!r} ({spec.folder}): its task {clash[0]} is a built-in "
                                    "task, so its tasks would mix two data sets; rename the folder")
                return dataset, strategy, decoding
    return None


@functools.lru_cache(maxsize=1)
def _builtin_task_names() -> frozenset[str]:
    from genclf_harness.resources import tasks_dir

    return frozenset(path.stem for path in tasks_dir().rglob("*.yaml"))


def write_local_tasks(task_names: Sequence[str], folder: Path, data_dir: str | None = None) -> list[str]:
    """Write into ``folder`` the YAML of each requested task of a local data set (``local_task``),
    a group's member tasks with it; returns the task and group names written. A group leaves out
    the strategies that cannot run on the data set (``PromptStrategy.check``: label definitions its
    meta.json lacks, answers that could not be read apart), with a warning naming why."""
    from genclf_harness.data import get_spec
    from genclf_harness.harness.tasks import strategy_task_yaml, sweep_task_names, yaml_scalar
    from genclf_harness.resources import tasks_dir

    templates = str(tasks_dir() / "strategies")
    written: dict[str, str] = {}

    def task_yaml(task: str, dataset: str, strategy: Any, decoding: str) -> None:
        if strategy.name == "zero" and decoding == "ppl":  # the plain task: the classification template
            text = (f"task: {task}\nclass: !function genclf_harness.harness.classification_task."
                    f"GenclfClassificationTask\ndataset_kwargs:\n  dataset: {yaml_scalar(dataset)}\n")
        else:
            text = strategy_task_yaml(task, dataset, strategy, decoding, templates)  # type: ignore[arg-type]
        written[task] = LOCAL_HEADER + text

    for task in dict.fromkeys(task_names):
        family = family_task(task, data_dir)
        if family is not None:
            kind, source, part = family
            written.update(_step_task_yamls(task, source, part, data_dir) if kind == "steps"
                           else _single_task_yaml(task, kind, source, part, data_dir))  # type: ignore[arg-type]
            continue
        found = local_task(task, data_dir)
        if found is None:
            continue
        dataset, strategy, decoding = found
        if decoding != "group":
            task_yaml(task, dataset, strategy, decoding)
            continue
        members = []
        spec = get_spec(dataset, data_dir)
        for member in sweep_task_names(dataset):
            member_dataset, member_strategy, member_decoding = local_task(member, data_dir)  # type: ignore[misc]
            try:
                member_strategy.check(spec, generative=member_decoding == "gen")
            except ValueError as err:
                logger.warning("group %s leaves out %s: %s", task, member, err)
                continue
            task_yaml(member, member_dataset, member_strategy, member_decoding)
            members.append(member)
        listed = "".join(f"  - {member}\n" for member in members)
        written[task] = f"{LOCAL_HEADER}group: {task}\ntask:\n{listed}metadata:\n  version: 1.0\n"
    for task, text in written.items():
        (folder / f"{task}.yaml").write_text(text, encoding="utf-8")
    return list(written)


def local_include_path(task_names: Sequence[str], data_dir: str | None = None) -> list[str]:
    """``[folder]`` holding the YAMLs of the requested local data sets' tasks, or ``[]`` when none is
    asked for. The folder is temporary and removed when the process exits. ``data_dir`` (else
    ``$GENCLF_DATA_DIR``) is where the data sets are; the tasks find it the same way, from
    ``--metadata '{"data_dir": ...}'``."""
    folder = Path(tempfile.mkdtemp(prefix="genclf-local-tasks-"))
    try:
        written = write_local_tasks(task_names, folder, data_dir)
    except BaseException:  # a bad data set (or Ctrl-C) while writing: leave no folder behind
        shutil.rmtree(folder, ignore_errors=True)
        raise
    if not written:
        shutil.rmtree(folder, ignore_errors=True)
        return []
    atexit.register(functools.partial(shutil.rmtree, folder, ignore_errors=True))
    return [str(folder)]


def unmatched_hint(task_names: Sequence[str], data_dir: str | None = None) -> str | None:
    """A hint for requested ``genclf_*`` names that are neither built-in tasks nor tasks of a local
    data set (lm-eval itself only says "Tasks not found"), or None when all match."""
    from genclf_harness.data.local import list_local

    unknown = [name for name in dict.fromkeys(task_names) if name.startswith("genclf_")
               and name not in _builtin_task_names() and local_task(name, data_dir) is None
               and family_task(name, data_dir) is None]
    if not unknown:
        return None
    local = list_local(data_dir)
    root = data_dir or os.environ.get("GENCLF_DATA_DIR") or "GENCLF_DATA_DIR, not set"
    candidates = sorted(_builtin_task_names() | {f"genclf_{n}" for n in local})
    close = list(dict.fromkeys(match for name in unknown for match in difflib.get_close_matches(name, candidates, n=2)))
    return (f"{', '.join(unknown)}: no built-in genclf task, and no local data set of that name under the data "
            f"root ({root}; local data sets: {', '.join(local) or 'none'})"
            + (f"; did you mean {', '.join(close)}?" if close else "."))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m genclf_harness.harness.local_tasks --out DIR genclf_<name> ...``: write the tasks of
    local data sets into DIR, for ``lm_eval --include_path DIR`` where genclf-eval is not the runner."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m genclf_harness.harness.local_tasks", description=main.__doc__)
    parser.add_argument("--out", required=True, help="the folder to write the task YAMLs into (created)")
    parser.add_argument("--data_dir", default=None, help="the data root (default: $GENCLF_DATA_DIR)")
    parser.add_argument("tasks", nargs="+", help="task names, e.g. genclf_mydata genclf_mydata_strategies")
    args = parser.parse_args(argv)
    folder = Path(args.out)
    folder.mkdir(parents=True, exist_ok=True)
    written = write_local_tasks(args.tasks, folder, args.data_dir)
    hint = unmatched_hint(args.tasks, args.data_dir)
    if hint:
        parser.error(hint)
    print(f"wrote {len(written)} task YAML(s) to {folder}: {', '.join(written)}")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
