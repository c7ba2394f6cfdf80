"""Token-aligned generation (``align_generation``): a prompt that ends inside a word or in a space.

Real default model (SmolLM2-135M-Instruct, fp32) and its real tokenizer. The back-off rule is
checked on the tokenizer's real pieces; the aligned generation is checked against a brute-force
greedy decoder that decodes every vocabulary token in its context and keeps the most likely one
whose text agrees with what is left of the backed-off characters; with the option off, genclf-hf
generates exactly what stock lm-eval does.
"""

from __future__ import annotations

import pytest
import torch

from genclf_harness.backends.generation_alignment import (
    AlignedPrefixProcessor,
    Backoff,
    plan_backoff,
    remaining,
    strip_backoff,
)
from genclf_harness.backends.token_alignment import AlignmentError, VocabularyTrie

GEN = {"until": ["\n"], "max_gen_toks": 6, "do_sample": False}


@pytest.fixture(scope="module")
def trie(tokenizer):
    return VocabularyTrie(tokenizer)


def _ids(tokenizer, text):
    return tokenizer(text, add_special_tokens=False).input_ids


def _generate(lm, prompts, gen=GEN, task="cut"):
    from lm_eval.api.instance import Instance

    requests = [Instance(request_type="generate_until", doc={}, arguments=(p, dict(gen)), idx=0,
                         metadata=(task, i, 1)) for i, p in enumerate(prompts)]
    return lm.generate_until(requests, disable_tqdm=True)


# -- the back-off rule, on the real tokenizer ----------------------------------------------------


@pytest.mark.parametrize(("prompt", "backed_off", "tokens"), [
    ("Review: a beautifully sh", " sh", 1),           # a partial word: back to the word's start
    ("Link: http:", " http:", 2),                      # ':' follows 'Ġhttp': both go
    ("Answer: ", " ", 1),                              # a trailing space is a token of its own
    ("abc defghijklmnopq", "klmnopq", 4),               # at most four tokens
    ("Review: a warm film.\n", "", 0),                 # a line break is a boundary
    ("Q: 2+2?<|im_end|>", "", 0),                      # a special token is never backed off
])
def test_the_backoff_rule_on_real_pieces(tokenizer, trie, prompt, backed_off, tokens):
    ids = _ids(tokenizer, prompt)
    backoff = plan_backoff(tokenizer, ids, trie=trie)
    assert (backoff.backed_off, backoff.tokens) == (backed_off, tokens)
    assert list(backoff.kept) == ids[: len(ids) - tokens]
    assert tokenizer.decode(list(backoff.kept)) + backoff.backed_off == prompt


def test_a_backoff_never_holds_a_stop_string(tokenizer):
    ids = _ids(tokenizer, "abc defghijklmnopq")  # ... 'kl' 'mn' 'op' 'q'
    assert plan_backoff(tokenizer, ids).backed_off == "klmnopq"
    assert plan_backoff(tokenizer, ids, stop=["mn"]).backed_off == "opq"


def test_strip_and_remaining(trie, tokenizer):
    backoff = Backoff((1, 2), " sh", 1)
    assert strip_backoff(" shot.", backoff) == "ot."
    assert strip_backoff(" s", backoff) == ""  # the budget or a stop string ended it inside the back-off
    with pytest.raises(AlignmentError, match="does not start with the backed-off characters ' sh'"):
        strip_backoff(" the", backoff, where="sst2 request 3")
    assert remaining(" shot", _ids(tokenizer, " sh"), trie) == "ot"
    assert remaining(" sh", _ids(tokenizer, " shot"), trie) == ""
    assert remaining(" disap", _ids(tokenizer, " dis"), trie) == "ap"


def test_the_processor_masks_only_rows_with_characters_left(trie, tokenizer):
    scores = torch.zeros(2, len(tokenizer))
    processor = AlignedPrefixProcessor([Backoff((5, 6, 7), " sh", 1), Backoff((5, 6, 7), "", 0)], 3, trie)
    out = processor(torch.tensor([[5, 6, 7], [5, 6, 7]]), scores.clone())
    allowed = torch.isfinite(out[0]).nonzero().flatten().tolist()
    assert allowed == list(trie.consistent(" sh"))
    assert set(_ids(tokenizer, " shot") + _ids(tokenizer, " sh")) <= set(allowed)
    assert _ids(tokenizer, " the")[0] not in allowed
    assert all(" sh".startswith(trie.text(t)) or trie.text(t).startswith(" sh") for t in allowed)
    assert torch.isfinite(out[1]).all()
    # once the characters are spelt, the row is free
    shot = _ids(tokenizer, " shot")[0]
    assert torch.isfinite(processor(torch.tensor([[5, 6, 7, shot]] * 2), scores.clone())).all()


# -- generation through genclf-hf ------------------------------------------------------------------


