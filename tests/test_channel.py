"""Channel scoring: the input scored given each label (``genclf_<name>_channel``), on the default
model and the real data sets: the prompts, the requests (equal to stock ``hf``), the metrics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from genclf_harness import calibration as cal
from genclf_harness.data import get_spec, load_split
from genclf_harness.prompts import PromptStrategy
from genclf_harness.prompts.channel import answer_cue, render_body


def _task(name: str, inductive_docs: int):
    from lm_eval.tasks import TaskManager

    from genclf_harness.resources import tasks_dir

    task = TaskManager(include_path=str(tasks_dir()), include_defaults=False).load([name])["tasks"][name]
    task.config.metadata = {**(task.config.metadata or {}), "inductive_docs": inductive_docs}
    return task


def test_channel_prompt_puts_each_label_before_the_input() -> None:
    spec = get_spec("rte")
    doc = load_split("rte", "validation")[0]
    rendered = PromptStrategy.parse("channel").bind(spec).render(doc)
    assert answer_cue(spec) == "True or False?\nAnswer:"
    body = render_body(spec, doc)
    assert rendered.input == body and not body.endswith("Answer:")
    assert rendered.continuation == "\n" + body
    assert [c.rsplit("\n\n", 1)[1] for c in rendered.contexts] == ["True or False?\nAnswer: True",
                                                                   "True or False?\nAnswer: False"]
    assert all(c.startswith(rendered.instruction + "\n\n") for c in rendered.contexts)
    direct = PromptStrategy().bind(spec).render(doc)
    assert direct.input == body + "\n" + answer_cue(spec) or direct.input.startswith(body)
    with pytest.raises(ValueError, match="one context"):
        _ = direct.contexts


def test_channel_demonstrations_are_written_label_first() -> None:
    spec = get_spec("sst2")
    pool = load_split("sst2", "train")[:200]
    doc = load_split("sst2", "test")[3]
    rendered = PromptStrategy.parse("bal3_channel").bind(spec, pool).render(doc)
    assert len(rendered.demonstrations) == 3
    by_id = {str(row["id"]): row for row in pool}
    for demo, demo_id in zip(rendered.demonstrations, rendered.demonstration_ids, strict=True):
        row = by_id[demo_id]
        assert demo == f"Sentiment: {spec.label_words[row['label']]}\n{render_body(spec, row)}"
    assert PromptStrategy.parse("bal3_channel").name == "bal3_channel"


def test_channel_strategies_that_cannot_run_are_refused() -> None:
    spec = get_spec("sst2")
    with pytest.raises(ValueError, match="no generative form"):
        PromptStrategy.parse("channel").check(spec, generative=True)
    with pytest.raises(ValueError, match="drop 'unc'"):
        PromptStrategy.parse("unc_channel").check(spec)
    from genclf_harness.harness.tasks import load_classification, strategy_task_yaml

    with pytest.raises(ValueError, match="drop 'unc'"):  # a task's rows are never built for such a strategy
        load_classification("sst2", strategy="unc_channel")
    with pytest.raises(ValueError, match="no generative form"):
        strategy_task_yaml("genclf_sst2_channel_gen", "sst2", "channel", "gen", template_dir="..")


def test_channel_requests_equal_stock_hf_and_carry_the_anchor(model, tokenizer, stock) -> None:
    from genclf_harness.harness.hf_model import GenclfHFLM

    task = _task("genclf_sst2_channel", inductive_docs=4)
    task.build_all_requests(limit=5, rank=0, world_size=1)
    by_doc: dict[int, list] = {}
    for instance in task.instances:
        by_doc.setdefault(instance.doc_id, []).append(instance)
    sizes = sorted(len(v) for v in by_doc.values())
    assert sizes == [2] * 4 + [2 + 2 * (3 + 4)]  # 3 content-free inputs and 4 inductive documents per label
    anchor = max(by_doc.values(), key=len)
    doc = anchor[0].doc
    assert [i.arguments for i in anchor[:2]] == [(c, "\n" + doc["input"]) for c in doc["channel_contexts"]]
    assert [i.arguments[1] for i in anchor[2:4]] == ["\nReview: N/A"] * 2  # contextual calibration, per label
    assert [i.arguments[0] for i in anchor[2:4]] == doc["channel_contexts"]
    train_inputs = {row["input"] for row in task.training_docs()}
    assert all(i.arguments[1][1:] in train_inputs for i in anchor[8:])

    requests = [instance for instances in by_doc.values() for instance in instances]
    ours = GenclfHFLM(pretrained=model, tokenizer=tokenizer, batch_size=4).loglikelihood(requests)
    theirs = stock.loglikelihood(requests)
    np.testing.assert_allclose([ll for ll, _ in ours], [ll for ll, _ in theirs], atol=1e-4, rtol=0)


@pytest.fixture(scope="module")
def channel_run(tmp_path_factory, default_model_dir: Path):
    from genclf_harness.cli.eval import main

    out = tmp_path_factory.mktemp("channel_run")
    argv = ["--model", "genclf-hf", "--model_args", "pretrained=default,dtype=float32", "--tasks",
            "genclf_sst2_channel", "--limit", "16", "--metadata", '{"inductive_docs": 12}', "--log_samples",
            "--output_path", str(out), "--batch_size", "8"]
    assert main(argv) == 0
    results = json.loads(next(out.rglob("results_*.json")).read_text())
    path = next(out.rglob("samples_genclf_sst2_channel_*.jsonl"))
    return results, [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_channel_task_reports_raw_and_calibrated_metrics_of_the_channel_scores(channel_run) -> None:
    results, samples = channel_run
    row = results["results"]["genclf_sst2_channel"]
    manifest = results["genclf_manifest"]["tasks"]["genclf_sst2_channel"]
    assert manifest["strategy"]["direction"] == "channel" and manifest["prompt"]["target_delimiter"] == "\n"
    assert "acc_dcpmi,none" not in row and "acc_pmi,none" not in row  # no channel counterpart
    for metric in ("acc", "acc_cc", "acc_prior", "acc_bc", "acc_auto", "acc_prior_ind", "macro_f1_prior_train"):
        assert isinstance(row[f"{metric},none"], float), metric
    gold = load_split("sst2", "test")
    by_id = {str(r["id"]): r["label"] for r in gold}
    scores = np.array([s["genclf"]["label_loglikelihoods"] for s in samples])
    labels = np.array([s["genclf"]["gold"] for s in samples])
    assert [by_id[str(s["doc"]["id"])] for s in samples] == labels.tolist()  # gold from the document, not its input
    # the stored scores are the log-likelihoods of the input under each label's context
    for sample in samples:
        assert [float(r[0][0]) for r in sample["resps"][:2]] == pytest.approx(sample["genclf"]["label_loglikelihoods"])
    assert row["acc,none"] == pytest.approx(float(np.mean(scores.argmax(1) == labels)))
    prior = cal.fit("prior", scores).apply(scores)
    assert row["acc_prior,none"] == pytest.approx(float(np.mean(prior.argmax(1) == labels)))
    anchor = next(s["genclf"]["anchor_scores"] for s in samples if s["genclf"].get("anchor_scores"))
    assert "dcpmi" not in anchor["methods"] and "cc" in anchor["methods"]
    cc = cal.fit("cc", scores, content_free_logprobs=np.array(anchor["cc"])).apply(scores)
    assert row["acc_cc,none"] == pytest.approx(float(np.mean(cc.argmax(1) == labels)))


def test_a_local_data_set_gets_its_channel_task(data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Other field names, label names instead of indices, a template of its own."""
    from lm_eval.tasks import TaskManager

    from genclf_harness.harness.local_tasks import write_local_tasks
    from genclf_harness.resources import tasks_dir

    folder = tmp_path / "data" / "claims"
    folder.mkdir(parents=True)
    names = ["follows", "does_not_follow"]
    meta = {"labels": names, "template": "Claim: {hypothesis}\nEvidence: {premise}\nVerdict:"}
    (folder / "meta.json").write_text(json.dumps(meta))
    for split in ("train", "validation"):
        rows = load_split("rte", split, data_dir=data_dir)[:20]
        (folder / f"{split}.jsonl").write_text("".join(
            json.dumps({"premise": r["premise"], "hypothesis": r["hypothesis"], "label": names[r["label"]]}) + "\n"
            for r in rows))
    monkeypatch.setenv("GENCLF_DATA_DIR", str(tmp_path / "data"))
    out = tmp_path / "yamls"
    out.mkdir()
    assert write_local_tasks(["genclf_claims_channel"], out) == ["genclf_claims_channel"]
    with pytest.raises(ValueError, match="no generative form"):
        write_local_tasks(["genclf_claims_channel_gen"], out)
    task = TaskManager(include_path=[str(tasks_dir()), str(out)], include_defaults=False).load(
        ["genclf_claims_channel"])["tasks"]["genclf_claims_channel"]
    task.config.metadata = {**(task.config.metadata or {}), "inductive_docs": 0}
    task.build_all_requests(limit=3, rank=0, world_size=1)
    first = [i for i in task.instances if i.doc_id == 0]
    row = load_split("rte", "validation", data_dir=data_dir)[0]
    assert [i.arguments[0].rsplit("\n\n", 1)[1] for i in first[:2]] == ["Verdict: follows", "Verdict: does not follow"]
    assert first[0].arguments[1] == f"\nClaim: {row['hypothesis']}\nEvidence: {row['premise']}"
    assert [i.arguments[1] for i in first[2:4]] == ["\nClaim: N/A\nEvidence: N/A"] * 2


