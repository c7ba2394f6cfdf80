"""genclf-harness as an lm-eval plugin: entry points as importlib.metadata sees them (the editable
install, a built wheel, a second real plugin installed beside it), the plugin module, every form
lm-eval 0.4.13 takes model arguments in, the metric names, and lm-eval objects built by keyword.

lm-eval 0.4.13 (CI's) does not discover entry points itself; lm-eval's next release does (PRs #4013
to #4015). Where a test needs that discovery it resolves each ``lm_eval.tasks`` entry point as
PR #4015 does (``importlib.util.find_spec(value)``, the package's first search location) and gives
it to genclf the way that lm-eval would (``lm_eval.tasks.manager.discover_plugin_task_paths``).
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURE_PLUGIN = Path(__file__).resolve().parent / "fixture_plugin"

_DISCOVERY = textwrap.dedent("""
    import importlib.metadata, importlib.util
    from pathlib import Path

    def discover_plugin_task_paths():
        # the task folders of the lm_eval.tasks entry points, resolved as lm-eval PR #4015 does
        paths = []
        for entry in importlib.metadata.entry_points(group="lm_eval.tasks"):
            spec = importlib.util.find_spec(entry.value.split(":", 1)[0])
            locations = list(spec.submodule_search_locations or []) if spec else []
            if locations:
                paths.append(Path(locations[0]).resolve())
        return paths