def _reference(model, tokenizer, prompt, max_new, stop="\n"):
    """Greedy decoding from the kept tokens, constrained by brute force: every vocabulary token is
    decoded after the sequence so far, and the most likely one whose text agrees with what is left
    of the backed-off characters is taken; then plain greedy. Returns the text after the back-off."""
    backoff = plan_backoff(tokenizer, _ids(tokenizer, prompt), stop=[stop])
    ids, left = list(backoff.kept), backoff.backed_off
    special = set(tokenizer.all_special_ids)
    generated: list[int] = []
    answer = 0  # the answer's budget counts from the token after the back-off is spelt
    while answer < max_new:
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0, -1]
        if left:
            head = tokenizer.decode(ids)
            pieces = tokenizer.batch_decode([ids + [t] for t in range(len(tokenizer))])
            order = torch.argsort(logits, descending=True).tolist()
            token = next(t for t in order if t not in special and (piece := pieces[t][len(head):])
                         and (left.startswith(piece) or piece.startswith(left)))
            piece = pieces[token][len(head):]
            left = left[len(piece):] if left.startswith(piece) else ""
        else:
            token = int(torch.argmax(logits))
            answer += 1
        if token == tokenizer.eos_token_id:
            break
        ids.append(token)
        generated.append(token)
        if stop in tokenizer.decode(generated):
            break
    text = tokenizer.decode(generated).split(stop)[0]
    assert text.startswith(backoff.backed_off)
    return text[len(backoff.backed_off):]


CUT_PROMPTS = ["Link: http:", "Review: a beautifully sh", "The movie was a real disap", "Answer: "]


def test_aligned_generation_equals_a_brute_force_constrained_decoder(model, tokenizer):
    from genclf_harness.harness.hf_model import GenclfHFLM

    lm = GenclfHFLM(pretrained=model, tokenizer=tokenizer, batch_size=1, align_generation=True)
    got = _generate(lm, CUT_PROMPTS)
    assert got == [_reference(model, tokenizer, p, GEN["max_gen_toks"]) for p in CUT_PROMPTS]
    # the URL is continued, not restarted (stock lm-eval generates " https:..." after "http:")
    assert got[0].startswith("//")
    record = lm.generation_record.manifest()
    assert record == {"align_generation": True, "prompts": {"cut": 4}, "backed_off_prompts": {"cut": 4},
                      "tokens_backed_off": {"cut": 6}}


def test_batched_aligned_generation_matches_one_at_a_time(model, tokenizer):
    from genclf_harness.harness.hf_model import GenclfHFLM

    one = _generate(GenclfHFLM(pretrained=model, tokenizer=tokenizer, batch_size=1, align_generation=True),
                    CUT_PROMPTS)
    batched = _generate(GenclfHFLM(pretrained=model, tokenizer=tokenizer, batch_size=4, align_generation=True),
                        CUT_PROMPTS)
    assert batched == one


def test_off_is_stock_lm_eval_and_clean_prompts_are_left_alone(model, tokenizer, stock):
    from genclf_harness.harness.hf_model import GenclfHFLM

    prompts = [*CUT_PROMPTS, "Review: a warm, funny film.\nSentiment:\n"]
    plain = GenclfHFLM(pretrained=model, tokenizer=tokenizer, batch_size=4)
    assert _generate(plain, prompts) == _generate(stock, prompts)
    assert "generation_alignment" not in __import__("genclf_harness.harness.manifest",
                                                    fromlist=["model_manifest"]).model_manifest(plain)
    aligned = GenclfHFLM(pretrained=model, tokenizer=tokenizer, batch_size=4, align_generation=True)
    assert _generate(aligned, prompts[-1:]) == _generate(stock, prompts[-1:])
    assert aligned.generation_record.backed_off == {}


def test_the_answer_budget_counts_after_the_backoff_is_spelt(model, tokenizer):
    from genclf_harness.harness.hf_model import GenclfHFLM

    lm = GenclfHFLM(pretrained=model, tokenizer=tokenizer, batch_size=2, align_generation=True)
    prompts = ["abc defghijklmnopq", "Review: a beautifully sh"]  # four tokens backed off, and one
    out = _generate(lm, prompts, gen={"until": ["\n"], "max_gen_toks": 2, "do_sample": False})
    assert out == [_reference(model, tokenizer, p, 2) for p in prompts]


def test_align_generation_is_a_known_model_arg_of_genclf_hf_only(default_model_dir):
    from genclf_harness.cli.model_args import unknown_keys
    from genclf_harness.harness.registry import register

    register()
    values = {"pretrained": str(default_model_dir), "align_generation": "true"}
    assert unknown_keys("genclf-hf", values)[0] == []
    assert unknown_keys("hf", values)[0] == ["align_generation"]
