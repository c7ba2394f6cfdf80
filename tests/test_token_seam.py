"""The token seam: lm-eval's context/continuation split checked, and token alignment (``align_labels``).

Real default model (SmolLM2-135M-Instruct, fp32) and its real tokenizer. The seam check must leave
every clean prompt exactly as stock lm-eval splits it, and catch the two broken cases found with this
tokenizer: ``"Link: http:" + "//a.com"`` (lm-eval silently scores ``"a.com"``) and
``"Sentiment: pos" + "itive"`` (no continuation token at all). Under ``align_labels`` both are scored
as the label's own text; the aligned scores are checked against a brute-force computation that
decodes every vocabulary token in its context and renormalises over the consistent ones.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pytest
import torch

from genclf_harness.backends.label_encoding import LabelEncoder, LabelEncodingError
from genclf_harness.backends.protocol import LabelPrompt
from genclf_harness.backends.scorer import HFScorer
from genclf_harness.backends.token_alignment import VocabularyTrie, align_prompt

HTTP = LabelPrompt("Link: http:", ("//a.com", "//b.org"))
MID_WORD = LabelPrompt("Review: a warm film.\nSentiment: pos", ("itive", "ition"))
MID_WORD_LETTER = LabelPrompt("Word: techn", ("ology", "ique", "ical"))


def real_prompts(data_dir: Path) -> list[LabelPrompt]:
    """The shipped tasks' real prompts: zero-shot, 2-shot and chat-rendered contexts."""
    from genclf_harness.data import get_spec, load_split
    from genclf_harness.prompts.classification import render_input, render_instruction

    prompts = []
    for name in ("sst2", "agnews", "trec", "rte", "cb", "sst5", "subj"):
        spec = get_spec(name)
        rows = load_split(name, spec.eval_split)[:6]
        labels = tuple(" " + word for word in spec.label_words)
        shots = "".join(f"{render_input(spec, row)} {spec.label_words[row['label']]}\n\n" for row in rows[4:])
        for row in rows[:4]:
            query = render_input(spec, row)
            prompts.append(LabelPrompt(f"{render_instruction(spec)}\n\n{query}", labels))
            prompts.append(LabelPrompt(f"{render_instruction(spec)}\n\n{shots}{query}", labels))
        chat = f"<|im_start|>user\n{render_input(spec, rows[0])}<|im_end|>\n<|im_start|>assistant\n"
        prompts.append(LabelPrompt(chat, spec.label_words))
    return prompts


# -- the check ---------------------------------------------------------------------------------


def test_clean_prompts_keep_lm_evals_split_exactly(data_dir, tokenizer, stock):
    prompts = real_prompts(data_dir)
    for align in (False, True):
        encoding = LabelEncoder(tokenizer, align_labels=align).plan(prompts)
        assert encoding.mismatches == [] and encoding.aligned == {}
        for prompt, pairs in zip(prompts, encoding.pairs, strict=True):
            for continuation, (context_ids, continuation_ids) in zip(prompt.continuations, pairs, strict=True):
                want_context, want_continuation = stock._encode_pair(prompt.context, continuation)
                assert (list(context_ids), list(continuation_ids)) == (want_context, want_continuation)


def test_the_http_seam_is_detected_with_both_tokenisations(tokenizer, stock, caplog):
    encoder = LabelEncoder(tokenizer)
    with caplog.at_level(logging.WARNING, logger="genclf_harness"):
        encoding = encoder.plan([HTTP])
    assert [(m.prompt, m.continuation) for m in encoding.mismatches] == [(0, 0), (0, 1)]
    first = encoding.mismatches[0]
    assert first.scored == "a.com"  # what lm-eval's split really scores
    assert first.context_pieces[-1] == ":" and "://" in first.whole_pieces
    assert "://" in caplog.text and "'a.com'" in caplog.text and "align_labels=true" in caplog.text
    # Without alignment the ids stay stock lm-eval's (comparability), only now it is said.
    context_ids, continuation_ids = encoding.pairs[0][0]
    assert (list(context_ids), list(continuation_ids)) == stock._encode_pair(HTTP.context, HTTP.continuations[0])


def test_a_context_ending_mid_word_is_an_error_naming_the_remedy(tokenizer):
    with pytest.raises(LabelEncodingError, match=r"'itive'.*align_labels=true"):
        LabelEncoder(tokenizer).plan([MID_WORD])


