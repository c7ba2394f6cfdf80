"""``genclf-eval``: lm-eval's command line with this package's models, tasks and manifest.

Same flags and output as ``lm_eval``. On top of it:
- the genclf models (``genclf-hf`` ...) are registered;
- this package's ``tasks/`` folder is on the include path (a user's ``--include_path`` is kept);
- ``pretrained=default`` in ``--model_args`` means the embedded default model (any ``--model``);
- ``--tasks genclf_<name>`` (scored), ``genclf_<name>_gen`` (generated answers), the strategy tasks
  ``genclf_<name>_<strategy>[_gen]`` and the group ``genclf_<name>_strategies`` work for a local data
  set ``<name>`` of your own under ``$GENCLF_DATA_DIR`` (``genclf_harness.data.local``), as for the
  built-in ones: their YAMLs are written into a temporary folder put on the include path for the run;
- every results file gets a ``genclf_manifest`` (see ``genclf_harness.harness.manifest``).

``accelerate launch -m genclf_harness.cli.eval ...`` works the same way.
"""

from __future__ import annotations

import functools
import json
import re
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

_DEFAULT_PRETRAINED = re.compile(r"(^|,)\s*pretrained\s*=\s*default\s*(?=,|$)")


def rewrite_default_model(argv: Sequence[str]) -> list[str]:
    """Replace ``pretrained=default`` in ``--model_args`` by the default model's local folder."""
    out = list(argv)
    for i, arg in enumerate(out):
        if arg == "--model_args" and i + 1 < len(out):
            index = i + 1
        elif arg.startswith("--model_args="):
            index = i
        else:
            continue
        value = out[index]
        if _DEFAULT_PRETRAINED.search(value):
            from genclf_harness.backends.default_model import ensure_default_model

            folder = str(ensure_default_model())
            out[index] = _DEFAULT_PRETRAINED.sub(lambda m: f"{m.group(1)}pretrained={folder}", value)
    return out


def install_manifest_hook() -> None:
    """Make lm-eval's ``evaluate`` add the genclf manifest to the results it returns."""
    import lm_eval.evaluator as evaluator

    if getattr(evaluator.evaluate, "_genclf_manifest", False):
        return
    original = evaluator.evaluate

    @functools.wraps(original)
    def evaluate_with_manifest(lm, task_dict, *args, **kwargs):
        results = original(lm, task_dict, *args, **kwargs)
        if results is not None:
            from genclf_harness.harness.manifest import MANIFEST_KEY, build_manifest
            from genclf_harness.harness.metrics import FITTED, annotate_samples

            for task_samples in (results.get("samples") or {}).values():
                annotate_samples(task_samples)
            manifest = build_manifest(lm, task_dict)
            for task, fits in FITTED.items():
                if task in manifest["tasks"]:
                    manifest["tasks"][task]["calibration"] = fits
            FITTED.clear()
            results[MANIFEST_KEY] = manifest
        return results

    evaluate_with_manifest._genclf_manifest = True  # type: ignore[attr-defined]
    evaluator.evaluate = evaluate_with_manifest


LOCAL_HEADER = "# Written by genclf-eval for a local data set (genclf_harness/cli/eval.py).\n"


def local_task(task: str) -> tuple[str, Any, str] | None:
    """``(data set, strategy, decoding)`` when ``task`` names a task of a local data set:
    ``genclf_<name>``, ``genclf_<name>_<strategy>``, either with ``_gen``, or the group
    ``genclf_<name>_strategies`` (strategy None); built-in data sets have their YAMLs already."""
    from genclf_harness.data.local import local_spec
    from genclf_harness.data.specs import SPECS
    from genclf_harness.prompts import PromptStrategy

    if not task.startswith("genclf_"):
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
            if local_spec(dataset) is not None:
                return dataset, strategy, decoding
    return None


def write_local_tasks(task_names: Sequence[str], folder: Path) -> list[str]:
    """Write into ``folder`` the YAML of each requested task of a local data set (``local_task``),
    a group's member tasks with it; returns the task and group names written. A group leaves out
    the strategies that state label definitions when the data set's meta.json gives none."""
    from genclf_harness.data import get_spec
    from genclf_harness.harness.tasks import strategy_task_yaml, sweep_task_names
    from genclf_harness.resources import tasks_dir

    templates = str(tasks_dir() / "strategies")
    written: dict[str, str] = {}

    def task_yaml(task: str, dataset: str, strategy: Any, decoding: str) -> None:
        if strategy.name == "zero" and decoding == "ppl":  # the plain task: the classification template
            text = (f"task: {task}\nclass: !function genclf_harness.harness.classification_task."
                    f"GenclfClassificationTask\ndataset_kwargs:\n  dataset: {json.dumps(dataset)}\n")
        else:
            text = strategy_task_yaml(task, dataset, strategy, decoding, templates)  # type: ignore[arg-type]
        written[task] = LOCAL_HEADER + text

    for task in dict.fromkeys(task_names):
        found = local_task(task)
        if found is None:
            continue
        dataset, strategy, decoding = found
        if decoding != "group":
            task_yaml(task, dataset, strategy, decoding)
            continue
        members = []
        has_definitions = bool(get_spec(dataset).definitions)
        for member in sweep_task_names(dataset):
            member_dataset, member_strategy, member_decoding = local_task(member)  # type: ignore[misc]
            if member_strategy.definitions and not has_definitions:
                continue  # the definition strategies need 'definitions' in meta.json
            task_yaml(member, member_dataset, member_strategy, member_decoding)
            members.append(member)
        listed = "".join(f"  - {member}\n" for member in members)
        written[task] = f"{LOCAL_HEADER}group: {task}\ntask:\n{listed}metadata:\n  version: 1.0\n"
    for task, text in written.items():
        (folder / f"{task}.yaml").write_text(text, encoding="utf-8")
    return list(written)


def _requested_tasks(tasks: str | Sequence[str] | None) -> list[str]:
    if not tasks:
        return []
    items = [tasks] if isinstance(tasks, str) else list(tasks)
    return [name.strip() for item in items for name in str(item).split(",") if name.strip()]


def main(argv: Sequence[str] | None = None) -> None:
    from lm_eval._cli import HarnessCLI
    from lm_eval.utils import setup_logging

    from genclf_harness.harness.registry import register
    from genclf_harness.resources import tasks_dir

    register()
    install_manifest_hook()
    setup_logging()
    args_in = list(sys.argv[1:] if argv is None else argv)
    # HarnessCLI reads sys.argv itself (it inserts the legacy "run" subcommand there).
    sys.argv = [sys.argv[0] if sys.argv else "genclf-eval", *rewrite_default_model(args_in)]
    parser = HarnessCLI()
    args = parser.parse_args()
    if hasattr(args, "include_path"):
        user_paths = [p for p in (args.include_path or "").split(",") if p] if isinstance(
            args.include_path, str
        ) else list(args.include_path or [])
        args.include_path = [str(tasks_dir()), *user_paths]
    with tempfile.TemporaryDirectory(prefix="genclf-local-tasks-") as local_tasks:
        if hasattr(args, "include_path") and write_local_tasks(_requested_tasks(getattr(args, "tasks", None)),
                                                               Path(local_tasks)):
            args.include_path.append(local_tasks)
        parser.execute(args)


if __name__ == "__main__":
    main()
