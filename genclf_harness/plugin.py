"""genclf-harness as an lm-eval plugin: what ``genclf-eval`` adds, for plain ``lm_eval`` too.

Importing this module installs everything once (a second import, or a second :func:`install`, does
nothing):

- the models ``genclf-hf``, ``genclf-vllm``, ``genclf-served`` and genclf's metric names in
  lm-eval's registries (``genclf_harness.harness.registry``);
- ``pretrained=default`` (the embedded default model) wherever lm-eval takes model arguments: the
  parsed run configuration (``--model_args``, ``-a``, several ``key=value`` tokens, a JSON object,
  a ``--config`` file all end up there) and every model built from arguments
  (``LM.create_from_arg_string`` / ``create_from_arg_obj``, so ``simple_evaluate`` too);
- at the run configuration, before any model work: the checks of arguments and data
  (``genclf_harness.cli.eval_checks``), genclf's task folder on the include path unless lm-eval
  finds it through the ``lm_eval.tasks`` entry point itself (so no task is indexed twice), and
  the tasks of local data sets under ``$GENCLF_DATA_DIR`` (``genclf_harness.harness.local_tasks``);
- the results manifest, ``--calibrate`` / ``--circular`` (``GENCLF_CALIBRATE=1`` /
  ``GENCLF_CIRCULAR=1`` where the flags cannot be given), atomic results files, and this package's
  log records beside lm-eval's.

How it gets imported:

- lm-eval 0.4.13 has no plugin loading: ``genclf-eval`` imports this module, then runs lm-eval's
  own command line; so does ``python -c "import genclf_harness.plugin; from lm_eval.__main__
  import cli_evaluate; cli_evaluate()" ...``;
- lm-eval after 0.4.13 (PR #4013): ``lm_eval run --plugins genclf_harness.plugin ...`` or
  ``LM_EVAL_PLUGINS=genclf_harness.plugin``. lm-eval imports plugins inside ``simple_evaluate``,
  after it has built the run configuration and the task index: models, ``pretrained=default``,
  the entry-point tasks, the manifest and the logs work; the early checks and local data sets'
  tasks do not (give those with ``--include_path``: ``python -m genclf_harness.harness.local_tasks``
  writes them), and ``genclf-eval`` stays the command that does all of it.
"""

from __future__ import annotations

import functools
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from genclf_harness.logs import CurrentStderrHandler

logger = logging.getLogger("genclf_harness")

_installed = False

CHOICE_FLAGS = {"--calibrate": False, "--circular": False}
"""genclf-eval's own flags (unknown to lm-eval) for arbitrary multiple-choice tasks: ``--calibrate``
adds genclf's calibrated metrics (``genclf_harness.harness.choice_calibration``), ``--circular``
CircularEval over option rotations (``genclf_harness.harness.circular_eval``). Plain ``lm_eval``
sets them through ``GENCLF_CALIBRATE`` / ``GENCLF_CIRCULAR``."""

_FLAG_ENV = {"--calibrate": "GENCLF_CALIBRATE", "--circular": "GENCLF_CIRCULAR"}


def install() -> None:
    """Install every hook (idempotent: a plugin imported twice changes nothing the second time)."""
    global _installed
    if _installed:
        logger.debug("genclf_harness.plugin: already installed")
        return
    from genclf_harness.cli.results_file import install_safe_save
    from genclf_harness.harness.registry import register

    register()
    install_manifest_hook()
    _install_config_hook()
    _install_model_hook()
    install_safe_save()
    show_package_logs()
    for flag, variable in _FLAG_ENV.items():
        if _truthy(os.environ.get(variable)):
            CHOICE_FLAGS[flag] = True
    _installed = True


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


# -- pretrained=default ------------------------------------------------------------------------


def _install_model_hook() -> None:
    """Every model lm-eval builds from arguments sees the default model's folder, not ``default``."""
    from lm_eval.api.model import LM

    from genclf_harness.backends.default_model import resolve_model_args

    for name in ("create_from_arg_string", "create_from_arg_obj"):
        bound = LM.__dict__.get(name)
        function = getattr(bound, "__func__", None)
        if function is None or getattr(function, "_genclf", False):
            continue

        def create(cls: type, arguments: Any, additional_config: dict | None = None, *, _function: Any = function) -> Any:
            return _function(cls, resolve_model_args(arguments), additional_config)

        create.__name__ = create.__qualname__ = name
        create.__doc__ = function.__doc__
        create._genclf = True  # type: ignore[attr-defined]
        setattr(LM, name, classmethod(create))


