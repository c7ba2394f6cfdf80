"""The synthetic algorithmic tasks of the GenRM paper: last-letter concatenation and word sorting.

Problems are drawn from a fixed vocabulary of 312 short common English words with a seeded generator,
so a (task, split, count, seed) always gives the same problems. Train and test are disjoint by
construction: a problem belongs to the test split exactly when a hash of its word list falls in
the test quarter, so no test problem (the same words in the same order) is ever a training problem.
The vocabulary itself is shared, as in the paper's name lists.

Each task has an exact checker on the final answer (the text after "The answer is"), a reference
chain-of-thought solution in the format of the few-shot prompt, and corruptions of it (wrong
letters, wrong order, a dropped word) used as synthetic negatives for verifier training.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from genclf_harness.verifiers.genrm.answers import extract_final_text

AlgorithmicTaskName = Literal["last_letter", "word_sorting"]
Split = Literal["train", "test"]

VOCABULARY: tuple[str, ...] = tuple(
    """ant apple arm bacon badge bag ball bat beach bear beard bed bee bell berry bird blade board
    boat bone book boot bow bowl box brick brook brush bulb bus cab cabin cake camel candy cap
    car cart cat cave chain chalk chess chin clay cliff clock cloth coat coin cord corn cow crab
    crown cube cup dart deer desk dice dish dog doll door dot dove dress drum duck eagle ear egg
    elk fan farm fence fern field fig fish flag flame flea flute foam fog fork fox frog fruit
    gate gem gift glass glove glue goat gold grass gull gum harp hat hawk hay heart helm hen
    hill hook horn hose house hut ice ink iron jade jam jar jeep jet juice key kid king kite
    kiwi knife knot lab lake lamp leaf leg lemon lion lip llama loaf lock log mango map maple
    mask mast mat meal medal melon milk mill mint moon mop moth mouse mud mule nail nest net
    nose nurse nut oak oar ocean olive onion otter oven owl owner paint palm pan panda paper
    park path paw pea pear pearl pen piano pie pig pilot pin pipe pizza plant plate pond pony
    pork pot purse quail queen quilt radio raft rail rain rat reed rice ring road robin robot
    rock rod roof rope rose row rug sail salad salt sand saw scarf sea seed shark shed sheep
    shell ship shoe silk skirt skunk sky sled slide slug smoke snake snow soap sock sofa soil
    song soup spoon stamp star steam stew stone straw sun swan table tank tape tea tent tide tie
    tiger tile tin toad toast toe tomb tool torch towel town toy train tray tree truck tub tuba
    tulip tusk van vase veil vest vine wall wave web whale wheat wheel whip wind wing witch wolf
    wood worm yak yarn yoke zebra zoo""".split()
)
"""312 common English nouns of three to five letters. Short words give a small model a
chance: SmolLM2-135M-Instruct puts about 0.1 of its probability on the right last letter of a
word (about 0.2 for three-letter words), and spells words letter by letter no better."""
_TEST_SHARE = 4  # one problem in four (by hash) is a test problem


@dataclass(frozen=True, slots=True)
class AlgorithmicProblem:
    """One problem: its words, the question text and the exact answer."""

    id: str
    task: AlgorithmicTaskName
    words: tuple[str, ...]
    question: str
    answer: str


def question_text(task: AlgorithmicTaskName, words: Sequence[str]) -> str:
    if task == "last_letter":
        return f'Take the last letters of the words in "{" ".join(words)}" and concatenate them.'
    if task == "word_sorting":
        return f"Sort the following words alphabetically: {', '.join(words)}."
    raise ValueError(f"unknown algorithmic task {task!r}; choose last_letter or word_sorting")


def gold_answer(task: AlgorithmicTaskName, words: Sequence[str]) -> str:
    if task == "last_letter":
        return "".join(word[-1] for word in words)
    if task == "word_sorting":
        return " ".join(sorted(words))
    raise ValueError(f"unknown algorithmic task {task!r}; choose last_letter or word_sorting")


def problem_split(words: Sequence[str]) -> Split:
    digest = hashlib.sha256(" ".join(words).encode()).digest()
    return "test" if digest[0] % _TEST_SHARE == 0 else "train"


def make_problems(
    task: AlgorithmicTaskName,
    split: Split,
    count: int,
    *,
    seed: int = 0,
    num_words: tuple[int, int] = (1, 2),
    vocabulary: Sequence[str] = VOCABULARY,
) -> list[AlgorithmicProblem]:
    """``count`` distinct problems of one split, each with ``num_words[0]..num_words[1]`` distinct words."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    low, high = num_words
    if not 1 <= low <= high <= len(vocabulary):
        raise ValueError(f"num_words must be a range within 1..{len(vocabulary)}, got {num_words}")
    question_text(task, ["x"])  # validates the task name
    rng = random.Random(f"{task}:{seed}:{low}-{high}")
    seen: set[tuple[str, ...]] = set()
    problems: list[AlgorithmicProblem] = []
    attempts = 0
    while len(problems) < count:
        attempts += 1
        if attempts > 50 * count + 1000:
            raise ValueError(f"cannot draw {count} distinct {split} problems from this vocabulary and word range")
        words = tuple(rng.sample(list(vocabulary), rng.randint(low, high)))
        if words in seen or problem_split(words) != split:
            continue
        seen.add(words)
        problems.append(
            AlgorithmicProblem(
                id=f"{task}-{split}-{seed}-{len(problems)}",
                task=task,
                words=words,
                question=question_text(task, words),
                answer=gold_answer(task, words),
            )
        )
    return problems


