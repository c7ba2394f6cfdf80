"""Best-of-N: selection rules on hand-made candidates, the candidates file, resumable sampling.

Sampling is driven by a scripted generator (a stand-in for a model, so the resume logic can be
checked call by call); the real transformers generator is tested in test_verifiers.py.
"""

from __future__ import annotations

import json
import math

import pytest

from genclf_harness.backends.generation import Generator, SamplingSettings
from genclf_harness.verifiers.genrm.bon import (
    Candidate,
    CandidateSet,
    CandidatesFileError,
    best_of_n,
    evaluate_selection,
    gap_closed,
    majority_vote,
    pass_at_k,
    read_candidates,
    sample_candidates,
    select,
    weighted_vote,
    write_candidates,
)
from genclf_harness.verifiers.genrm.problems import LAST_LETTER, Problem


def cands(*specs):
    """(answer, correct, score) triples -> candidates."""
    return [Candidate(f"... The answer is {a}.", a, ok, s) for a, ok, s in specs]


def test_first_sample_and_pass_at_n():
    pool = cands(("1", False, 0.1), ("2", True, 0.2))
    assert not select(pool, "first_sample")
    assert select(pool, "pass_at_n")
    assert not select(cands(("1", False, 0.1), (None, False, 0.9)), "pass_at_n")


def test_majority_vote_counts_answers_and_ignores_unparseable():
    pool = cands(("5", False, 0.9), (None, False, 0.9), (None, False, 0.9), ("7", True, 0.1), ("7", True, 0.1))
    assert majority_vote(pool) == "7"
    assert select(pool, "majority")


def test_majority_vote_ties_go_to_the_answer_seen_first():
    assert majority_vote(cands(("3", False, 0), ("4", True, 0), ("4", True, 0), ("3", False, 0))) == "3"
    assert majority_vote(cands((None, False, 0))) is None
    assert not select(cands((None, False, 0)), "majority")


def test_best_of_n_takes_the_highest_score_and_the_first_on_ties():
    pool = cands(("1", False, 0.4), ("2", True, 0.8), ("3", False, 0.8))
    assert best_of_n(pool).answer == "2"
    assert select(pool, "best_of_n")
    # An unparseable candidate can win best-of-N (and is then wrong).
    assert not select(cands(("1", True, 0.2), (None, False, 0.95)), "best_of_n")


def test_weighted_vote_sums_scores_per_answer():
    # "9" has the single best candidate, "4" the larger total.
    pool = cands(("9", False, 0.9), ("4", True, 0.5), ("4", True, 0.5))
    assert best_of_n(pool).answer == "9"
    assert weighted_vote(pool) == "4"
    assert select(pool, "weighted_vote") and not select(pool, "best_of_n")


def test_verifier_rules_need_scores():
    pool = [Candidate("x", "1", True)]
    with pytest.raises(ValueError, match="score_candidates"):
        best_of_n(pool)
    sets = [CandidateSet("p", "q", "1", pool)]
    assert set(evaluate_selection(sets)) == {"first_sample", "majority", "pass_at_n"}


def test_evaluate_selection_uses_the_first_n_candidates():
    sets = [
        CandidateSet("a", "q", "1", cands(("2", False, 0.1), ("1", True, 0.9), ("1", True, 0.8))),
        CandidateSet("b", "q", "5", cands(("5", True, 0.7), ("6", False, 0.2), ("6", False, 0.3))),
    ]
    full = evaluate_selection(sets)
    assert full == {"first_sample": 0.5, "majority": 0.5, "best_of_n": 1.0, "weighted_vote": 1.0, "pass_at_n": 1.0}
    one = evaluate_selection(sets, n=1)
    assert one["pass_at_n"] == one["first_sample"] == one["best_of_n"] == 0.5
    assert gap_closed(full["first_sample"], full["best_of_n"], full["pass_at_n"]) == 1.0
    assert math.isnan(gap_closed(0.5, 0.5, 0.5))


def test_pass_at_k_matches_the_combinatorial_formula():
    assert pass_at_k(8, 0, 8) == 0.0
    assert pass_at_k(8, 1, 8) == 1.0
    assert pass_at_k(8, 1, 1) == pytest.approx(1 / 8)
    assert pass_at_k(10, 3, 2) == pytest.approx(1 - math.comb(7, 2) / math.comb(10, 2))
    with pytest.raises(ValueError):
        pass_at_k(4, 5, 1)