# -- training ----------------------------------------------------------------------------------------


def test_channel_losses_on_hand_computed_cases() -> None:
    import torch

    from genclf_harness.training.channel_losses import channel_loss, log1mexp

    logprobs = torch.log(torch.tensor([[[0.5, 0.25, 0.9], [0.1, 0.2, 0.3]]]))  # one document, 2 labels, 3 tokens
    mask = torch.tensor([[[True, True, False], [True, True, True]]])
    gold = torch.tensor([0])
    mle, terms = channel_loss(logprobs, mask, gold, loss="mle")
    assert float(mle) == pytest.approx(-(np.log(0.5) + np.log(0.25)) / 2)
    assert float(terms["unlikelihood"]) == 0.0 and float(terms["rank"]) == 0.0  # exactly zero under mle
    lul, terms = channel_loss(logprobs, mask, gold, loss="lul", unlikelihood_weight=0.5)
    unlikelihood = -(np.log(0.9) + np.log(0.8) + np.log(0.7)) / 3
    assert float(terms["unlikelihood"]) == pytest.approx(unlikelihood)
    assert float(lul) == pytest.approx(float(mle) + 0.5 * unlikelihood)
    rank, _ = channel_loss(logprobs, mask, gold, loss="rank", margin=2.0)
    gap = (np.log(0.5) + np.log(0.25)) / 2 - np.mean(np.log([0.1, 0.2, 0.3]))
    assert float(rank) == pytest.approx(max(0.0, 2.0 - gap))
    # log(1 - p) stays finite and accurate where 1 - exp(l) underflows or cancels
    tiny = torch.tensor([-1e-12, -50.0], dtype=torch.float64)
    assert log1mexp(tiny).tolist() == pytest.approx([np.log(1e-12), -np.exp(-50.0)], rel=1e-6)


