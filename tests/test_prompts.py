"""Prompt strategies without a model: golden renderings of every dimension and their combinations,
the retrievers on a small corpus, demonstration choice, and the answer parser's edge cases."""

from __future__ import annotations

import pytest

from genclf_harness.data import get_spec
from genclf_harness.data.specs import DataError
from genclf_harness.prompts import (
    SWEEP_STRATEGIES,
    BM25Retriever,
    ClassificationPrompt,
    DemonstrationPool,
    LabelSet,
    PromptStrategy,
    TfidfRetriever,
    parse_answer,
)
from genclf_harness.prompts.retrieval import tokenize

SST2 = get_spec("sst2")
AGNEWS = get_spec("agnews")
RTE = get_spec("rte")

DOC = {"id": "t-1", "text": "a gripping , beautifully acted film .", "label": 1}
POOL = [
    {"id": "p-0", "text": "a dull , lifeless film .", "label": 0},
    {"id": "p-1", "text": "beautifully acted and gripping to the end .", "label": 1},
    {"id": "p-2", "text": "the plot is a mess .", "label": 0},
    {"id": "p-3", "text": "a warm and funny story .", "label": 1},
    {"id": "p-4", "text": "a gripping , beautifully acted film indeed .", "label": 1},
    {"id": "p-5", "text": "tedious and far too long .", "label": 0},
]

INSTRUCTION = "Classify the sentiment of each movie review as negative or positive."
INPUT = "Review: a gripping , beautifully acted film .\nSentiment:"
DEFINITIONS = (
    "negative: the reviewer dislikes the film on the whole.\n"
    "positive: the reviewer likes the film on the whole."
)


def render(name: str, doc: dict = DOC, spec=SST2, pool=POOL) -> str:
    return PromptStrategy.parse(name).bind(spec, pool).render(doc).prompt


# ---------------------------------------------------------------- golden prompts, one per dimension


def test_zero_shot_is_the_default_tasks_prompt() -> None:
    assert render("zero") == f"{INSTRUCTION}\n\n{INPUT}"
    plain = ClassificationPrompt.render(SST2, DOC)
    assert render("zero") == f"{plain.instruction}\n\n{plain.query}"


def test_definitions() -> None:
    assert render("def") == f"{INSTRUCTION}\n{DEFINITIONS}\n\n{INPUT}"


def test_uncertainty_label() -> None:
    assert render("unc") == f"{INSTRUCTION}\nIf you cannot tell, answer uncertain.\n\n{INPUT}"
    rendered = PromptStrategy.parse("unc").bind(SST2).render(DOC)
    assert rendered.choices == ("negative", "positive", "uncertain")
    assert rendered.gold == 1 and rendered.target == "positive"


def test_numeric_labels() -> None:
    assert render("num") == (
        "Classify the sentiment of each movie review as 1 or 2.\n"
        "1 means negative.\n2 means positive.\n\n" + INPUT
    )
    rendered = PromptStrategy.parse("num").bind(SST2).render(DOC)
    assert rendered.choices == ("1", "2") and rendered.target == "2" and rendered.completion == " 2"


def test_similar_demonstrations_nearest_last() -> None:
    assert render("sim2") == (
        f"{INSTRUCTION}\n\n"
        "Review: beautifully acted and gripping to the end .\nSentiment: positive\n\n"
        "Review: a gripping , beautifully acted film indeed .\nSentiment: positive\n\n"
        f"{INPUT}"
    )


def test_all_dimensions_together() -> None:
    assert render("sim2_def_unc_num") == (
        "Classify the sentiment of each movie review as 1 or 2.\n"
        "1 means negative: the reviewer dislikes the film on the whole.\n"
        "2 means positive: the reviewer likes the film on the whole.\n"
        "If you cannot tell, answer uncertain.\n\n"
        "Review: beautifully acted and gripping to the end .\nSentiment: 2\n\n"
        "Review: a gripping , beautifully acted film indeed .\nSentiment: 2\n\n"
        f"{INPUT}"
    )


def test_definitions_with_uncertainty() -> None:
    assert render("def_unc") == f"{INSTRUCTION}\n{DEFINITIONS}\nIf you cannot tell, answer uncertain.\n\n{INPUT}"


