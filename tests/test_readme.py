"""README.md's two set-up commands stay true: CI runs exactly the README's test command."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _bash_blocks(text: str) -> list[str]:
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S)]


def test_ci_runs_the_readme_test_command() -> None:
    blocks = _bash_blocks((REPO / "README.md").read_text())
    test_commands = [b for b in blocks if "pytest" in b and "\n" not in b]
    assert len(test_commands) == 1, test_commands
    ci_lines = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    assert test_commands[0] in ci_lines


def test_readme_main_job_runs_genclf_eval_on_the_default_model() -> None:
    blocks = _bash_blocks((REPO / "README.md").read_text())
    main_jobs = [b for b in blocks if b.startswith("bash scripts/install.sh") and "genclf-eval" in b]
    assert len(main_jobs) == 1
    assert "pretrained=default" in main_jobs[0] and "--tasks genclf_" in main_jobs[0]


def test_the_architecture_section_lists_every_folder() -> None:
    """Every package folder and every tracked top-level folder appears in the architecture block."""
    import subprocess

    text = (REPO / "README.md").read_text()
    block = text.split("## Architecture", 1)[1].split("```", 2)[1]
    listed = set(re.findall(r"^\s*([\w.]+)/", block, flags=re.M))
    packages = {path.parent.name for path in (REPO / "genclf_harness").rglob("__init__.py")} - {"genclf_harness"}
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True).stdout.split()
    top = {name.split("/", 1)[0] for name in tracked if "/" in name} if tracked else set()
    missing = sorted((packages | top) - listed)
    assert not missing, f"README's architecture section does not list {missing}"
