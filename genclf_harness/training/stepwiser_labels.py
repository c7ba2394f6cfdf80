"""The labelled steps a StepWiser data section describes: a labels file, a step-labelled folder's own
first-wrong-step labels, or Monte-Carlo labels from rollouts (of the policy's solutions to a reasoning
task, of its reference solutions and their corruptions, or of a step-labelled folder's solutions).

Split out of :mod:`genclf_harness.training.stepwiser` (the recipe: config, GRPO, evaluation).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from genclf_harness.training.stepwiser import StepWiserDataConfig

logger = logging.getLogger("genclf_harness.training.stepwiser")


def build_labels(data: StepWiserDataConfig) -> tuple[list[Any], dict[str, Any]]:
    """The labelled steps a data section describes (rollouts on the policy) and counts for the record."""
    import torch

    from genclf_harness.backends.generation import HFGenerator
    from genclf_harness.verifiers.genrm.problems import get_task
    from genclf_harness.verifiers.stepwise.labels import balance, estimate_q, labelled_steps, read_labels
    from genclf_harness.verifiers.stepwise.steps import split_steps

    if data.labels_file:
        steps = read_labels(data.labels_file)
        counts: dict[str, Any] = {"labels_file": data.labels_file}
    elif data.step_set and data.step_labels == "first_error":
        from genclf_harness.verifiers.stepwise.labels import steps_from_first_errors
        from genclf_harness.verifiers.stepwise.steps import load_processbench

        solutions = load_processbench(data.step_split, dataset=data.step_set)
        steps = steps_from_first_errors(solutions, data.max_steps_per_solution)
        counts = {"step_set": data.step_set, "step_split": data.step_split, "solutions": len(solutions)}
    else:
        task = get_task(data.task)
        policy = HFGenerator.from_pretrained(data.policy, dtype=data.policy_dtype)
        if data.step_set:  # Monte-Carlo labels for a step-labelled folder's own solutions
            trajectories, counts = _folder_trajectories(data, task, policy.tokenizer)
        else:
            trajectories, counts = _policy_trajectories(data, task, policy, split_steps)
        logger.info("Rolling out %d trajectories (%d steps) x %d continuations", len(trajectories),
                    sum(len(t.steps) for t in trajectories), data.rollouts)
        separator = "\n" if data.split == "lines" else "\n\n"
        with torch.inference_mode():
            estimates = estimate_q(policy, trajectories, task.is_correct, rollouts=data.rollouts,
                                   max_new_tokens=data.rollout_max_new_tokens, temperature=data.rollout_temperature,
                                   seed=data.seed, separator=separator, stop=task.stop, show_progress=True)
        del policy
        steps = labelled_steps(trajectories, estimates, data.rule, gamma=data.gamma, alpha=data.alpha, n=data.n)
        counts.update({"trajectories": len(trajectories), "mean_q0": sum(e.q[0] for e in estimates) / len(estimates),
                       "final_correct": sum(e.q[-1] for e in estimates)})
    counts["labelled"] = len(steps)
    counts["positive"] = sum(s.label for s in steps)
    if data.balance:
        steps = balance(steps, seed=data.seed)
        counts["balanced"] = len(steps)
    if data.max_examples is not None:
        steps = steps[: data.max_examples]
    if not steps:
        raise ValueError(f"no labelled steps to train on ({counts}): with balancing, both classes must occur; "
                         "use more problems or rollouts, or another rule")
    return steps, counts


def _policy_trajectories(data: StepWiserDataConfig, task: Any, policy: Any, split_steps: Any) -> tuple[list[Any], dict]:
    """The task's training problems solved by the policy (or their references and corruptions), split into steps."""
    from genclf_harness.verifiers.stepwise.labels import Trajectory

    problems = task.problems("train", data.num_problems, seed=data.problem_seed)
    prompts = [task.prompt(policy.tokenizer, p.question) for p in problems]
    if data.source == "sampled":
        texts = [s[0] for s in policy.generate(prompts, n=1, max_new_tokens=data.rollout_max_new_tokens,
                                               temperature=data.rollout_temperature, seed=data.seed, stop=task.stop)]
        solutions = [(p, prompt, text) for p, prompt, text in zip(problems, prompts, texts)]
    else:
        import random

        rng = random.Random(data.seed)
        solutions = []
        for p, prompt in zip(problems, prompts):
            solutions.append((p, prompt, p.solution or ""))
            wrong = task.corrupt(p, rng) if task.corrupt else None
            if wrong:
                solutions.append((p, prompt, wrong))
    trajectories = []
    for p, prompt, text in solutions:
        if not text.strip():
            continue
        parts = split_steps(text, data.split if data.source == "sampled" else "lines")
        trajectories.append(Trajectory(p.question, tuple(parts[: data.max_steps_per_solution]), p.answer, prompt,
                                       id=f"{p.id}-{len(trajectories)}"))
    if not trajectories:
        raise ValueError(f"no trajectories: the policy wrote no solution for {len(problems)} problems")
    return trajectories, {}


def _folder_trajectories(data: StepWiserDataConfig, task: Any, tokenizer: Any) -> tuple[list[Any], dict]:
    """A step-labelled folder's solutions as trajectories to roll out: the gold answer is the row's own
    (``fields.answer``) or that of the reasoning task's problem with the same question."""
    from genclf_harness.verifiers.stepwise.labels import Trajectory
    from genclf_harness.verifiers.stepwise.steps import load_processbench

    solutions = load_processbench(data.step_split, dataset=data.step_set)[: data.num_problems]
    known: dict[str, str] = {}
    for split in ("train", "test"):
        try:
            known.update((p.question.strip(), p.answer) for p in task.problems(split))
        except ValueError:  # a generated task (last_letter ...) has no fixed problem list
            break
    trajectories = []
    for solution in solutions:
        gold = task.extract(str(solution.answer)) if solution.answer is not None else known.get(solution.problem.strip())
        if gold is None:
            continue
        trajectories.append(Trajectory(solution.problem, tuple(solution.steps[: data.max_steps_per_solution]), gold,
                                       task.prompt(tokenizer, solution.problem), id=solution.id))
    if not trajectories:
        raise ValueError(f"data.step_set {data.step_set!r}: none of its first {len(solutions)} solutions has a gold "
                         f"answer (a row field 'answer', mapped by fields.answer, or the same question among "
                         f"{data.task!r}'s problems), which Monte-Carlo labels need")
    return trajectories, {"step_set": data.step_set, "step_split": data.step_split, "solutions": len(solutions),
                          "without_answer": len(solutions) - len(trajectories)}