# -- the run configuration ---------------------------------------------------------------------


def _install_config_hook() -> None:
    """genclf's part of a run happens when lm-eval has parsed its configuration, whatever form the
    arguments came in: ``EvaluatorConfig._configure`` ends every ``from_cli`` and ``from_config``."""
    try:
        from lm_eval.config.evaluate_config import EvaluatorConfig
    except ImportError:  # an lm-eval without a run configuration object: genclf-eval cannot hook it
        logger.warning("genclf_harness.plugin: this lm-eval has no EvaluatorConfig; pretrained=default works, the "
                       "early checks and local data sets' tasks do not")
        return
    original = EvaluatorConfig._configure
    if getattr(original, "_genclf", False):
        return

    @functools.wraps(original)
    def configure(self: Any) -> Any:
        configured = original(self)
        prepare_run(self)
        return configured

    configure._genclf = True  # type: ignore[attr-defined]
    EvaluatorConfig._configure = configure  # type: ignore[method-assign]


def prepare_run(config: Any) -> None:
    """What genclf does to a parsed lm-eval run configuration before any model or data work."""
    from genclf_harness.backends.default_model import resolve_model_args
    from genclf_harness.cli.eval_checks import check_arguments

    user_metadata = _user_metadata(config)
    config.model_args = resolve_model_args(config.model_args)
    if isinstance(config.metadata, dict):  # lm-eval passes the model's arguments to the tasks too
        config.metadata = resolve_model_args(config.metadata)
    requested = requested_tasks(config.tasks)
    check_arguments(_Checked(config, user_metadata), requested)
    config.include_path = include_paths(config.include_path, requested, user_metadata.get("data_dir"))


class _Checked:
    """The configuration as the checks read it: ``metadata`` is what the user gave (lm-eval merges
    the model arguments into it, which are checked as model arguments)."""

    def __init__(self, config: Any, metadata: dict[str, Any]) -> None:
        self._config = config
        self.metadata = metadata

    def __getattr__(self, name: str) -> Any:
        return getattr(self._config, name, None)


def _user_metadata(config: Any) -> dict[str, Any]:
    metadata = config.metadata if isinstance(config.metadata, dict) else {}
    model_args = config.model_args if isinstance(config.model_args, dict) else {}
    return {key: value for key, value in metadata.items() if key not in model_args or model_args[key] != value}


def requested_tasks(tasks: str | Sequence[str] | None) -> list[str]:
    if not tasks:
        return []
    items = [tasks] if isinstance(tasks, str) else list(tasks)
    return [name.strip() for item in items for name in str(item).split(",") if name.strip()]


def include_paths(include_path: Any, requested: Sequence[str], data_dir: str | None = None) -> list[str]:
    """The include path of a run: genclf's task folder first (unless lm-eval already indexes it from
    the entry point), the user's folders after it (theirs win on a name both define, and lm-eval
    says so), then the folder with the requested local data sets' tasks."""
    from genclf_harness.harness.local_tasks import local_include_path, unmatched_hint
    from genclf_harness.resources import tasks_dir

    user = [p for p in include_path.split(",") if p] if isinstance(include_path, str) else list(include_path or [])
    ours = [] if lm_eval_discovers_genclf_tasks() else [str(tasks_dir())]
    for name, (theirs, mine) in sorted(overridden_tasks(user).items()):
        logger.warning("genclf-eval: task %s is defined by your %s and by genclf-harness (%s); yours is the one "
                       "that runs (rename it to run both)", name, theirs, mine)
    paths = [*ours, *user, *local_include_path(requested, data_dir)]
    hint = None if user else unmatched_hint(requested, data_dir)
    if hint:  # lm-eval will say "Tasks not found"; this says where genclf looked
        logger.warning("genclf-eval: %s", hint)
    return paths


_TASK_LINE = re.compile(r"^task:\s*['\"]?([A-Za-z0-9_.-]+)['\"]?\s*(?:#.*)?$", re.MULTILINE)