def test_training_sequences_are_the_channel_task_requests(tokenizer) -> None:
    from genclf_harness.backends.label_encoding import LabelEncoder
    from genclf_harness.backends.protocol import LabelPrompt
    from genclf_harness.training.channel import collate, encode_documents

    spec = get_spec("sst2")
    prompts = [PromptStrategy.parse("channel").bind(spec).render(row) for row in load_split("sst2", "train")[:3]]
    documents = encode_documents(tokenizer, prompts, max_length=512)
    encoder = LabelEncoder(tokenizer)
    for prompt, doc in zip(prompts, documents, strict=True):
        for k, context in enumerate(prompt.contexts):
            (ctx, cont), = encoder.encode([LabelPrompt(context, (prompt.continuation,))])[0]
            assert doc["sequences"][k] == list(ctx) + list(cont) and doc["starts"][k] == len(ctx)
    batch = collate(documents, pad_id=0)
    first = documents[0]["sequences"][1]
    targets = batch["input_ids"][1, 1:][batch["target_mask"][1]].tolist()
    assert targets == first[documents[0]["starts"][1]:]  # exactly the input's tokens are scored
    short = encode_documents(tokenizer, prompts[:1], max_length=40)[0]
    assert all(len(seq) <= 40 for seq in short["sequences"])


@pytest.fixture(scope="module")
def channel_training(tmp_path_factory, default_model_dir: Path):
    from genclf_harness.training.channel import ChannelRecipeConfig, train_channel
    from genclf_harness.training.config import build_config

    out = tmp_path_factory.mktemp("channel_training")
    raw = {
        "model": {"pretrained": "default", "dtype": "float32", "peft": "lora", "lora_r": 8, "lora_alpha": 16,
                  "lora_target_modules": ["q_proj", "v_proj"]},
        "data": {"dataset": "sst2", "train_split": "train", "eval_split": None, "max_train_examples": 32},
        "train": {"output_dir": str(out / "run"), "loss": "lul", "max_steps": 4, "per_device_train_batch_size": 8,
                  "learning_rate": 1e-3, "max_length": 64, "save_steps": 100, "logging_steps": 2},
        "eval": {"margin_examples": 32},
    }
    return train_channel(build_config(ChannelRecipeConfig, raw))


def test_a_short_lul_training_raises_the_training_margin(channel_training) -> None:
    before, after = channel_training["figures"]["before"], channel_training["figures"]["after"]
    # the margin is in mean log-probability per input token, most of which no label changes
    assert after["train_margin"] > before["train_margin"] + 0.01, (before, after)
    logged = [entry for entry in channel_training["log_history"] if "loss_unlikelihood" in entry]
    assert logged and all(entry["loss_unlikelihood"] > 0 for entry in logged)
    out = Path(channel_training["output_dir"])
    assert (out / "adapter_config.json").is_file() and (out / "genclf_train.json").is_file()


def test_channel_config_refuses_a_direct_strategy() -> None:
    from genclf_harness.training.channel import ChannelRecipeConfig
    from genclf_harness.training.config import ConfigError, build_config

    with pytest.raises(ConfigError, match="not a channel strategy"):
        build_config(ChannelRecipeConfig, {"data": {"strategy": "bal3"}})
    with pytest.raises(ConfigError, match="loss"):
        build_config(ChannelRecipeConfig, {"train": {"loss": "hinge"}})
