"""Zero-shot classification by natural language inference: does the text entail "This example is <label>."?

The method of Yin, Hay and Roth (2019), made universal by Laurer, van Atteveldt, Casas and Welbers
("Building Efficient Universal Classifiers with Natural Language Inference", 2024) and used for
political text by Burnham et al. ("Political DEBATE", 2024): the input is the premise, each label
becomes a hypothesis through a template, and an NLI cross-encoder's entailment logit scores it.

:class:`NLIScorer` computes exactly what transformers' ``pipeline("zero-shot-classification")``
computes (``ZeroShotClassificationPipeline``, read in transformers 5.19):

- the entailment id is the first ``label2id`` entry whose name starts with ``entail``
  (case-insensitive); the contradiction id is the last index if entailment is 0, else index 0
  (so 2-class ``entailment/not_entailment`` heads and 3-class MNLI heads in either order work);
- single-label: a softmax over the labels of their entailment logits; multi-label, or a single
  candidate label: per label, a softmax over its [contradiction, entailment] logits;
- each (premise, hypothesis) pair is tokenised with ``truncation="only_first"``: the premise is
  cut, never the hypothesis.

``ContinuationScore.logprob`` is the log of that probability, so calibration and metrics take NLI
scores as they take log-likelihoods. :class:`CausalNLIScorer` asks a causal LM (the default model)
the same question in words and uses ``log P(" yes") - log P(" no")`` as the entailment logit.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from genclf_harness.backends.mlm import describe_weights, encoder_max_length, resolve_encoder
from genclf_harness.backends.protocol import ContinuationScore, LabelPrompt, PromptScores, ScoringStats

logger = logging.getLogger(__name__)

DEFAULT_HYPOTHESIS_TEMPLATE = "This example is {}."
"""transformers' default, and Laurer et al.'s generic template."""
CAUSAL_QUESTION = "Does the premise entail the hypothesis? Answer yes or no."


class HypothesisTemplateError(ValueError):
    """A hypothesis template has no ``{}`` for the label, or braces that ``str.format`` cannot fill."""


class NLILabelError(ValueError):
    """A model's config names no entailment label, so there is no logit to read."""


def check_hypothesis_template(template: str) -> str:
    """``template`` if it has one ``{}`` slot for the label; HypothesisTemplateError otherwise."""
    if not isinstance(template, str) or "{}" not in template:
        raise HypothesisTemplateError(f"hypothesis template {template!r} has no {{}} where the label goes "
                                      f"(e.g. {DEFAULT_HYPOTHESIS_TEMPLATE!r})")
    try:
        template.format("label")
    except (IndexError, KeyError, ValueError) as err:
        raise HypothesisTemplateError(f"hypothesis template {template!r} cannot be filled ({err}); "
                                      "write literal braces as {{ and }}") from None
    return template


def entailment_ids(config: Any) -> tuple[int, int]:
    """(entailment id, contradiction id) by the zero-shot pipeline's rule; NLILabelError without an
    entailment label."""
    label2id = dict(getattr(config, "label2id", None) or {})
    for name, index in label2id.items():
        if str(name).lower().startswith("entail"):
            entailment = int(index)
            return entailment, (-1 if entailment == 0 else 0)
    raise NLILabelError(f"the model's labels {sorted(label2id)} include none starting with 'entail', so it is not an "
                        "NLI model (or its config lost the label names); set config.label2id/id2label to name them")


def premise_text(spec: Any, row: Mapping[str, Any]) -> str:
    """The premise of a data set row: its spec's input fields, joined by newlines (not the rendered
    prompt, whose instruction and answer cue would only confuse an NLI model)."""
    try:
        return "\n".join(str(row[name]) for name in spec.input_fields)
    except KeyError as err:
        raise ValueError(f"data set {spec.name!r}: row {row.get('id', '?')!r} has no input field {err}") from None