""")


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def _run(code: str, *, pythonpath: Path | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ}
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(pythonpath), env.get("PYTHONPATH", "")]))
    # -P: the working directory (a checkout) does not shadow what is installed
    return subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True, env=env, timeout=timeout)


# -- entry points -------------------------------------------------------------------------------


def test_entry_points_name_what_the_registry_registers() -> None:
    """pyproject's entry points and the registry's lists are the same names and the same objects:
    models, metrics (the per-document item, whose module registers every name on import) and
    aggregations; the task entry point is a package whose folder holds the task YAMLs."""
    from genclf_harness.harness.registry import METRICS, MODELS

    points = _pyproject()["project"]["entry-points"]
    assert points["lm_eval.models"] == MODELS
    assert points["lm_eval.metrics"] == {name: "genclf_harness.harness.lm_eval_metrics:document_item"
                                         for name in METRICS}
    assert points["lm_eval.aggregations"] == {name: f"genclf_harness.harness.metrics:{name}" for name in METRICS}
    assert points["lm_eval.tasks"] == {"genclf": "genclf_harness.tasks"}
    installed = {entry.name: entry.value for entry in importlib.metadata.entry_points(group="lm_eval.aggregations")
                 if entry.dist is not None and entry.dist.name == "genclf-harness"}
    if installed:  # an install older than this pyproject has none: reinstall (scripts/install.sh)
        assert installed == points["lm_eval.aggregations"]


def test_registered_metric_names_are_the_classification_templates() -> None:
    """The registry's list is what the classification template reports (acc apart), with the same
    direction, so the entry points cannot drift from the tasks."""
    import re

    from genclf_harness.harness.registry import METRICS
    from genclf_harness.resources import tasks_dir

    template = (tasks_dir() / "classification" / "_classification_template_yaml").read_text()
    listed = dict(re.findall(r"- metric: (\S+)\n(?:    aggregation: .*\n)?    higher_is_better: (true|false)",
                             template))
    listed.pop("acc")
    assert {name: value == "true" for name, value in listed.items()} == METRICS


def test_metric_names_collide_with_nothing_lm_eval_registers() -> None:
    """No genclf metric name is one lm-eval registers now (0.4.13) or on its main branch or in an
    open pull request (ece of PR #3913, f1_macro, nll ...)."""
    import lm_eval.api.metrics  # noqa: F401 - lm-eval's own registrations
    from lm_eval.api.registry import aggregation_registry, metric_registry

    from genclf_harness.harness.registry import LM_EVAL_METRIC_NAMES, METRICS

    stock = set(metric_registry) | set(aggregation_registry)
    ours = set(METRICS) | {"step_f1", "step_f1_oracle", "acc_balanced", "acc_erroneous", "acc_correct", "auroc",
                           "brier", "gold_nll"}
    assert {"ece", "f1_macro", "nll", "f1", "balanced_acc"} <= LM_EVAL_METRIC_NAMES  # the names given up
    assert not ours & LM_EVAL_METRIC_NAMES, ours & LM_EVAL_METRIC_NAMES
    assert not (ours - set(METRICS)) & stock
    genclf_registered = {name for name in stock if name in METRICS}  # registered by this session's plugin
    assert not (stock - genclf_registered) & set(METRICS)


def test_registered_metrics_resolve_to_genclf_aggregations() -> None:
    from lm_eval.api.registry import get_aggregation, get_metric, get_metric_aggregation, is_higher_better

    from genclf_harness.harness import metrics
    from genclf_harness.harness.lm_eval_metrics import document_item
    from genclf_harness.harness.registry import register

    register()
    register()  # idempotent
    assert get_metric("macro_f1_prior") is document_item
    assert get_aggregation("macro_f1_prior") is metrics.macro_f1_prior is get_metric_aggregation("macro_f1_prior")
    assert is_higher_better("acc_auto") is True and is_higher_better("ece_width15") is False
    assert get_metric("acc") is not document_item  # lm-eval's own acc stays lm-eval's


def test_old_metric_names_keep_working_with_a_deprecation_message(caplog) -> None:
    """ece, f1_macro, nll (classification), f1 and f1_oracle (ProcessBench), balanced_acc (GenRM) and
    the strategy tasks' f1_macro: the old aggregation names give the new figures, with a warning
    naming the new name (for one release)."""
    from genclf_harness.harness import metrics, strategy_metrics
    from genclf_harness.harness.verifier_tasks import genrm, stepwise

    items = [metrics.make_item(i, i % 3, [-1.0 - (i % 3 == j) * (i % 5) / 4 for j in range(3)], None)
             for i in range(30)]
    caplog.set_level(logging.WARNING, logger="genclf_harness")
    for old, new in (("f1_macro_prior", "macro_f1_prior"), ("ece", "ece_width15"), ("ece_bc", "ece_width15_bc"),
                     ("nll", "gold_nll"), ("f1_macro", "macro_f1")):
        assert getattr(metrics, old)(items) == pytest.approx(getattr(metrics, new)(items))
        assert f"'{old}' is now '{new}'" in caplog.text
    assert stepwise.f1 is stepwise.step_f1 and stepwise.f1_oracle is stepwise.step_f1_oracle
    assert genrm.balanced_acc is genrm.acc_balanced
    assert strategy_metrics.f1_macro is strategy_metrics.macro_f1
    assert "'balanced_acc' is now 'acc_balanced'" in caplog.text
    with pytest.raises(AttributeError, match="not a genclf metric"):
        metrics.f1_micro  # noqa: B018 - neither old nor new


def test_editable_install_resolves_the_task_entry_point_to_the_yaml_folder() -> None:
    from genclf_harness.resources import tasks_dir

    done = _run(_DISCOVERY + "print(*discover_plugin_task_paths(), sep='\\n')")
    assert done.returncode == 0, done.stderr[-2000:]
    paths = [Path(line) for line in done.stdout.split()]
    assert tasks_dir().resolve() in paths
    assert (tasks_dir() / "classification" / "genclf_sst2.yaml").is_file()


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict[str, Path]:
    """genclf-harness's wheel and the fixture plugin, each built and installed for real (pip,
    ``--target``) into one scratch folder: on PYTHONPATH it comes before the editable install, so
    importlib.metadata sees the wheel's entry points and a second plugin's beside them."""
    root = tmp_path_factory.mktemp("installed")
    wheels, site = root / "wheels", root / "site"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    for source in (REPO, FIXTURE_PLUGIN):
        done = subprocess.run([*pip, "wheel", "--no-deps", "-w", str(wheels), str(source)], capture_output=True,
                              text=True, timeout=600)
        if done.returncode != 0:
            pytest.fail(f"building a wheel of {source} failed:\n{done.stderr[-3000:]}")
    done = subprocess.run([*pip, "install", "--no-deps", "--target", str(site), *map(str, wheels.glob("*.whl"))],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return {"site": site, "wheel": next(wheels.glob("genclf_harness-*.whl"))}


def test_wheel_ships_tasks_configs_and_entry_points(installed) -> None:
    import zipfile

    with zipfile.ZipFile(installed["wheel"]) as wheel:
        names = set(wheel.namelist())
        entry_points = wheel.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "genclf_harness/tasks/classification/genclf_sst2.yaml" in names
    assert "genclf_harness/tasks/classification/_classification_template_yaml" in names
    assert "genclf_harness/tasks/__init__.py" in names
    assert any(n.startswith("genclf_harness/_resources/configs/") for n in names)
    assert not any("_resources/tasks" in n for n in names)  # one copy of the tasks
    assert "genclf-eval = genclf_harness.cli.eval:main" in entry_points
    assert "genclf-vllm = genclf_harness.harness.vllm_model:GenclfVLLM" in entry_points
    assert "[lm_eval.tasks]\ngenclf = genclf_harness.tasks" in entry_points
    assert "macro_f1_prior = genclf_harness.harness.metrics:macro_f1_prior" in entry_points


def test_wheel_tasks_are_found_once_with_or_without_lm_eval_discovering_them(installed) -> None:
    """From the wheel: the task entry point resolves to the wheel's YAML folder; genclf's include
    path adds that folder only where lm-eval does not discover it, so genclf_sst2 is indexed once
    and lm-eval logs no "overrides existing task" either way; the second plugin's tasks come too."""
    code = _DISCOVERY + textwrap.dedent("""
        import io, json, logging
        import genclf_harness, lm_eval.tasks.manager as manager
        from lm_eval.tasks._index import TaskIndex
        from genclf_harness.plugin import include_paths, lm_eval_discovers_genclf_tasks
        from genclf_harness.resources import tasks_dir

        stream = io.StringIO()
        logging.getLogger("lm_eval").addHandler(logging.StreamHandler(stream))
        out = {"package": genclf_harness.__file__, "tasks_dir": str(tasks_dir()),
               "plugin_paths": [str(p) for p in discover_plugin_task_paths()]}
        for discovering in (False, True):
            if discovering:  # the next lm-eval: TaskManager indexes the entry points' folders first
                manager.discover_plugin_task_paths = discover_plugin_task_paths
            ours = include_paths(None, ["genclf_sst2"])
            index = TaskIndex.build([*(discover_plugin_task_paths() if discovering else []), *map(Path, ours)])
            out[str(discovering)] = {"discovers": lm_eval_discovers_genclf_tasks(), "include": ours,
                                     "sst2": str(index["genclf_sst2"].yaml_path) if "genclf_sst2" in index else None,
                                     "fixture": "fixture_sst2" in index}
        out["log"] = stream.getvalue()
        print(json.dumps(out))
    """)
    done = _run(code, pythonpath=installed["site"])
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    site = str(installed["site"].resolve())
    assert out["package"].startswith(site) and out["tasks_dir"].startswith(site)
    assert out["tasks_dir"] in out["plugin_paths"] and len(out["plugin_paths"]) == 2  # genclf's and the fixture's
    stock, discovering = out["False"], out["True"]
    assert not stock["discovers"] and stock["include"] == [out["tasks_dir"]]
    assert discovering["discovers"] and discovering["include"] == []
    assert stock["sst2"].startswith(out["tasks_dir"]) and not stock["fixture"]
    assert discovering["fixture"]
    assert discovering["sst2"].startswith(out["tasks_dir"])
    assert "overrides existing task" not in out["log"] and "Duplicate task name" not in out["log"], out["log"]


# -- the plugin module ----------------------------------------------------------------------------


def test_plugin_installs_once() -> None:
    """Imported twice (or install() called again), every hook is in place exactly once."""
    import importlib

    import lm_eval.evaluator as evaluator
    from lm_eval.api.model import LM
    from lm_eval.config.evaluate_config import EvaluatorConfig

    import genclf_harness.plugin as plugin

    importlib.reload(plugin)  # a second import runs the module again
    plugin.install()
    assert getattr(evaluator.evaluate, "_genclf_manifest", False)
    assert not getattr(evaluator.evaluate.__wrapped__, "_genclf_manifest", False)
    assert getattr(EvaluatorConfig._configure, "_genclf", False)
    assert not getattr(EvaluatorConfig._configure.__wrapped__, "_genclf", False)
    assert LM.__dict__["create_from_arg_obj"].__func__._genclf


@pytest.mark.parametrize("form", ["model_args", "dash_a_tokens", "json", "repeated", "config_text", "config_dict"])
def test_pretrained_default_in_every_form_lm_eval_parses(form: str, tmp_path: Path, monkeypatch,
                                                         default_model_dir: Path) -> None:
    """lm-eval 0.4.13's own parser and configuration, with the plugin in place: pretrained=default
    becomes the default model's folder whichever way the model arguments came, in the model
    arguments and in the task metadata lm-eval derives from them; genclf's tasks are on the path."""
    import genclf_harness.plugin  # noqa: F401
    from lm_eval._cli import HarnessCLI
    from lm_eval.config.evaluate_config import EvaluatorConfig

    from genclf_harness.resources import tasks_dir

    config = tmp_path / "run.yaml"
    config.write_text({"config_text": "model: hf\nmodel_args: pretrained=default,dtype=float32\ntasks: genclf_sst2\n",
                       "config_dict": "model: hf\nmodel_args:\n  pretrained: default\n  dtype: float32\n"
                                      "tasks: genclf_sst2\n"}.get(form, ""))
    argv = {
        "model_args": ["--model", "hf", "--model_args", "pretrained=default,dtype=float32", "--tasks", "genclf_sst2"],
        "dash_a_tokens": ["--model", "hf", "-a", "pretrained=default", "dtype=float32", "--tasks", "genclf_sst2"],
        "json": ["--model", "hf", "--model_args", '{"pretrained": "default", "dtype": "float32"}',
                 "--tasks", "genclf_sst2"],
        "repeated": ["--model", "hf", "--model_args", "dtype=float32", "--model_args", "pretrained=default",
                     "--tasks", "genclf_sst2"],
        "config_text": ["--config", str(config)],
        "config_dict": ["--config", str(config)],
    }[form]
    monkeypatch.setattr(sys, "argv", ["lm_eval", *argv])
    parsed = HarnessCLI().parse_args()
    configured = EvaluatorConfig.from_cli(parsed)
    assert configured.model_args == {"pretrained": str(default_model_dir), "dtype": "float32"}
    assert configured.metadata["pretrained"] == str(default_model_dir)
    assert str(tasks_dir()) in configured.include_path


def test_models_built_from_arguments_get_the_default_model(default_model_dir: Path) -> None:
    """simple_evaluate and every other caller build models through LM.create_from_arg_string /
    create_from_arg_obj: both see the folder, not the alias."""
    import genclf_harness.plugin  # noqa: F401
    from lm_eval.api.model import LM

    class Recorder(LM):
        def __init__(self, **kwargs) -> None:
            super().__init__()
            self.kwargs = kwargs

        def loglikelihood(self, requests):  # pragma: no cover - never scored
            raise NotImplementedError

        def loglikelihood_rolling(self, requests):  # pragma: no cover
            raise NotImplementedError

        def generate_until(self, requests):  # pragma: no cover
            raise NotImplementedError

    assert Recorder.create_from_arg_string("pretrained=default,dtype=float32").kwargs == {
        "pretrained": str(default_model_dir), "dtype": "float32"}
    assert Recorder.create_from_arg_obj({"pretrained": "default"}, {"batch_size": 2}).kwargs == {
        "pretrained": str(default_model_dir), "batch_size": 2}
    assert Recorder.create_from_arg_obj({"pretrained": "my/model"}).kwargs == {"pretrained": "my/model"}


def test_a_task_name_both_the_user_and_genclf_define_is_named(tmp_path: Path, caplog) -> None:
    from genclf_harness.plugin import include_paths
    from genclf_harness.resources import tasks_dir

    own = tmp_path / "mine"
    own.mkdir()
    (own / "sst2.yaml").write_text("task: genclf_sst2  # mine\ninclude: x\n")
    (own / "other.yaml").write_text("task: my_task\n")
    caplog.set_level(logging.WARNING, logger="genclf_harness")
    paths = include_paths([str(own)], ["genclf_sst2"])
    assert paths[:2] == [str(tasks_dir()), str(own)]  # the user's folder after ours: theirs wins
    assert (f"task genclf_sst2 is defined by your {own / 'sst2.yaml'} and by genclf-harness "
            f"({tasks_dir() / 'classification' / 'genclf_sst2.yaml'}); yours is the one that runs") in caplog.text
    assert "my_task" not in caplog.text


def test_an_unknown_pretrained_alias_is_named() -> None:
    from genclf_harness.backends.model_source import pretrained_problem

    for typo in ("Default", "defualt", "defaults"):
        assert "did you mean pretrained=default?" in pretrained_problem(typo)
    assert pretrained_problem("default") is None


def test_lm_eval_objects_are_built_by_keyword(default_model_dir: Path) -> None:
    """The anchor document's extra requests copy the document's own request field by field
    (dataclasses.replace), and bench requests are built by keyword: no positional Instance, so
    lm-eval v0.5's keyword-only fields (task_name, doc_id) cannot shift them."""
    import ast
    import dataclasses

    from lm_eval.api.instance import Instance

    from genclf_harness.harness.label_requests import new_instance

    made = new_instance("loglikelihood", {"x": 1}, ("ctx", " cont"), 3, task_name="t", doc_id=7, repeats=2)
    assert (made.task_name, made.doc_id, made.repeats, made.idx, made.args) == ("t", 7, 2, 3, ("ctx", " cont"))
    sibling = dataclasses.replace(made, arguments=("a", " b"), idx=4, resps=[], filtered_resps={})
    assert (sibling.task_name, sibling.doc_id, sibling.repeats, sibling.arguments) == ("t", 7, 2, ("a", " b"))
    assert sibling.resps is not made.resps
    for path in (REPO / "genclf_harness").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) in (
                    Instance.__name__, "TaskConfig"):
                assert not node.args, f"{path}:{node.lineno}: an lm-eval object built with positional arguments"


@pytest.mark.slow
def test_plugin_before_lm_eval_cli_writes_the_same_results_as_genclf_eval(tmp_path: Path) -> None:
    """lm-eval 0.4.13's own command line with the plugin imported first, and genclf-eval, on the
    same run: the same results, configuration and manifest (timings and paths apart)."""
    args = ["--model", "genclf-hf", "--model_args", "pretrained=default,dtype=float32", "--tasks", "genclf_sst2",
            "--limit", "6", "--seed", "0", "--log_samples"]
    runs = {
        "plugin": [sys.executable, "-c", "import genclf_harness.plugin; from lm_eval.__main__ import cli_evaluate; "
                                       "cli_evaluate()"],
        "genclf-eval": [sys.executable, "-m", "genclf_harness.cli.eval"],
    }
    results = {}
    for name, command in runs.items():
        done = subprocess.run([*command, *args, "--output_path", str(tmp_path / name)], capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        results[name] = json.loads(next((tmp_path / name).rglob("results_*.json")).read_text())
    plugin, ours = results["plugin"], results["genclf-eval"]
    assert plugin["results"] == ours["results"]
    assert plugin["config"] == ours["config"] and plugin["n-samples"] == ours["n-samples"]
    for part in ("tasks", "libraries", "genclf_harness_version"):
        assert plugin["genclf_manifest"][part] == ours["genclf_manifest"][part]
    assert plugin["genclf_manifest"]["model"] == ours["genclf_manifest"]["model"]


def test_local_data_set_tasks_written_for_plain_lm_eval(tmp_path: Path, data_dir: Path) -> None:
    """Where lm-eval imports the plugin too late for the include path, a local data set's tasks are
    written once for ``--include_path``; lm-eval then loads them like genclf-eval's own."""
    from lm_eval.tasks import TaskManager

    from genclf_harness.harness.local_tasks import main as write_tasks
    from genclf_harness.resources import tasks_dir

    root = tmp_path / "data"
    (root / "reviews").mkdir(parents=True)
    for split in ("test", "train", "validation"):
        rows = (data_dir / "sst2" / f"{split}.jsonl").read_text().splitlines()[:20]
        (root / "reviews" / f"{split}.jsonl").write_text("\n".join(rows) + "\n")
    (root / "reviews" / "meta.json").write_text((data_dir / "sst2" / "meta.json").read_text())
    out = tmp_path / "tasks"
    assert write_tasks(["--out", str(out), "--data_dir", str(root), "genclf_reviews"]) == 0
    manager = TaskManager(include_path=[str(tasks_dir()), str(out)], include_defaults=False,
                          metadata={"data_dir": str(root)})
    task = manager.load(["genclf_reviews"])["tasks"]["genclf_reviews"]
    assert len(task.eval_docs) == 20 and task.doc_to_choice(task.eval_docs[0]) == ["negative", "positive"]
    with pytest.raises(SystemExit):
        write_tasks(["--out", str(out), "--data_dir", str(root), "genclf_review"])
