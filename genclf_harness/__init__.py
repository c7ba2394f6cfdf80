"""genclf-harness: LLMs as classifiers on lm-evaluation-harness.

Importing this package is cheap (no torch, no lm-eval); the heavy parts load on first use.
"""

from genclf_harness._version import __version__

__all__ = ["__version__"]
