"""Final answers read from generated solutions, and compared, by parsing only (never ``eval``).

Numbers (GSM8K): the answer is taken from the first of these that the text contains:

1. GSM8K's final line ``#### N``;
2. the last LaTeX ``\\boxed{...}`` (nested braces allowed);
3. the last "answer is N" / "answer: N" / "Answer = N";
4. the last number anywhere in the text.

Inside the chosen span the first number is read; a number may carry a sign (``-`` or the Unicode
minus), thousands separators (``1,234,567``), decimals, a currency sign and a unit or percent sign
after it (ignored), or be a simple fraction (``3/4``, ``\\frac{3}{4}``). Numbers are normalised to
exact fractions, so ``18``, ``18.00``, ``$18`` and ``18 dollars`` are one answer; the canonical text
is the shortest decimal (``"0.5"``, ``"-1234"``) or ``p/q`` when no finite decimal exists.

Words (algorithmic tasks): :func:`extract_final_text` reads the sentence after the last "answer
is" (up to a full stop, question or exclamation mark followed by a space, or a newline),
lower-cased, with quotes and surrounding punctuation removed.
"""

from __future__ import annotations

import re
from fractions import Fraction

__all__ = [
    "answers_match",
    "canonical_number",
    "extract_boxed",
    "extract_final_text",
    "extract_number",
    "parse_number",
]

_MINUS = "\u2212\u2013"  # Unicode minus and en dash, both seen as minus signs in model output
_NUMBER = re.compile(
    rf"(?<![\w.])([-{_MINUS}]\s?)?\$?\s?"
    r"(\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)"
    r"(?:\s*/\s*(\d+)(?![\d.]))?"
)
_FRAC = re.compile(r"\\[dt]?frac\s*\{\s*([-\d.,\s]+)\}\s*\{\s*([-\d.,\s]+)\}")
_GSM8K_FINAL = re.compile(r"####\s*(.+)")
_SENTENCE_END = re.compile(r"\n|[.!?](?=\s|$)")
_ANSWER_IS = re.compile(r"answer\s*(?:is|:|=)\s*(?:[:=]\s*)?", re.IGNORECASE)


def parse_number(text: str) -> Fraction | None:
    """The first number in ``text`` as an exact fraction (None if there is none)."""
    text = _strip_latex(text)
    fraction = _FRAC.search(text)
    match = _NUMBER.search(text)
    if fraction and (match is None or fraction.start() <= match.start()):
        numerator, denominator = parse_number(fraction.group(1)), parse_number(fraction.group(2))
        if numerator is None or not denominator:
            return None
        return numerator / denominator
    if match is None:
        return None
    sign, digits, denominator = match.groups()
    value = Fraction(digits.replace(",", ""))
    if denominator is not None:
        if int(denominator) == 0:
            return None
        value /= int(denominator)
    return -value if sign else value


def canonical_number(value: Fraction) -> str:
    """``Fraction(1, 2)`` -> ``"0.5"``, ``Fraction(-1234)`` -> ``"-1234"``, ``Fraction(1, 3)`` -> ``"1/3"``."""
    if value.denominator == 1:
        return str(value.numerator)
    denominator = value.denominator
    for prime in (2, 5):
        while denominator % prime == 0:
            denominator //= prime
    if denominator != 1:
        return f"{value.numerator}/{value.denominator}"
    digits = 0
    while (value * 10**digits).denominator != 1:
        digits += 1
    return f"{float(value):.{digits}f}" if digits < 15 else f"{value.numerator}/{value.denominator}"


def extract_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` (or ``\\fbox{...}``), braces balanced."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    brace = text.find("{", start)
    if brace < 0:
        return None
    depth = 0
    for position in range(brace, len(text)):
        if text[position] == "{":
            depth += 1
        elif text[position] == "}":
            depth -= 1
            if depth == 0:
                return text[brace + 1 : position]
    return None


def extract_number(text: str) -> str | None:
    """The final numeric answer of a solution, canonical (see the module docstring), or None."""
    if not text:
        return None
    for span in _answer_spans(text):
        value = parse_number(span)
        if value is not None:
            return canonical_number(value)
    return None


def _answer_spans(text: str):
    final = _GSM8K_FINAL.findall(text)
    if final:
        yield final[-1]
    boxed = extract_boxed(text)
    if boxed is not None:
        yield boxed
    cues = list(_ANSWER_IS.finditer(text))
    if cues:
        yield text[cues[-1].end() :].split("\n", 1)[0]
    numbers = list(_NUMBER.finditer(_strip_latex(text)))
    if numbers:
        yield numbers[-1].group(0)


def _strip_latex(text: str) -> str:
    # "\$18", "18\%", "1{,}000", "\text{ dollars}" and "\!": read the number, not the markup.
    text = text.replace("{,}", ",").replace("\\$", "$").replace("\\%", "%").replace("\\!", "")
    return re.sub(r"\\(?:text|mathrm|textbf|mbox)\s*\{([^{}]*)\}", r" \1 ", text)


def extract_final_text(text: str) -> str | None:
    """The words after the last "answer is" (lower case, quotes and end punctuation removed)."""
    if not text:
        return None
    cues = list(_ANSWER_IS.finditer(text))
    if not cues:
        return None
    return normalise_text(_SENTENCE_END.split(text[cues[-1].end() :], maxsplit=1)[0])


def normalise_text(answer: str) -> str | None:
    """A text answer as :func:`extract_final_text` gives it (lower case, quotes and end
    punctuation removed, spaces collapsed), so a gold answer compares like an extracted one."""
    answer = answer.strip().strip("\"'`*“”‘’.,;:!?").strip()
    answer = re.sub(r"[\"'`*“”‘’]", "", answer)
    answer = re.sub(r"\s*,\s*|\s+", " ", answer)
    return answer.lower() or None


def answers_match(predicted: str | None, gold: str | None) -> bool:
    """Whether two extracted answers are the same: numbers by value, anything else by text."""
    if predicted is None or gold is None:
        return False
    left, right = parse_number(predicted), parse_number(gold)
    if left is not None and right is not None and _is_number_only(predicted) and _is_number_only(gold):
        return left == right
    return predicted.strip().lower() == gold.strip().lower()


def _is_number_only(text: str) -> bool:
    return bool(re.fullmatch(rf"\s*[-{_MINUS}]?\s*[\d.,/]+\s*", text))