def overridden_tasks(user_paths: Sequence[str]) -> dict[str, tuple[str, str]]:
    """genclf task names that a YAML under the user's include paths defines too: name -> (their file,
    ours). lm-eval lets the later path win and logs one line; this says which side that is."""
    from genclf_harness.resources import tasks_dir

    if not user_paths:
        return {}

    def names(paths: Sequence[Path]) -> dict[str, str]:
        found: dict[str, str] = {}
        for root in paths:
            files = [root] if root.is_file() else sorted(root.rglob("*.yaml")) if root.is_dir() else []
            for file in files:
                try:
                    text = file.read_text(encoding="utf-8")
                except (OSError, UnicodeDecodeError):
                    continue
                for match in _TASK_LINE.finditer(text):
                    found.setdefault(match.group(1), str(file))
        return found

    ours = names([tasks_dir()])
    theirs = names([Path(p).expanduser() for p in user_paths])
    return {name: (theirs[name], ours[name]) for name in theirs if name in ours}


def lm_eval_discovers_genclf_tasks() -> bool:
    """Whether this lm-eval indexes genclf's task folder itself, from the ``lm_eval.tasks`` entry
    point (lm-eval PR #4015: ``discover_plugin_task_paths``)."""
    try:
        from lm_eval.tasks.manager import discover_plugin_task_paths  # type: ignore[attr-defined]
    except ImportError:
        return False
    from genclf_harness.resources import tasks_dir

    ours = tasks_dir().resolve()
    try:
        return any(Path(path).resolve() == ours for path in discover_plugin_task_paths())
    except Exception:  # noqa: BLE001 - a discovery that fails indexes nothing of ours
        return False


# -- results, logs ------------------------------------------------------------------------------


def install_manifest_hook() -> None:
    """Make lm-eval's ``evaluate`` add the genclf manifest to the results it returns (and apply
    ``--calibrate`` / ``--circular`` to the task dictionary before any scoring)."""
    import lm_eval.evaluator as evaluator

    if getattr(evaluator.evaluate, "_genclf_manifest", False):
        return
    original = evaluator.evaluate

    @functools.wraps(original)
    def evaluate_with_manifest(lm: Any, task_dict: Any, *args: Any, **kwargs: Any) -> Any:
        from genclf_harness.cli.errors import UsageError

        try:  # before any scoring
            check_ranks_agree(task_dict)
            if CHOICE_FLAGS["--calibrate"]:
                from genclf_harness.harness.choice_calibration import calibrate_choice_tasks

                calibrate_choice_tasks(task_dict)
            if CHOICE_FLAGS["--circular"]:
                from genclf_harness.harness.circular_eval import add_circular

                add_circular(task_dict)
        except ValueError as err:
            raise UsageError(str(err)) from None
        results = original(lm, task_dict, *args, **kwargs)
        if results is not None:
            from genclf_harness.harness.manifest import MANIFEST_KEY, collect_manifest

            results[MANIFEST_KEY] = collect_manifest(lm, task_dict, results)
        return results

    evaluate_with_manifest._genclf_manifest = True  # type: ignore[attr-defined]
    evaluator.evaluate = evaluate_with_manifest


def check_ranks_agree(task_dict: Any) -> None:
    """Under data parallelism every rank must evaluate the same tasks (lm-eval gathers each task's
    documents from all ranks and would wait for ever on a task one rank lacks): the ranks exchange
    their task lists before any scoring, and a disagreement is an error naming both lists."""
    import sys

    distributed = sys.modules.get("torch.distributed")
    if distributed is None or not distributed.is_available() or not distributed.is_initialized():
        return
    world = distributed.get_world_size()
    if world < 2:
        return
    from genclf_harness.cli.errors import UsageError
    from genclf_harness.harness.manifest import task_names

    mine = task_names(task_dict)
    every: list[Any] = [None] * world
    distributed.all_gather_object(every, mine)
    for rank, theirs in enumerate(every):
        if theirs != every[0]:
            raise UsageError(f"the ranks disagree on the tasks to evaluate: rank 0 has {', '.join(every[0]) or 'none'}, "
                             f"rank {rank} has {', '.join(theirs) or 'none'} (give every rank the same --tasks, "
                             "data root and include path); nothing was scored")


def show_package_logs() -> None:
    """Print this package's log records (truncated prompts, left-out metrics ...) as lm-eval prints
    its own: lm-eval's ``setup_logging`` gives only the ``lm_eval`` logger a handler."""
    package_logger = logging.getLogger("genclf_harness")
    if package_logger.handlers or logging.getLogger().handlers:
        return  # configured already, here or at the root (records propagate there)
    handler = CurrentStderrHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-8s [%(name)s:%(lineno)d] %(message)s",
                                           datefmt="%Y-%m-%d:%H:%M:%S"))
    package_logger.addHandler(handler)
    package_logger.setLevel(logging.getLogger("lm_eval").getEffectiveLevel())


install()