def reference_solution(task: AlgorithmicTaskName, words: Sequence[str]) -> str:
    """The step-by-step solution in the format of the few-shot prompt."""
    if task == "last_letter":
        steps = " ".join(f'The last letter of "{word}" is "{word[-1]}".' for word in words)
        return f"{steps} The answer is {''.join(word[-1] for word in words)}."
    if task == "word_sorting":
        steps = " ".join(f'"{word}" starts with "{word[0]}".' for word in words)
        ordered = sorted(words)
        return f"{steps} In alphabetical order: {', '.join(ordered)}. The answer is {' '.join(ordered)}."
    raise ValueError(f"unknown algorithmic task {task!r}")


def extract_answer(task: AlgorithmicTaskName, text: str) -> str | None:
    """The final answer of a solution, normalised for comparison (None if it gives none)."""
    answer = extract_final_text(text)
    if answer is None:
        return None
    if task == "last_letter":
        return answer.replace(" ", "")
    return " ".join(answer.split())


def is_correct(task: AlgorithmicTaskName, text: str, gold: str) -> bool:
    """Exact check of a solution's final answer against the gold answer."""
    return extract_answer(task, text) == gold


def corrupt_solution(task: AlgorithmicTaskName, words: Sequence[str], rng: random.Random) -> str:
    """A reference solution with one plausible mistake; its final answer is always wrong."""
    words = list(words)
    gold = gold_answer(task, words)
    for _ in range(20):
        text = _corrupt_once(task, words, rng)
        if extract_answer(task, text) != gold:
            return text
    raise RuntimeError(f"could not corrupt the solution of {words}")  # pragma: no cover


_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _corrupt_once(task: AlgorithmicTaskName, words: list[str], rng: random.Random) -> str:
    if task == "last_letter":
        letters = [word[-1] for word in words]
        kind = rng.choice(("first_letter", "second_last", "random_letter", "final_only", "swap", "drop"))
        at = rng.randrange(len(words))
        claimed = list(letters)
        final = None
        if kind == "first_letter":
            claimed[at] = words[at][0]
        elif kind == "second_last":
            claimed[at] = words[at][-2]
        elif kind == "random_letter":
            claimed[at] = rng.choice([c for c in _LETTERS if c != letters[at]])
        elif kind == "final_only":
            # Every step right, the final answer wrong: checking only the steps is not enough.
            final = list(letters)
            final[at] = rng.choice([c for c in _LETTERS if c != letters[at]])
        elif kind == "swap" and len(words) > 1:
            final = list(reversed(letters))
        else:  # drop a word's letter from the concatenation
            final = letters[:at] + letters[at + 1 :]
        steps = " ".join(f'The last letter of "{w}" is "{c}".' for w, c in zip(words, claimed, strict=True))
        final = final if final is not None else claimed
        return f"{steps} The answer is {''.join(final)}."
    ordered = sorted(words)
    kind = rng.choice(("swap", "unsorted", "reverse", "drop"))
    wrong = list(ordered)
    if kind == "swap" and len(wrong) > 1:
        i = rng.randrange(len(wrong) - 1)
        wrong[i], wrong[i + 1] = wrong[i + 1], wrong[i]
    elif kind == "unsorted":
        wrong = list(words)
    elif kind == "reverse":
        wrong = list(reversed(ordered))
    else:
        wrong.pop(rng.randrange(len(wrong)))
    steps = " ".join(f'"{word}" starts with "{word[0]}".' for word in words)
    return f"{steps} In alphabetical order: {', '.join(wrong)}. The answer is {' '.join(wrong)}."
