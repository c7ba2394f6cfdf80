"""The lm-eval task class of channel strategy tasks (``genclf_<name>_channel``).

A channel document is lm-eval's multiple-input form (Winogrande's): ``doc_to_text`` is the gold
index, ``doc_to_choice`` the K label contexts (`genclf_harness.prompts.channel`), ``doc_to_target``
the input, scored after each context with the ``"\\n"`` delimiter. So a document is K
``(context_k, "\\n" + input)`` requests, and its K log-likelihoods ``log p(input | label_k)`` take the
place of the direct task's label log-likelihoods in every raw and calibrated metric.

The anchor carries, per label context: the content-free inputs (``"N/A"``, ``""``, ``"[MASK]"``) as
the scored input, for contextual calibration (the channel model's own preference for a label on an
input that says nothing), and the inductive training documents' inputs. ``dcpmi`` and ``pmi`` are
left out: in the channel direction the input's own probability ``p(x)`` is the same for every
label, so dividing by it changes no ranking, and the domain premise has no channel counterpart.
"""

from __future__ import annotations

from typing import Any

from lm_eval.api.instance import Instance

from genclf_harness.harness.classification_task import GenclfClassificationTask
from genclf_harness.harness.metrics import CONTENT_FREE_INPUTS
from genclf_harness.prompts.channel import render_body


class GenclfChannelTask(GenclfClassificationTask):
    """A classification task scored in the channel direction: the input given each label."""

    anchor_sections = (("cc", len(CONTENT_FREE_INPUTS)),)
    left_out_methods = frozenset({"dcpmi", "pmi"})

    def _gold(self, doc: dict) -> int:
        # the multiple-input form: doc_to_text is the gold index, doc_to_target the scored input
        return int(self.doc_to_text(doc))

    def _anchor_arguments(self, doc: dict, ctx: Any, requests: list[Instance]) -> list[tuple[str, str]] | None:
        if not isinstance(ctx, list):
            return None
        contexts = [instance.arguments[0] for instance in requests]
        delimiter = requests[0].arguments[1][: len(requests[0].arguments[1]) - len(self.doc_to_target(doc))]
        spec = self.genclf_spec
        inputs = [render_body(spec, {name: text for name in spec.input_fields}) for text in CONTENT_FREE_INPUTS]
        inputs += [self.doc_to_target(other) for other in self._pick_inductive_docs()]
        return [(context, delimiter + text) for text in inputs for context in contexts]