# -- the candidates file -------------------------------------------------------------------------


class ScriptedGenerator:
    """Answers each prompt with numbered texts and records every call."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.calls: list[tuple[int, int | None]] = []

    def generate(self, prompts, *, n=1, max_new_tokens=256, temperature=1.0, top_p=1.0, seed=None, stop=(),
                 show_progress=False):
        self.calls.append((len(prompts), seed))
        out = []
        for prompt in prompts:
            words = prompt.rsplit('words in "', 1)[1].split('"', 1)[0].split()
            right = "".join(w[-1] for w in words)
            out.append([f"The answer is {right}." if i % 2 == 0 else f"The answer is x{i}." for i in range(n)])
        return out


class PlainTokenizer:
    chat_template = None


def test_scripted_generator_follows_the_protocol():
    assert isinstance(ScriptedGenerator(PlainTokenizer()), Generator)


def test_sampling_writes_checks_and_resumes(tmp_path):
    problems = LAST_LETTER.problems("test", 5, seed=3)
    settings = SamplingSettings(n=4, max_new_tokens=16, temperature=0.7, seed=10, stop=("\n\n",))
    path = tmp_path / "cands.jsonl"
    generator = ScriptedGenerator(PlainTokenizer())
    sets = sample_candidates(generator, LAST_LETTER, problems[:3], path, settings, chunk_size=2,
                             generator_name="scripted", show_progress=False)
    assert generator.calls == [(2, 10), (1, 11)]  # chunk i is seeded with seed + i
    assert [s.id for s in sets] == [p.id for p in problems[:3]]
    assert [c.correct for c in sets[0].candidates] == [True, False, True, False]
    assert sets[0].candidates[0].answer == problems[0].answer
    record = json.loads(path.read_text().splitlines()[0])
    assert record["sampling"]["temperature"] == 0.7 and record["sampling"]["generator"] == "scripted"
    assert record["sampling"]["stop"] == ["\n\n"] and record["sampling"]["chunk"] == 0

    # An interrupted write leaves half a line: it is dropped, and only missing problems are sampled.
    with open(path, "a") as handle:
        handle.write('{"id": "half')
    generator = ScriptedGenerator(PlainTokenizer())
    again = sample_candidates(generator, LAST_LETTER, problems, path, settings, chunk_size=2,
                              generator_name="scripted", show_progress=False)
    assert generator.calls == [(1, 11), (1, 12)]  # problem 3 completes chunk 1; problem 4 is chunk 2
    assert [s.id for s in again] == [p.id for p in problems]
    assert len(read_candidates(path)) == 5

    with pytest.raises(CandidatesFileError, match="sampled with"):
        sample_candidates(ScriptedGenerator(PlainTokenizer()), LAST_LETTER, problems, path,
                          SamplingSettings(n=4, max_new_tokens=16, temperature=1.0, seed=10, stop=("\n\n",)),
                          chunk_size=2, generator_name="scripted", show_progress=False)


def test_candidates_file_round_trip_and_errors(tmp_path):
    sets = [CandidateSet("p1", "Q?", "3", cands(("3", True, 0.5), (None, False, None)), task="gsm8k",
                         sampling={"n": 2}, verifier="v")]
    path = tmp_path / "out" / "c.jsonl"
    write_candidates(path, sets)
    back = read_candidates(path)
    assert back[0].to_dict() == sets[0].to_dict()
    assert not back[0].scored
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x"}\n{"id": "y"}\n')
    with pytest.raises(CandidatesFileError, match="bad.jsonl:1"):
        read_candidates(bad)
    with pytest.raises(CandidatesFileError, match="does not exist"):
        read_candidates(tmp_path / "missing.jsonl")


def test_duplicate_problem_ids_are_refused(tmp_path):
    problem = Problem("same", 'Take the last letters of the words in "a b" and concatenate them.', "ab")
    with pytest.raises(ValueError, match="unique"):
        sample_candidates(ScriptedGenerator(PlainTokenizer()), LAST_LETTER, [problem, problem],
                          tmp_path / "c.jsonl", SamplingSettings(), show_progress=False)