def test_numeric_with_uncertainty_keeps_the_word() -> None:
    assert render("num_unc") == (
        "Classify the sentiment of each movie review as 1 or 2.\n1 means negative.\n2 means positive.\n"
        "If you cannot tell, answer uncertain.\n\n" + INPUT
    )
    assert PromptStrategy.parse("num_unc").bind(SST2).render(DOC).choices == ("1", "2", "uncertain")


def test_label_words_differ_from_names_agnews() -> None:
    doc = {"id": "a", "text": "Stocks rise.", "label": 3}
    assert PromptStrategy.parse("num_def").bind(AGNEWS).render(doc).prompt == (
        "Classify the topic of each news article as 1, 2, 3 or 4.\n"
        "1 means World: international news, politics and conflicts.\n"
        "2 means Sports: sport events, teams and athletes.\n"
        "3 means Business: companies, markets and the economy.\n"
        "4 means Technology: science, computing, the internet and technology companies' products.\n\n"
        "Article: Stocks rise.\nTopic:"
    )


def test_two_input_fields_rte() -> None:
    doc = {"id": "r", "premise": "Cats purr.", "hypothesis": "Cats make sounds.", "label": 0}
    rendered = PromptStrategy.parse("def").bind(RTE).render(doc)
    assert rendered.prompt == (
        "Decide whether each hypothesis follows from its premise: answer True or False.\n"
        "True: the premise implies the hypothesis.\n"
        "False: the premise does not imply the hypothesis.\n\n"
        "Cats purr.\nQuestion: Cats make sounds. True or False?\nAnswer:"
    )
    assert rendered.target == "True"


def test_rendered_prompt_forms_for_training() -> None:
    rendered = PromptStrategy.parse("sim2_num").bind(SST2, POOL).render(DOC)
    assert rendered.prompt == "\n\n".join((rendered.instruction, *rendered.demonstrations, rendered.input))
    assert rendered.query == "\n\n".join((*rendered.demonstrations, rendered.input))
    assert rendered.demonstration_ids == ("p-1", "p-4")  # nearest last
    assert rendered.messages() == [{"role": "user", "content": rendered.prompt}]
    assert rendered.messages_with_answer()[-1] == {"role": "assistant", "content": "2"}
    assert rendered.strategy == "sim2_num"


# ---------------------------------------------------------------- strategy values and names


@pytest.mark.parametrize("name", [*SWEEP_STRATEGIES, "tfidf3_def", "rand5_num_seed7", "bal3_def_unc_num"])
def test_names_round_trip(name: str) -> None:
    assert PromptStrategy.parse(name).name == name


