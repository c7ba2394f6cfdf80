"""Tries ~100 bad inputs on every console script, each in a fresh process, and counts how many end
in one clear line with exit status 2.

    python scripts/bad_input_sweep.py [--jobs 2] [--json out.json] [--only eval,data,...] [--match step,kind]

Surfaces: ``eval`` (genclf-eval's arguments and model args), ``data`` (local data sets: meta.json
and rows), ``train`` (genclf-train configs and output folders), ``bench``, ``report``,
``verifiers`` and ``security`` (YAML tags, code in data). A case passes when the command exits 2
(130 for an interrupt), prints no traceback, and its last stderr line is the command's own
``<command>: ...`` line (or argparse's ``... error: ...`` for a malformed command line) containing
the case's expected text; ``--verbose`` prints each failing case's stderr tail. The fixtures (a
data root with one broken data set per case, config files, result folders) are written to a
temporary folder that is removed at the end. Needs ``GENCLF_DATA_DIR`` for the built-in data sets
and the default model (``scripts/install.sh``); runs offline (``HF_HUB_OFFLINE=1`` is set).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@dataclass
class Case:
    surface: str
    name: str
    argv: list[str]
    expect: str  # text the error line must contain
    env: dict[str, str] = field(default_factory=dict)
    status: int = 2
    absent: list[str] = field(default_factory=list)  # paths that must not exist afterwards


@dataclass
class Outcome:
    surface: str
    name: str
    status: int
    ok: bool
    line: str
    seconds: float


def _local(root: Path, name: str, meta: object, test: bytes | None = None, train: bytes | None = None,
           raw_meta: bytes | None = None) -> str:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "meta.json").write_bytes(raw_meta if raw_meta is not None else json.dumps(meta).encode())
    if test is not None:
        (folder / "test.jsonl").write_bytes(test)
    if train is not None:
        (folder / "train.jsonl").write_bytes(train)
    return f"genclf_{name}"


def build_cases(tmp: Path) -> list[Case]:
    data = tmp / "data"
    shared = Path(os.environ.get("GENCLF_DATA_DIR", REPO.parent / "shared" / "data"))
    for name in ("sst2", "llmbar", "processbench", "gsm8k"):
        if (shared / name).is_dir():
            (data / name).parent.mkdir(parents=True, exist_ok=True)
            os.symlink(shared / name, data / name)
    (tmp / "a_file").write_text("x")
    (tmp / "notes.txt").write_text("not a model")
    (tmp / "empty_model").mkdir()
    eval_ = [str(BIN / "genclf-eval")]
    base = [*eval_, "--model", "genclf-hf", "--model_args", "pretrained=default", "--tasks", "genclf_sst2"]

    def with_args(model_args: str, tasks: str = "genclf_sst2") -> list[str]:
        return [*eval_, "--model", "genclf-hf", "--model_args", model_args, "--tasks", tasks]

    cases = [
        Case("eval", "output path is a file", [*base, "--output_path", str(tmp / "a_file")], "is an existing file"),
        Case("eval", "output path under a file", [*base, "--output_path", str(tmp / "a_file" / "o")], "is a file"),
        Case("eval", "--limit 0", [*base, "--limit", "0"], "--limit 0"),
        Case("eval", "--limit -1", [*base, "--limit", "-1"], "--limit -1"),
        Case("eval", "--limit a word", [*base, "--limit", "many"], "--limit"),
        Case("eval", "--batch_size 0", [*base, "--batch_size", "0"], "--batch_size 0"),
        Case("eval", "--batch_size a word", [*base, "--batch_size", "big"], "--batch_size big"),
        Case("eval", "--num_fewshot -2", [*base, "--num_fewshot", "-2"], "--num_fewshot -2"),
        Case("eval", "--num_fewshot a word", [*base, "--num_fewshot", "few"], "--num_fewshot"),
        Case("eval", "misspelt --metadata key", [*base, "--metadata", '{"inductive_doc": 10}'], "inductive_docs"),
        Case("eval", "inductive_docs text", [*base, "--metadata", '{"inductive_docs": "many"}'], "inductive_docs"),
        Case("eval", "inductive_docs negative", [*base, "--metadata", '{"inductive_docs": -3}'], "inductive_docs"),
        Case("eval", "data_dir missing", [*base, "--metadata", json.dumps({"data_dir": str(tmp / "no")})],
             "no such folder"),
        Case("eval", "--metadata not JSON", [*base, "--metadata", "{inductive"], "--metadata: Invalid JSON"),
        Case("eval", "dtype=float13", with_args("pretrained=default,dtype=float13"), "dtype=float13"),
        Case("eval", "pretrained a text file", with_args(f"pretrained={tmp / 'notes.txt'}"), "is a file"),
        Case("eval", "pretrained folder without config", with_args(f"pretrained={tmp / 'empty_model'}"),
             "no config.json"),
        Case("eval", "pretrained path missing", with_args(f"pretrained={tmp / 'nope'}"), "no such folder"),
        Case("eval", "hub id offline", with_args("pretrained=someone/not-cached"), "HF_HUB_OFFLINE=1"),
        Case("eval", "unknown model arg", with_args("pretrained=default,foo=1"), "takes no 'foo'"),
        Case("eval", "misspelt loader arg", with_args("pretrained=default,attn_implementaton=eager"),
             "attn_implementation"),
        Case("eval", "misspelt genclf-hf arg", with_args("pretrained=default,max_batch_tokenz=9"), "max_batch_tokens"),
        Case("eval", "model arg without =", with_args("pretrained=default,packing"), "key=value"),
        Case("eval", "model args bad JSON", with_args("{pretrained: default"), "--model_args: Invalid JSON"),
        Case("eval", "prefix_cache=maybe", with_args("pretrained=default,prefix_cache=maybe"), "prefix_cache"),
        Case("eval", "unknown --model", [*eval_, "--model", "genclf-hff", "--tasks", "genclf_sst2"], "genclf-hf"),
        Case("eval", "unknown genclf task", [*base[:-1], "genclf_sst9"], "genclf_sst9"),
        Case("eval", "no --tasks", [*eval_, "--model", "genclf-hf", "--model_args", "pretrained=default"], "tasks"),
        Case("eval", "another family's data set", [*base[:-1], "genclf_llmbar_zero"], "not a classification data set",
             env={"GENCLF_DATA_DIR": str(data)}),
        Case("eval", "data root not a folder", base, "does not exist", env={"GENCLF_DATA_DIR": str(tmp / "none")}),
        Case("eval", "--include_path missing", [*base, "--include_path", str(tmp / "no_tasks")], "no_tasks"),
    ]

    good_meta = {"labels": ["neg", "pos"], "input_fields": ["text"]}
    good = b'{"text": "fine", "label": "pos"}\n{"text": "bad", "label": "neg"}\n'
    d = lambda name, meta, test=good, train=None, raw_meta=None: _local(data, name, meta, test, train, raw_meta)  # noqa: E731
    data_cases = [
        ("meta without labels", d("nolabels", {"input_fields": ["text"]}), "has no 'labels'"),
        ("channel task generated", d("chan", good_meta) + "_channel_gen", "no generative form"),
        ("channel with uncertain", d("chanunc", good_meta) + "_unc_channel", "drop 'unc'"),
        ("meta not JSON", d("badmeta", None, raw_meta=b'{"labels": [neg, pos]}'), "not valid JSON"),
        ("meta a list", d("listmeta", ["neg", "pos"]), "must be a JSON object"),
        ("meta not UTF-8", d("latinmeta", None, raw_meta=b'{"labels": ["n\xe9g", "pos"]}'), "not valid JSON"),
        ("one label", d("onelabel", {"labels": ["only"]}), "at least two labels"),
        ("labels twice", d("twice", {"labels": ["a", "a"]}), "names 'a' twice"),
        ("labels not strings", d("numlabels", {"labels": [0, 1]}), "list of non-empty strings"),
        ("label_words count", d("words", {**good_meta, "label_words": ["no"]}), "has 1 words for 2 labels"),
        ("label_words padded", d("padded", {**good_meta, "label_words": [" no", "yes"]}), "whitespace"),
        ("template placeholder", d("tpl", {**good_meta, "template": "{review}\nAnswer:"}), "placeholders ['review']"),
        ("template stray brace", d("brace", {**good_meta, "template": "{text\nAnswer:"}), "not a valid template"),
        ("instruction placeholder", d("instr", {**good_meta, "instruction": "Pick {choices}."}), "'instruction'"),
        ("eval_split unknown", d("evsplit", {**good_meta, "eval_split": "holdout"}), "'eval_split' is 'holdout'"),
        ("no split files", d("nosplits", {"labels": ["neg", "pos"]}, test=None), "holds no <split>.jsonl"),
        ("definitions of no label", d("defs", {**good_meta, "definitions": {"maybe": "x"}}), "not labels"),
        ("hub unknown key", d("hubkey", {**good_meta, "hub": {"path": "x/y", "colum": "t"}}), "unknown keys"),
        ("input_fields has label", d("lblfield", {**good_meta, "input_fields": ["text", "label"]}), "'label'"),
        ("non-UTF-8 row", d("latin", good_meta, good + b'{"text": "caf\xe9", "label": 1}\n'), "test.jsonl:3: not UTF-8"),
        ("NaN in a field", d("nanfield", good_meta, b'{"text": NaN, "label": 0}\n'), "field 'text' is nan"),
        ("Infinity label", d("inflabel", good_meta, b'{"text": "x", "label": Infinity}\n'), "field 'label' is inf"),
        ("unknown label name", d("unk", good_meta, b'{"text": "x", "label": "maybe"}\n'), "not a label of"),
        ("label index too big", d("big", good_meta, b'{"text": "x", "label": 7}\n'), "outside the labels"),
        ("label 1.5", d("half", good_meta, b'{"text": "x", "label": 1.5}\n'), "label 1.5"),
        ("label true", d("boollabel", good_meta, b'{"text": "x", "label": true}\n'), "field 'label' is True"),
        ("label missing", d("nolabel", good_meta, b'{"text": "x"}\n'), "field 'label' is missing"),
        ("field missing", d("nofield", good_meta, b'{"label": 0}\n'), "field 'text' is missing"),
        ("field a list", d("listfield", good_meta, b'{"text": ["a"], "label": 0}\n'), "not a string (list)"),
        ("field an object", d("objfield", good_meta, b'{"text": {"a": 1}, "label": 0}\n'), "not a string (dict)"),
        ("empty split", d("empty", good_meta, b"\n"), "is empty"),
        ("row not an object", d("listrow", good_meta, b'["x", 0]\n'), "must be a JSON object"),
        ("bad JSON in train", d("badtrain", good_meta, good, good + b'{"text": "x",\n'), "train.jsonl:3: not valid JSON"),
        ("NaN label in train", d("nantrain", good_meta, good, b'{"text": "x", "label": NaN}\n'), "train.jsonl:1"),
        ("infer fields, none", d("infer", {"labels": ["neg", "pos"]}, b'{"n": 1, "label": 0}\n'), "no string field"),
        ("unknown kind", d("kindx", {**good_meta, "kind": "regression"}), "'kind' is 'regression'"),
        ("step row without problem", d("steps1", {"kind": "steps"}, b'{"steps": ["a"], "label": -1}\n'),
         "test.jsonl:1: field 'problem'"),
        ("step not a string", d("steps2", {"kind": "steps"}, b'{"problem": "p", "steps": ["a", 2], "label": -1}\n'),
         "field 'steps'[1]: a step must be"),
        ("first error out of range", d("steps3", {"kind": "steps"}, b'{"problem": "p", "steps": ["a"], "label": 1}\n'),
         "is 1, out of range for 1 steps"),
        ("step split unknown", d("steps4", {"kind": "steps"}, b'{"problem": "p", "steps": ["a"], "label": 0}\n')
         + "_holdout", "has no split 'holdout'"),
        ("step field map unknown key", d("steps5", {"kind": "steps", "fields": {"question": "q"}}), "unknown keys"),
        ("dialogues share no prompt", d("pref1", {"kind": "preference"},
                                        b'{"chosen": "\\n\\nHuman: a\\n\\nAssistant: x", "rejected": "\\n\\nHuman: b\\n\\nAssistant: y"}\n'),
         "share no prompt"),
        ("identical responses", d("pref2", {"kind": "preference"},
                                  b'{"instruction": "i", "output_1": "same", "output_2": "same", "label": 1}\n')
         + "_pairwise", "two outputs are identical"),
        ("preference label unknown", d("pref3", {"kind": "preference"},
                                       b'{"instruction": "i", "output_1": "a", "output_2": "b", "label": "C"}\n'),
         "field 'label' is 'C'"),
        ("reasoning row without an answer", d("math1", {"kind": "reasoning"}, b'{"question": "2+2?"}\n') + "_verify",
         "field 'answer' (the gold answer) is missing"),
        ("reasoning answer unreadable", d("math2", {"kind": "reasoning"}, b'{"question": "2+2?", "answer": "four"}\n')
         + "_bon", "cannot read as a number"),
        ("reasoning choice unknown", d("math3", {"kind": "reasoning", "answer_type": "choices", "choices": ["A", "B"]},
                                       b'{"question": "q", "answer": "E"}\n') + "_verify", "not one of the choices"),
    ]
    env = {"GENCLF_DATA_DIR": str(data)}
    cases += [Case("data", name, [*eval_, "--model", "genclf-hf", "--model_args", "pretrained=default", "--tasks", task],
                   expect, env=env) for name, task, expect in data_cases]

    configs = tmp / "configs"
    configs.mkdir()
    sft = REPO / "configs" / "sft_sst2_cpu.yaml"
    (configs / "list.yaml").write_text("- a\n- b\n")
    (configs / "broken.yaml").write_text("model: [unclosed\n")
    (configs / "tag.yaml").write_text(f"model: !!python/object/apply:os.system ['touch {tmp / 'pwned'}']\n")
    finished = tmp / "finished_run"
    finished.mkdir()
    (finished / "genclf_train.json").write_text("{}")
    train = [str(BIN / "genclf-train")]
    sft_args = [*train, "sft", "--config", str(sft)]
    cases += [
        Case("train", "config missing", [*train, "sft", "--config", str(tmp / "none.yaml")], "none.yaml"),
        Case("train", "config not YAML", [*train, "sft", "--config", str(configs / "broken.yaml")], "not valid YAML"),
        Case("train", "config a list", [*train, "sft", "--config", str(configs / "list.yaml")], "must be a mapping"),
        Case("train", "misspelt key", [*sft_args, "--set", "train.learning_rat=1e-4"], "learning_rate"),
        Case("train", "unknown section", [*sft_args, "--set", "trian.max_steps=3"], "trian"),
        Case("train", "wrong type", [*sft_args, "--set", "train.max_steps=many"], "max_steps"),
        Case("train", "--set without =", [*sft_args, "--set", "train.max_steps"], "train.max_steps"),
        Case("train", "output_dir a file", [*sft_args, "--set", f"train.output_dir={tmp / 'a_file'}"], "is a file"),
        Case("train", "finished run", [*sft_args, "--set", f"train.output_dir={finished}"], "--overwrite"),
        Case("train", "--resume, no checkpoint", [*sft_args, "--set", f"train.output_dir={tmp / 'fresh'}", "--resume"],
             "no checkpoint", absent=[str(tmp / "fresh")]),
        Case("train", "resume from a missing path", [*sft_args, "--set", f"train.resume_from_checkpoint={tmp / 'ck'}"],
             "not a checkpoint folder"),
        Case("train", "unknown data set", [*sft_args, "--set", "data.dataset=nope"], "nope", env=env),
        Case("train", "unknown recipe", [*train, "sfft", "--config", str(sft)], "invalid choice"),
        Case("train", "no --config", [*train, "sft"], "--config"),
        Case("train", "model folder missing", [*sft_args, "--set", f"model.pretrained={tmp / 'nomodel'}"], "nomodel"),
        Case("train", "init_from missing", [*sft_args, "--set", f"model.init_from={tmp / 'noadapter'}"], "noadapter"),
        Case("train", "negative learning rate", [*sft_args, "--set", "train.learning_rate=-1"], "learning_rate"),
        Case("train", "channel with a direct strategy", [*train, "channel", "--config",
                                                          str(REPO / "configs" / "channel_sst2_cpu.yaml"),
                                                          "--set", "data.strategy=bal3"], "not a channel strategy"),
        Case("train", "channel unknown loss", [*train, "channel", "--config", str(REPO / "configs" / "channel_sst2_cpu.yaml"),
                                               "--set", "train.loss=hinge"], "train.loss"),
        Case("train", "grpo misspelt key", [*train, "grpo", "--config", str(REPO / "configs" / "grpo_sst2_cpu.yaml"),
                                             "--set", "model.init_from=null", "--set", "reward.wieght=1"], "wieght"),
    ]

    bench = [str(BIN / "genclf-bench")]
    cases += [
        Case("bench", "scoring unknown task", [*bench, "scoring", "--tasks", "genclf_sst9"], "genclf_sst9"),
        Case("bench", "scoring generative task", [*bench, "scoring", "--tasks", "genclf_sst2_gen"],
             "not a classification task"),
        Case("bench", "scoring --limit 0", [*bench, "scoring", "--limit", "0"], "--limit"),
        Case("bench", "scoring shots a word", [*bench, "scoring", "--num_fewshot", "zero"], "not an integer"),
        Case("bench", "scoring bad metadata", [*bench, "scoring", "--metadata", "{x"], "not valid JSON"),
        Case("bench", "scoring a group", [*bench, "scoring", "--tasks", "genclf_sst2_strategies"], "is a group"),
        Case("bench", "scoring bad dtype", [*bench, "scoring", "--dtype", "float13"], "float13"),
        Case("bench", "strategies bad decoding", [*bench, "strategies", "--dataset", "sst2", "--decoding", "beam"], "unknown decoding"),
        Case("bench", "train unknown stage", [*bench, "train", "--dataset", "sst2", "--stages", "zero,dpo"], "unknown stage"),
        Case("bench", "unknown subcommand", [*bench, "scorin"], "invalid choice"),
        Case("bench", "channel unknown data set", [*bench, "channel", "--datasets", "sst9"], "sst9"),
        Case("bench", "channel unknown direction", [*bench, "channel", "--datasets", "sst2", "--directions",
                                                     "sideways"], "--directions"),
        Case("bench", "healing unknown data set", [*bench, "healing", "--datasets", "sst9"], "sst9"),
        Case("bench", "bon unknown reasoning task", [*bench, "bon", "--task", "gsm9k", "--output-dir", str(tmp / "bon_out")],
             "unknown reasoning task 'gsm9k'"),
        Case("bench", "calibration bad shift", [*bench, "calibration", "--tasks", "genclf_sst2", "--shift",
                                                 "genclf_sst2=0:100"], "--shift"),
    ]

    empty_results = tmp / "no_results"
    empty_results.mkdir()
    stray = tmp / "stray"
    stray.mkdir()
    (stray / "results_x.json").write_text('{"hello": 1}')
    report = [str(BIN / "genclf-report")]
    cases += [
        Case("report", "folder missing", [*report, str(tmp / "nothing")], "nothing"),
        Case("report", "no results files", [*report, str(empty_results)], "no lm-eval results file"),
        Case("report", "only stray JSON", [*report, str(stray)], "no lm-eval results file",
             absent=[str(stray / "report")]),
    ]

    cases += [
        Case("verifiers", "candidates file missing", [*eval_, "--model", "genclf-hf", "--model_args",
                                                      "pretrained=default", "--tasks", "genclf_gsm8k_bon",
                                                      "--metadata", json.dumps({"candidates": str(tmp / "c.jsonl")})],
             "c.jsonl"),
        Case("verifiers", "threshold a word", [*eval_, "--model", "genclf-hf", "--model_args", "pretrained=default",
                                               "--tasks", "genclf_processbench_gsm8k", "--metadata",
                                               '{"threshold": "half"}'], "threshold"),
        Case("verifiers", "bench bon no verifier", [*bench, "bon", "--verifier", str(tmp / "no_verifier")],
             "no_verifier"),
    ]

    tag_tasks = tmp / "tag_tasks"
    tag_tasks.mkdir()
    (tag_tasks / "evil.yaml").write_text(f"task: evil\ndataset_path: !!python/object/apply:os.system ['touch {tmp / 'pwned'}']\n")
    cases += [
        Case("security", "YAML tag in a training config", [*train, "sft", "--config", str(configs / "tag.yaml")],
             "tag.yaml", absent=[str(tmp / "pwned")]),
        Case("security", "YAML tag in a task file", [*eval_, "--model", "genclf-hf", "--model_args", "pretrained=default",
                                                    "--tasks", "evil", "--include_path", str(tag_tasks)], "evil",
             absent=[str(tmp / "pwned")]),
        Case("security", "remote code asked for by data", [*eval_, "--model", "genclf-hf", "--model_args",
                                                           "pretrained=default,trust_remote_code=maybe", "--tasks",
                                                           "genclf_sst2"], "trust_remote_code"),
    ]
    return cases


def run_case(case: Case, tmp: Path) -> Outcome:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "GENCLF_DEBUG": "", **case.env}
    argv = list(case.argv)
    if Path(argv[0]).name == "genclf-eval" and not any(a.startswith("--limit") for a in argv):
        argv += ["--limit", "3"]  # a bad input that is not caught must not run a whole evaluation
    started = time.perf_counter()
    try:
        done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=tmp, timeout=600)
        status, err = done.returncode, done.stderr
    except subprocess.TimeoutExpired:
        status, err = -1, "timed out after 600 s"
    lines = [line for line in err.splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    command = Path(case.argv[0]).name
    sub = f"{command} {case.argv[1]}" if len(case.argv) > 1 else command
    head = last.split(":")[0].strip()
    own = head in (command, sub) or (" error: " in last and head in (command, sub, "lm-eval", "lm-eval run"))
    ok = (status == case.status and "Traceback" not in err and own and case.expect in last
          and not any(Path(p).exists() for p in case.absent))
    return Outcome(case.surface, case.name, status, ok, last[:300], round(time.perf_counter() - started, 1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--only", default="", help="comma-separated surfaces")
    parser.add_argument("--match", default="", help="only the cases whose name holds one of these comma-separated words")
    parser.add_argument("--json", default=None, help="write every outcome here")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="genclf-sweep-"))
    try:
        cases = build_cases(tmp)
        if args.only:
            cases = [c for c in cases if c.surface in args.only.split(",")]
        if args.match:
            cases = [c for c in cases if any(word in c.name for word in args.match.split(","))]
        print(f"{len(cases)} bad inputs, {args.jobs} at a time", file=sys.stderr, flush=True)
        with ThreadPoolExecutor(args.jobs) as pool:
            outcomes = list(pool.map(lambda c: run_case(c, tmp), cases))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("| surface | case | exit | clear | last line |\n|---|---|---|---|---|")
    for o in outcomes:
        print(f"| {o.surface} | {o.name} | {o.status} | {'yes' if o.ok else 'NO'} | {o.line.replace('|', '/')[:160]} |")
    by_surface: dict[str, list[int]] = {}
    for o in outcomes:
        by_surface.setdefault(o.surface, [0, 0])
        by_surface[o.surface][0] += o.ok
        by_surface[o.surface][1] += 1
    passed = sum(o.ok for o in outcomes)
    print(f"\n{passed}/{len(outcomes)} end in one clear line with the expected exit status ("
          + ", ".join(f"{s} {a}/{b}" for s, (a, b) in by_surface.items()) + ")")
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(o) for o in outcomes], indent=1))
    return 0 if passed == len(outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