# -- alignment against brute force ---------------------------------------------------------------


def brute_force(model, tokenizer, prompt: LabelPrompt) -> list[float]:
    """log p(label text | context) by back-off and character matching, from one full forward pass
    per label and every vocabulary token decoded in its own context."""
    context = prompt.context.rstrip()
    context_ids = tokenizer(context)["input_ids"]
    wholes = [tokenizer(context + prompt.context[len(context):] + c)["input_ids"] for c in prompt.continuations]
    shared = 0
    while all(len(w) > shared and shared < len(context_ids) and w[shared] == context_ids[shared] for w in wholes):
        shared += 1
    head_text = tokenizer.decode(context_ids[:shared])
    assert context.startswith(head_text)
    special = set(tokenizer.all_special_ids) | set(tokenizer.added_tokens_decoder)
    results = []
    for whole in wholes:
        with torch.no_grad():
            logprobs = torch.log_softmax(model(torch.tensor([whole])).logits[0].float(), dim=-1)
        total, spelt = 0.0, head_text
        for position in range(shared, len(whole)):
            row = logprobs[position - 1]
            remaining = context[len(spelt):] if len(spelt) < len(context) else ""
            if remaining:
                before = tokenizer.decode(whole[:position])
                pieces = tokenizer.batch_decode([whole[:position] + [t] for t in range(len(tokenizer))])
                allowed = [t for t, piece in enumerate(pieces) if t not in special
                           and "\ufffd" not in piece[len(before):] and piece[len(before):]
                           and (piece[len(before):].startswith(remaining) or remaining.startswith(piece[len(before):]))]
                assert whole[position] in allowed
                total += float(row[whole[position]] - torch.logsumexp(row[allowed], dim=0))
            else:
                total += float(row[whole[position]])
            spelt = tokenizer.decode(whole[: position + 1])
        results.append(total)
    return results


@pytest.mark.parametrize("prompt", [HTTP, MID_WORD, MID_WORD_LETTER], ids=["http", "pos-itive", "techn-ology"])
def test_aligned_scores_equal_a_brute_force_computation(model, tokenizer, prompt):
    scorer = HFScorer(model, tokenizer, align_labels=True)
    scored = scorer.score([prompt], show_progress=False)[0]
    assert scored.aligned and scored.seam_mismatches == len(prompt.continuations)
    assert scorer.last_stats.aligned_prompts == 1
    expected = brute_force(model, tokenizer, prompt)
    for got, want, text in zip(scored.continuations, expected, prompt.continuations, strict=True):
        assert got.text == text
        # fp32 sums over another batch shape: 1.35e-5 apart on a 12-nat label on an AVX2-only CPU in CI.
        # Skipping the renormalisation over the consistent tokens would move it by log(their mass).
        assert got.logprob == pytest.approx(want, abs=1e-4, rel=1e-5)
        assert got.logprob == pytest.approx(math.fsum(got.token_logprobs), abs=1e-9)
    # The aligned first step is a distribution over the consistent tokens: it cannot exceed 1.
    assert all(c.token_logprobs[0] <= 1e-9 for c in scored.continuations)


def test_alignment_leaves_clean_prompts_exactly_stock_in_the_same_call(data_dir, model, tokenizer):
    clean = real_prompts(data_dir)[:8]
    plain = HFScorer(model, tokenizer).score(clean, show_progress=False)
    aligned = HFScorer(model, tokenizer, align_labels=True).score([HTTP, *clean, MID_WORD], show_progress=False)
    assert [s.logprobs for s in aligned[1:-1]] == [s.logprobs for s in plain]
    assert aligned[0].aligned and aligned[-1].aligned and not any(s.aligned for s in aligned[1:-1])


def test_genclf_hf_records_seams_per_task_for_the_manifest(model, tokenizer):
    from lm_eval.api.instance import Instance

    from genclf_harness.harness.hf_model import GenclfHFLM
    from genclf_harness.harness.manifest import model_manifest

    lm = GenclfHFLM(pretrained=model, tokenizer=tokenizer, batch_size=8, align_labels=True)
    requests = [
        Instance(request_type="loglikelihood", doc={}, arguments=(prompt.context, choice), idx=i,
                 metadata=(task, doc, 1))
        for task, doc, prompt in (("links", 0, HTTP), ("clean", 0, LabelPrompt("Sentiment:", (" good", " bad"))),
                                  ("words", 0, MID_WORD))
        for i, choice in enumerate(prompt.continuations)
    ]
    results = lm.loglikelihood(requests, disable_tqdm=True)
    assert all(math.isfinite(logprob) for logprob, _ in results)
    record = model_manifest(lm)["label_scoring"]
    assert record == {"align_labels": True, "seam_mismatches": {"links": 2, "words": 2},
                      "aligned_prompts": {"links": 1, "words": 1}}