def test_from_value_forms() -> None:
    by_name = PromptStrategy.from_value("sim3_def")
    assert by_name == PromptStrategy(icl="similar", k=3, definitions=True)
    assert PromptStrategy.from_value({"icl": "similar", "k": 3, "definitions": True}) == by_name
    assert PromptStrategy.from_value(None) == PromptStrategy() and PromptStrategy().name == "zero"
    assert PromptStrategy.from_value({"icl": "similar", "k": 3, "retriever": "tfidf"}).name == "tfidf3"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("sim3_dfe", "Did you mean 'def'"),
        ("sim3_bal2", "more than one in-context token"),
        ({"icl": "random"}, "needs k"),
        ({"icl": "zero", "k": 2}, "k is 0 exactly"),
        ({"labels": "numeric"}, "unknown field"),
        ({"label_style": "roman"}, "unknown label style"),
    ],
)
def test_bad_strategies_are_named(value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PromptStrategy.from_value(value)  # type: ignore[arg-type]


def test_demonstrations_need_a_pool() -> None:
    with pytest.raises(ValueError, match="needs a demonstration pool"):
        PromptStrategy.parse("rand3").bind(SST2)


def test_missing_definition_names_the_label() -> None:
    from dataclasses import replace

    spec = replace(SST2, definitions={"negative": "bad"})
    with pytest.raises(DataError, match="'positive'"):
        PromptStrategy.parse("def").bind(spec)


# ---------------------------------------------------------------- demonstrations


def test_random_demonstrations_are_seeded_per_document() -> None:
    prompter = PromptStrategy.parse("rand3").bind(SST2, POOL)
    first = prompter.render(DOC).demonstration_ids
    assert first == prompter.render(DOC).demonstration_ids
    assert len(set(first)) == 3
    other_seed = PromptStrategy.parse("rand3_seed7").bind(SST2, POOL)
    draws = {other_seed.render({**DOC, "id": f"t-{i}"}).demonstration_ids for i in range(20)}
    assert len(draws) > 5  # documents get different demonstrations


def test_balanced_demonstrations_cover_every_class() -> None:
    prompter = PromptStrategy.parse("bal3").bind(SST2, POOL)
    for i in range(30):
        rendered = prompter.render({**DOC, "id": f"t-{i}"})
        labels = [POOL[int(d[2:])]["label"] for d in rendered.demonstration_ids]
        assert sorted(set(labels)) == [0, 1] and len(labels) == 3


def test_balanced_with_fewer_demonstrations_than_classes() -> None:
    pool = [{"id": f"a{i}", "text": f"news {i}", "label": i % 4} for i in range(12)]
    rendered = PromptStrategy.parse("bal2").bind(AGNEWS, pool).render({"id": "x", "text": "y", "label": 0})
    labels = [int(d[1:]) % 4 for d in rendered.demonstration_ids]
    assert len(set(labels)) == 2


def test_the_document_itself_is_never_its_own_demonstration() -> None:
    duplicate = {"id": "other-id", "text": DOC["text"], "label": 1}
    pool = [*POOL, duplicate, {**DOC}]
    rendered = PromptStrategy.parse("sim3").bind(SST2, pool).render(DOC)
    assert "other-id" not in rendered.demonstration_ids and "t-1" not in rendered.demonstration_ids
    for name in ("rand5", "bal5"):
        for i in range(10):
            ids = PromptStrategy.parse(f"{name}_seed{i}").bind(SST2, pool).render(DOC).demonstration_ids
            assert {"other-id", "t-1"}.isdisjoint(ids)


def test_pool_too_small_is_an_error() -> None:
    with pytest.raises(DataError, match="too few"):
        PromptStrategy.parse("rand9").bind(SST2, POOL).render(DOC)


# ---------------------------------------------------------------- retrievers

CORPUS = [
    "the cat sat on the mat",
    "dogs chase cats in the park",
    "stock markets fell sharply on monday",
    "the cat and the dog are friends",
    "football team wins the league",
    "markets rally as stocks rise",
]


def test_tokenize() -> None:
    assert tokenize("Don't panic, 42_times!") == ["don", "t", "panic", "42", "times"]


@pytest.mark.parametrize("retriever", [BM25Retriever.build(CORPUS), TfidfRetriever.build(CORPUS)])
def test_retrievers_return_nearest_neighbours(retriever) -> None:
    assert retriever.top_k("stock markets", 2) == [2, 5]
    assert retriever.top_k("a cat on a mat", 1) == [0]
    assert retriever.top_k("football league", 1) == [4]
    # "cats" is not "cat" (no stemming); of the two documents sharing only "the", the shorter wins
    assert retriever.top_k("the cat", 2, exclude={0}) == [3, 4]
    assert len(retriever.top_k("zebra", 3)) == 3  # no overlap: ties, broken by corpus order
    assert retriever.top_k("zebra", 3) == [0, 1, 2]


def test_bm25_scores_by_hand() -> None:
    import math

    corpus = ["a b", "a c c", "d"]
    retriever = BM25Retriever.build(corpus, k1=1.5, b=0.75)
    avgdl = 2.0
    idf_c = math.log(1 + (3 - 1 + 0.5) / (1 + 0.5))
    tf, dl = 2, 3
    expected = idf_c * tf * 2.5 / (tf + 1.5 * (1 - 0.75 + 0.75 * dl / avgdl))
    assert retriever.scores("c")[1] == pytest.approx(expected)
    assert retriever.scores("c")[0] == 0.0


def test_tfidf_is_cosine_similarity() -> None:
    retriever = TfidfRetriever.build(CORPUS)
    assert retriever.scores(CORPUS[2])[2] == pytest.approx(1.0)
    assert max(retriever.scores("the cat")) <= 1.0 + 1e-12


def test_pool_builds_its_retriever_once() -> None:
    pool = DemonstrationPool.build(SST2, POOL, "bm25")
    a = PromptStrategy.parse("sim2").bind(SST2, pool)
    b = PromptStrategy.parse("sim2_num").bind(SST2, pool)
    assert a.pool is b.pool


# ---------------------------------------------------------------- answer parser

NATURAL = LabelSet.of(SST2)
NATURAL_UNC = LabelSet.of(SST2, uncertainty=True)
NUMERIC = LabelSet.of(SST2, "numeric")
SST5 = LabelSet.of(get_spec("sst5"))
AG = LabelSet.of(AGNEWS)
RTE_LABELS = LabelSet.of(RTE)


@pytest.mark.parametrize(
    ("labels", "text", "index", "status"),
    [
        (NATURAL, "positive", 1, "exact"),
        (NATURAL, " Positive", 1, "exact"),
        (NATURAL, "POSITIVE.", 1, "exact"),
        (NATURAL, '"negative"', 0, "exact"),
        (NATURAL, "**Negative**", 0, "exact"),
        (NATURAL, "\npositive\nReview: next one", 1, "exact"),
        (NATURAL, "Positive. The reviewer hated nothing negative.", 1, "leading"),
        (NATURAL, "The sentiment of this review is positive.", 1, "embedded"),
        (NATURAL, "Sentiment: negative", 0, "embedded"),
        (NATURAL, "It is not negative, it is positive", 1, "embedded"),
        (NATURAL, "not positive", None, "negated"),
        (NATURAL, "It isn't positive.", None, "negated"),
        (NATURAL, "negative or positive", None, "ambiguous"),
        (NATURAL, "Both positive and negative aspects", None, "ambiguous"),
        (NATURAL, "I love this movie!", None, "no_label"),
        (NATURAL, "positively great", None, "no_label"),
        (NATURAL, "", None, "empty"),
        (NATURAL, "  \n \n", None, "empty"),
        (NATURAL, "uncertain", None, "no_label"),
        (NATURAL, "2", None, "no_label"),
        (NATURAL_UNC, "Uncertain.", 2, "exact"),
        (NATURAL_UNC, "I'm not sure.", 2, "embedded"),
        (NATURAL_UNC, "I can't tell", 2, "embedded"),
        (NUMERIC, "2", 1, "exact"),
        (NUMERIC, "1.", 0, "exact"),
        (NUMERIC, "(2)", 1, "exact"),
        (NUMERIC, "Answer: 2", 1, "embedded"),
        (NUMERIC, "2 (positive)", 1, "leading"),
        (NUMERIC, "2 means positive", 1, "embedded"),
        (NUMERIC, "positive", 1, "exact"),
        (NUMERIC, "12", None, "no_label"),
        (NUMERIC, "1 or 2", None, "ambiguous"),
        (NUMERIC, "2 - negative", None, "ambiguous"),
        (SST5, "very negative", 0, "exact"),
        (SST5, "The review is very positive.", 4, "embedded"),
        (SST5, "negative", 1, "exact"),
        (AG, "Science/Technology", 3, "exact"),
        (AG, "technology", 3, "exact"),
        (AG, "Sci/Tech", None, "no_label"),
        (AG, "This article is about Business and markets.", 2, "embedded"),
        (RTE_LABELS, "False", 1, "exact"),
        (RTE_LABELS, "not_entailment", 1, "exact"),
        (RTE_LABELS, "The answer is True", 0, "embedded"),
    ],
)
def test_answer_parser(labels: LabelSet, text: str, index: int | None, status: str) -> None:
    parsed = parse_answer(text, labels)
    assert (parsed.index, parsed.status) == (index, status)
    assert parsed.parsed == (index is not None)


def test_answer_parser_never_evaluates_text() -> None:
    parsed = parse_answer("__import__('os').system('echo hacked') or 2", NUMERIC)
    assert parsed.index == 1  # read as text: "2" is the only label mentioned