def label_logprobs(entailment: torch.Tensor, contradiction: torch.Tensor, *, multi_label: bool) -> torch.Tensor:
    """Per label, the log of the pipeline's score, from (K,) entailment and contradiction logits."""
    if multi_label or entailment.numel() == 1:
        pair = torch.stack([contradiction, entailment], dim=-1).double()
        return torch.log_softmax(pair, dim=-1)[..., 1]
    return torch.log_softmax(entailment.double(), dim=-1)


def _prompt_scores(prompt: LabelPrompt, logprobs: torch.Tensor, *, multi_label: bool, context_tokens: int,
                   truncated: bool) -> PromptScores:
    values = logprobs.tolist()
    best = max(range(len(values)), key=values.__getitem__)
    return PromptScores(
        continuations=tuple(
            ContinuationScore(logprob=value, is_greedy=(value > -0.6931471805599453) if multi_label else k == best,
                              token_logprobs=(value,), text=text)
            for k, (value, text) in enumerate(zip(values, prompt.continuations, strict=True))),
        context_tokens=context_tokens, truncated=truncated)


class NLIScorer:
    """Scores labels as hypotheses entailed by the prompt's context (implements ``Scorer``).

    ``LabelPrompt.context`` is the premise (the text to classify, not a rendered prompt) and the
    continuations are the label names or words (stripped; each fills the hypothesis template).

    Args:
        model: an ``AutoModelForSequenceClassification`` NLI model (2- or 3-class head), eval mode.
        tokenizer: its tokenizer.
        hypothesis_template: the label's sentence, with ``{}`` for the label.
        multi_label: score each label on its own (entailment against contradiction) instead of
            a softmax over the labels.
        max_length: the longest pair; default :func:`~genclf_harness.backends.mlm.encoder_max_length`.
        batch_size: (premise, hypothesis) pairs per forward pass.
        weights_source: what the manifest records (default from the model).
    """

    def __init__(self, model: Any, tokenizer: Any, *, hypothesis_template: str = DEFAULT_HYPOTHESIS_TEMPLATE,
                 multi_label: bool = False, max_length: int | None = None, batch_size: int = 32,
                 weights_source: str | None = None, device: torch.device | str | None = None) -> None:
        self.entailment_id, self.contradiction_id = entailment_ids(model.config)
        self.hypothesis_template = check_hypothesis_template(hypothesis_template)
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.model = model
        self.tokenizer = tokenizer
        self.multi_label = bool(multi_label)
        self.max_length = int(max_length) if max_length else encoder_max_length(model.config, tokenizer)
        self.batch_size = int(batch_size)
        self.weights_source = weights_source or describe_weights(model)
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.last_stats = ScoringStats()

    @classmethod
    def from_pretrained(cls, pretrained: str, *, dtype: str = "float32", device: str | None = None,
                        revision: str | None = None, trust_remote_code: bool = False,
                        allow_untrained_head: bool = False, **scorer_kwargs: Any) -> NLIScorer:
        """Load an NLI cross-encoder (folder or hub id); a checkpoint whose classification head is not
        in its weights is refused unless ``allow_untrained_head``."""
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        path = resolve_encoder(pretrained)
        model, info = AutoModelForSequenceClassification.from_pretrained(
            path, dtype=getattr(torch, dtype), revision=revision, trust_remote_code=trust_remote_code,
            output_loading_info=True)
        missing = sorted(info.get("missing_keys") or ())
        if missing and not allow_untrained_head:
            raise NLILabelError(f"{pretrained}: the checkpoint has no trained classification head (missing: "
                                f"{', '.join(missing)}); train one with genclf-train nli")
        entailment_ids(model.config)  # before the tokenizer loads
        if device:
            model.to(device)
        tokenizer = AutoTokenizer.from_pretrained(path, revision=revision, trust_remote_code=trust_remote_code)
        return cls(model.eval(), tokenizer, weights_source=describe_weights(model, missing, head="classification head"),
                   **scorer_kwargs)

    def score(self, prompts: Sequence[LabelPrompt], *, show_progress: bool = True,
              hypothesis_template: str | None = None) -> list[PromptScores]:
        """Score every label of every prompt; ``hypothesis_template`` overrides the scorer's for this call."""
        template = check_hypothesis_template(hypothesis_template or self.hypothesis_template)
        premises = [p.context for p in prompts for _ in p.continuations]
        hypotheses = [template.format(c.strip()) for p in prompts for c in p.continuations]
        stats = ScoringStats(prompts=len(prompts), continuations=len(premises))
        self.last_stats = stats
        premise_tokens = [len(ids) for ids in self.tokenizer([p.context for p in prompts],
                                                             add_special_tokens=False)["input_ids"]] if prompts else []
        hypothesis_tokens = self.tokenizer(hypotheses, add_special_tokens=False)["input_ids"] if hypotheses else []
        specials = self.tokenizer.num_special_tokens_to_add(pair=True)
        lengths = [tokens + specials for p, tokens in zip(prompts, premise_tokens, strict=True)
                   for _ in p.continuations]
        lengths = [min(self.max_length, n + len(h)) for n, h in zip(lengths, hypothesis_tokens, strict=True)]
        # Longest first (as lm-eval orders its requests): batches hold pairs of similar length, so
        # little padding is fed (padding moves float32 logits by about 1e-7: a different sum order).
        order = sorted(range(len(premises)), key=lambda i: (-lengths[i], i))
        sorted_logits = self.pair_logits([premises[i] for i in order], [hypotheses[i] for i in order], stats=stats,
                                         show_progress=show_progress)
        logits = torch.empty_like(sorted_logits)
        logits[torch.tensor(order, dtype=torch.long)] = sorted_logits
        results, at = [], 0
        for prompt, tokens in zip(prompts, premise_tokens, strict=True):
            k = len(prompt.continuations)
            rows = logits[at:at + k]
            longest = max(len(h) for h in hypothesis_tokens[at:at + k])
            at += k
            truncated = tokens + longest + specials > self.max_length
            stats.truncated_prompts += truncated
            results.append(_prompt_scores(
                prompt, label_logprobs(rows[:, self.entailment_id], rows[:, self.contradiction_id],
                                       multi_label=self.multi_label),
                multi_label=self.multi_label, context_tokens=tokens, truncated=truncated))
        if stats.truncated_prompts:
            logger.warning("%d of %d premises were cut to fit max_length %d (the hypotheses never are)",
                           stats.truncated_prompts, len(prompts), self.max_length)
        return results

    def pair_logits(self, premises: Sequence[str], hypotheses: Sequence[str], *, stats: ScoringStats | None = None,
                    show_progress: bool = False) -> torch.Tensor:
        """(N, C) float32 logits of the (premise, hypothesis) pairs, premises truncated first."""
        stats = stats if stats is not None else ScoringStats()
        out = []
        names = set(self.tokenizer.model_input_names)
        with tqdm(total=len(premises), desc="Scoring labels (NLI)", disable=not show_progress) as progress:
            for start in range(0, len(premises), self.batch_size):
                stop = start + self.batch_size
                try:
                    encoded = self.tokenizer(list(premises[start:stop]), list(hypotheses[start:stop]),
                                             truncation="only_first", max_length=self.max_length, padding=True,
                                             return_tensors="pt")
                except Exception as err:  # noqa: BLE001 - tokenizers says "too short" in several exception types
                    if "too short" not in str(err) and "truncat" not in str(err).lower():
                        raise
                    raise HypothesisTemplateError(f"a hypothesis alone is longer than max_length {self.max_length} "
                                                  f"tokens ({hypotheses[start][:60]!r}...); shorten the template "
                                                  "or the labels") from None
                inputs = {k: v.to(self.device) for k, v in encoded.items() if k in names}
                with torch.inference_mode():
                    out.append(self.model(**inputs).logits.float().cpu())
                mask = encoded["attention_mask"]
                stats.batches += 1
                stats.forwarded_tokens += int(mask.sum())
                stats.padded_tokens += int(mask.numel())
                progress.update(len(mask))
        return torch.cat(out) if out else torch.empty((0, len(self.model.config.label2id)))


