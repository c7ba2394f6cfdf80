"""The lm-eval task class of the ProcessBench tasks: one document per solution, one Yes/No request
pair per step.

lm-eval's multiple-choice shape asks one set of choices after one context per document. A
ProcessBench solution needs one context per step (the problem, the earlier steps, the new step),
so :meth:`ProcessBenchTask.construct_requests` builds lm-eval's own Yes/No requests once per step
context and numbers them in order: results ``2i`` and ``2i+1`` are step ``i``'s Yes and No. Each
step context is lm-eval's rendered context (system prompt, chat template, description) with the
document's query replaced by that step's query, so ``--apply_chat_template`` and the target
delimiter behave exactly as in any multiple-choice task.
"""

from __future__ import annotations

from typing import Any

from lm_eval.api.instance import Instance
from lm_eval.api.task import ConfigurableTask


class ProcessBenchTask(ConfigurableTask):
    """Multiple choice (Yes/No) repeated over the step contexts of each solution."""

    def __init__(self, config: dict[str, Any] | None = None, **kwargs: Any) -> None:
        config = dict(config or {})
        config.pop("class", None)
        super().__init__(config=config, **kwargs)

    def process_results(self, doc: dict, results: list[Any]) -> dict[str, Any]:
        """The solution's item under each metric name of the task's YAML, earlier names included
        (``f1`` for ``step_f1`` ...: they resolve with a deprecation warning for one release)."""
        from genclf_harness.harness.metrics import renamed_metric
        from genclf_harness.harness.verifier_tasks.stepwise import RENAMED_METRICS

        out = super().process_results(doc, results)
        named = {name: renamed_metric(name, RENAMED_METRICS) for name in self._metric_fn_list}
        return {name: out[current] for name, current in named.items() if current in out}

    def construct_requests(self, doc: dict, ctx: Any, **kwargs: Any) -> list[Instance]:
        if not isinstance(ctx, str):
            raise TypeError(f"{self.config.task}: expected one rendered context per document, got {type(ctx).__name__}")
        query = self.doc_to_text(doc)
        at = ctx.rfind(query)
        if at < 0:
            raise ValueError(f"{self.config.task}: document {doc.get('id')}: its query does not appear verbatim in the "
                             "rendered context, so the step contexts cannot be built")
        requests: list[Instance] = []
        for step_query in doc["step_queries"]:
            step_ctx = ctx[:at] + step_query + ctx[at + len(query):]
            for instance in super().construct_requests(doc, step_ctx, **dict(kwargs)):
                instance.idx = len(requests)
                requests.append(instance)
        return requests
