"""Where the task YAMLs and configs live, in a checkout and in an installed wheel.

The task YAMLs are the package ``genclf_harness.tasks`` (so lm-eval's entry-point discovery finds
them in any install); the training and benchmark configs stay at the top of the repository and
ship inside the wheel under ``genclf_harness/_resources/configs``.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def _resource_dir(name: str) -> Path:
    # A wheel carries them under genclf_harness/_resources (see pyproject's force-include);
    # an editable install or a checkout finds them at the top of the repository.
    for candidate in (_PACKAGE_DIR / "_resources" / name, _PACKAGE_DIR.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"genclf_harness cannot find its {name!r} folder (looked in {_PACKAGE_DIR / '_resources'} "
        f"and {_PACKAGE_DIR.parent}); the installation is incomplete."
    )


def tasks_dir() -> Path:
    """The folder of genclf lm-eval task YAMLs (the package ``genclf_harness.tasks``)."""
    return _PACKAGE_DIR / "tasks"


def configs_dir() -> Path:
    """The folder of training and benchmark configurations."""
    return _resource_dir("configs")