class CausalNLIScorer:
    """The NLI method with a causal LM as the judge (implements ``Scorer``): per label it asks

        Premise: {premise}
        Hypothesis: {hypothesis}
        Does the premise entail the hypothesis? Answer yes or no.
        Answer:                                    <- " yes" / " no" scored

    (in the chat template's user turn when the tokenizer has one, ``Answer:`` then starting the
    assistant's turn, as the verifiers put their prompts) through
    :class:`~genclf_harness.backends.scorer.HFScorer`, and takes ``log P(" yes") - log P(" no")`` as
    the entailment logit: single-label scores are a softmax of it over the labels, multi-label ones
    its sigmoid (the yes/no pair standing for entailment/contradiction).
    """

    def __init__(self, scorer: Any, *, hypothesis_template: str = DEFAULT_HYPOTHESIS_TEMPLATE,
                 multi_label: bool = False, chat: bool | None = None, weights_source: str | None = None) -> None:
        from genclf_harness.backends.generation import has_chat_template

        self.scorer = scorer
        self.hypothesis_template = check_hypothesis_template(hypothesis_template)
        self.multi_label = bool(multi_label)
        self.chat = has_chat_template(scorer.tokenizer) if chat is None else bool(chat)
        self.weights_source = weights_source or describe_weights(scorer.model)
        self.last_stats = ScoringStats()

    @classmethod
    def from_pretrained(cls, pretrained: str | None = None, *, hypothesis_template: str = DEFAULT_HYPOTHESIS_TEMPLATE,
                        multi_label: bool = False, chat: bool | None = None, **scorer_kwargs: Any) -> CausalNLIScorer:
        """A causal LM folder or hub id (``None``/``default``: the embedded default model)."""
        from genclf_harness.backends.scorer import HFScorer

        return cls(HFScorer.from_pretrained(pretrained, **scorer_kwargs), hypothesis_template=hypothesis_template,
                   multi_label=multi_label, chat=chat)

    @property
    def model(self) -> Any:
        return self.scorer.model

    @property
    def tokenizer(self) -> Any:
        return self.scorer.tokenizer

    def question(self, premise: str, hypothesis: str) -> LabelPrompt:
        """The yes/no prompt of one (premise, hypothesis) pair."""
        from genclf_harness.backends.generation import chat_prompt

        user = f"Premise: {premise.strip()}\nHypothesis: {hypothesis}\n{CAUSAL_QUESTION}"
        context = chat_prompt(self.tokenizer, user, assistant_prefix="Answer:") if self.chat else user + "\nAnswer:"
        return LabelPrompt(context, (" yes", " no"))

    def score(self, prompts: Sequence[LabelPrompt], *, show_progress: bool = True,
              hypothesis_template: str | None = None) -> list[PromptScores]:
        template = check_hypothesis_template(hypothesis_template or self.hypothesis_template)
        questions = [self.question(p.context, template.format(c.strip())) for p in prompts for c in p.continuations]
        answers = self.scorer.score(questions, show_progress=show_progress)
        self.last_stats = self.scorer.last_stats
        results, at = [], 0
        for prompt in prompts:
            k = len(prompt.continuations)
            chunk = answers[at:at + k]
            at += k
            logits = torch.tensor([a.continuations[0].logprob - a.continuations[1].logprob for a in chunk],
                                  dtype=torch.float64)
            # yes/no are the entailment/contradiction pair: their 2-way softmax is the sigmoid.
            logprobs = label_logprobs(logits, torch.zeros_like(logits), multi_label=self.multi_label)
            results.append(_prompt_scores(prompt, logprobs, multi_label=self.multi_label,
                                          context_tokens=max(a.context_tokens for a in chunk),
                                          truncated=any(a.truncated for a in chunk)))
        return results