# -- bad input -----------------------------------------------------------------------------------


def test_alignment_errors_name_the_request(tokenizer):
    encoder = LabelEncoder(tokenizer, align_labels=True)
    # Nothing is left after backing off: the whole context merges with the label.
    with pytest.raises(LabelEncodingError, match=r"prompt #1: nothing of the context 'pos'"):
        encoder.plan([LabelPrompt("Sentiment:", (" good",)), LabelPrompt("pos", ("itive",))])
    # Byte-level vocabulary: non-ASCII backed-off characters cannot be matched by character.
    with pytest.raises(LabelEncodingError, match=r"prompt #0: the backed-off text 'ño'.*byte tokens"):
        encoder.plan([LabelPrompt("Word: seño", ("r",))])
    with pytest.raises(LabelEncodingError, match=r"continuation #1 '' encodes to no tokens"):
        encoder.plan([LabelPrompt("Sentiment:", (" good", ""))])


class _CharTokenizer:
    """A toy tokenizer over a fixed vocabulary (enough for :class:`VocabularyTrie`)."""

    def __init__(self, vocabulary: list[str]) -> None:
        self.vocabulary = vocabulary
        self.all_special_ids = [0]
        self.added_tokens_decoder = {}

    def __len__(self) -> int:
        return len(self.vocabulary)

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [self.vocabulary.index(text)]}

    def decode(self, ids):
        return "".join(self.vocabulary[i] for i in ids)

    def batch_decode(self, batch):
        return [self.decode(ids) for ids in batch]


def test_a_backed_off_text_spelt_over_two_steps_is_constrained_at_both():
    from genclf_harness.backends.protocol import ContinuationScore

    vocabulary = ["<s>", "a", "x", "y", "xy", "xyz", "z", "q", "xq"]
    trie = VocabularyTrie(_CharTokenizer(vocabulary))
    assert trie.consistent("xy") == (2, 4, 5)  # x (a prefix), xy, xyz (start with it)
    # context "a xy" tokenised [a, xy]; "a xy" + "zq" tokenised [a, x, y, z, q]: two steps spell "xy".
    pairs, plan = align_prompt(0, "axy", (1, 4), [1, 3], [(1, 2, 3, 6, 7)], ["zq"], trie)
    assert plan.backed_off == "xy" and len(plan.groups) == 2
    assert [len(group) for group in plan.groups] == [3, 1]  # {x, xy, xyz}, then {y}
    values = {index: -float(index + 1) for index in range(len(pairs))}
    scores = [ContinuationScore(logprob=values[i], is_greedy=False, token_logprobs=(values[i],))
              for i in range(len(pairs) - 1)]
    scores.append(ContinuationScore(logprob=-3.0, is_greedy=True, token_logprobs=(-1.0, -2.0)))
    folded = plan.fold(scores, ["zq"])[0]
    group = [values[i] for i in plan.groups[0]]
    first = values[plan.labels[0].steps[0][0]] - math.log(sum(math.exp(v) for v in group))
    assert folded.token_logprobs == pytest.approx((first, 0.0, -1.0, -2.0))
    assert pairs[-1] == ((1, 2, 3), (6, 7))  # the rest of the label after "a x y"


def test_bench_seams_counts_the_variants(tokenizer):
    from genclf_harness.cli.bench_seams import VARIANTS, count

    encoder = LabelEncoder(tokenizer)
    context, labels = "Sentence: a fine day.\nThis sentence is", (" subjective", " objective")
    tallies = {name: count(encoder, make(context, labels)) for name, make in VARIANTS.items()}
    assert tallies["shipped"] == (2, 0, 0) and tallies["trailing space"] == (2, 0, 0)
    assert tallies["no space"][1] >= 1  # "is" + "objective" merges across the seam
    assert tallies["mid-word"] == (2, 2, 2)  # "is s" + "ubjective": no label token left
    assert tallies["mid-word"] == count(encoder, [LabelPrompt(context + " s", ("ubjective",)),
                                                  LabelPrompt(context + " o", ("bjective",))])
