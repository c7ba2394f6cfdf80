"""The verification prompt of GenRM, one definition for scoring, training and the lm-eval tasks.

Direct verification (the verifier answers at once)::

    user:      Question: {question}
               Answer: {solution}
               Is the answer correct (Yes/No)?
    assistant: Yes            <- scored: P("Yes") vs P("No")

Chain-of-thought verification (GenRM-CoT)::

    user:      Question: {question}
               Answer: {solution}
               Let's verify step by step.
    assistant: {sampled rationale}
               Is the answer correct (Yes/No)? Yes     <- scored after each rationale

Chain-of-thought verifiers are trained here on *reference-guided* rationales
(:meth:`VerificationFormat.reference_rationale`): the rationale solves the problem again (the task's
reference solution) and then states the checked solution's final answer::

    assistant: Solving it again: The last letter of "wave" is "e". The answer is e.
               The solution's answer is o.
               Is the answer correct (Yes/No)? No

so a verifier learns to re-derive the answer and compare, and at test time it writes its own
rationale (:meth:`GenRM.score_cot`). The GenRM paper's CoT rationales came from a larger model
given the reference solution; for tasks with an exact reference this builds them without one.

The answer strings, and why:

- with a chat template the verdict is the first thing the assistant says, so the answers are
  ``"Yes"``/``"No"`` *without* a leading space, right after the template's assistant marker and
  its newline (SmolLM2: ``<|im_start|>assistant\\n`` then token ``Yes``). That is what SFT trains
  (the completion is the assistant message ``Yes``) and what lm-eval's ``--apply_chat_template``
  produces for a Yes/No multiple-choice task. The scorer moves the marker's trailing newline into
  both continuations (lm-eval's split), and its log-prob is the same for both, so it cancels in
  the normalisation below;
- in running text (no chat template, or after a CoT rationale) the answers follow the question
  mark after a space: ``" Yes"``/``" No"``.

The score is P("Yes") normalised over the two answers: ``P(Yes) / (P(Yes) + P(No))``, i.e.
``sigmoid(log P(Yes) - log P(No))``. The raw probability of the "Yes" token also carries how much
the model wants to answer anything else ("The", "yes", a newline), which is a property of the
prompt format, not of the solution; normalising removes it. A verifier trained on Yes/No puts
nearly all its mass on the two tokens, where the two definitions agree; for an untrained model
the normalised form is the one that ranks solutions sensibly.
"""

from __future__ import annotations

from dataclasses import dataclass

from genclf_harness.backends.generation import chat_prompt, has_chat_template
from genclf_harness.backends.protocol import LabelPrompt


@dataclass(frozen=True, slots=True)
class VerificationFormat:
    """How a (question, solution) pair is put to the verifier."""

    template: str = "Question: {question}\nAnswer: {solution}\n{ask}"
    """The user message; ``{ask}`` is ``question`` (direct) or ``cot_instruction`` (CoT)."""
    question: str = "Is the answer correct (Yes/No)?"
    cot_instruction: str = "Let's verify step by step."
    yes: str = "Yes"
    no: str = "No"
    rationale_intro: str = "Solving it again:"
    """How a reference-guided rationale (:meth:`reference_rationale`) starts."""

    def user_message(self, question: str, solution: str, *, cot: bool = False) -> str:
        return self.template.format(
            question=question.strip(), solution=solution.strip(), ask=self.cot_instruction if cot else self.question
        )

    def answers(self, *, after_marker: bool) -> tuple[str, str]:
        """(yes, no) continuations: bare after a chat assistant marker, else after a space."""
        return (self.yes, self.no) if after_marker else (" " + self.yes, " " + self.no)

    def label_prompt(self, tokenizer: object, question: str, solution: str, *, chat: bool | None = None) -> LabelPrompt:
        """The direct-verification prompt; ``chat=None`` uses the chat template when there is one."""
        use_chat = has_chat_template(tokenizer) if chat is None else chat
        user = self.user_message(question, solution)
        if use_chat:
            return LabelPrompt(chat_prompt(tokenizer, user), self.answers(after_marker=True))
        return LabelPrompt(user, self.answers(after_marker=False))

    def cot_prompt(self, tokenizer: object, question: str, solution: str, *, chat: bool | None = None) -> str:
        """The prompt a CoT rationale is sampled after."""
        use_chat = has_chat_template(tokenizer) if chat is None else chat
        user = self.user_message(question, solution, cot=True)
        return chat_prompt(tokenizer, user) if use_chat else user + "\n"

    def after_rationale(self, cot_prompt: str, rationale: str) -> LabelPrompt:
        """Score the verdict after a sampled rationale: ``...rationale\\nIs the answer correct (Yes/No)? Yes``."""
        context = f"{cot_prompt}{rationale.rstrip()}\n{self.question}"
        return LabelPrompt(context, self.answers(after_marker=False))

    def reference_rationale(self, reference: str, answer: str | None) -> str:
        """A verification rationale guided by a reference solution: solve the problem again, then
        state the checked solution's final answer, so the verdict compares two answers."""
        checked = f"The solution's answer is {answer}." if answer else "The solution gives no final answer."
        return f"{self.rationale_intro} {reference.strip()}\n{checked}"

    def training_example(self, question: str, solution: str, correct: bool, *, chat: bool = True,
                         rationale: str | None = None) -> dict:
        """A TRL prompt-completion row teaching the verdict (conversational when ``chat``).

        With a ``rationale`` it is a chain-of-thought example: the prompt is :meth:`cot_prompt`'s and
        the completion is the rationale, then the question and the verdict, exactly the text
        :meth:`after_rationale` scores (``rationale\nIs the answer correct (Yes/No)? Yes``).
        """
        verdict = self.yes if correct else self.no
        if rationale is not None:
            user = self.user_message(question, solution, cot=True)
            answer = f"{rationale.rstrip()}\n{self.question} {verdict}"
            if chat:
                return {"prompt": [{"role": "user", "content": user}],
                        "completion": [{"role": "assistant", "content": answer}]}
            return {"prompt": user + "\n", "completion": answer}
        user = self.user_message(question, solution)
        if chat:
            return {"prompt": [{"role": "user", "content": user}], "completion": [{"role": "assistant", "content": verdict}]}
        return {"prompt": user, "completion": " " + verdict}


DEFAULT_FORMAT = VerificationFormat()
