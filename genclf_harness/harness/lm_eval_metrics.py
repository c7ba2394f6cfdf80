"""genclf's metric names in lm-eval's metric and aggregation registries, registered on import.

The ``lm_eval.metrics`` entry points name :func:`document_item` here (lm-eval after 0.4.13, PR
#4014, imports the module an entry point names and expects that import to run
``register_metric``, which also records ``higher_is_better`` and the default aggregation); the
``lm_eval.aggregations`` entry points name the aggregations themselves
(``genclf_harness.harness.metrics.<name>``). On lm-eval 0.4.13, ``registry.register`` imports this
module. Names and directions: :data:`genclf_harness.harness.registry.METRICS`.
"""

from __future__ import annotations

from typing import Any

from lm_eval.api.registry import aggregation_registry, metric_registry, register_aggregation, register_metric

import lm_eval.api.metrics  # noqa: F401 - lm-eval's own first: it loads them only into an empty registry
from genclf_harness.harness import metrics
from genclf_harness.harness.registry import METRICS


def document_item(items: Any) -> Any:
    """The per-document value of a genclf metric: the document's item as it is (its aggregation
    computes the metric over all documents, after lm-eval has gathered every rank's)."""
    return items


for _name, _higher in METRICS.items():
    if _name not in aggregation_registry:
        register_aggregation(_name)(getattr(metrics, _name))
    if _name not in metric_registry:
        register_metric(metric=_name, higher_is_better=_higher, output_type="multiple_choice",
                        aggregation=_name)(document_item)
