"""The repository tells the truth: README commands, CI script and CLI help agree."""

from __future__ import annotations

import re
from pathlib import Path

from trio_sessions import loadtest
from trio_sessions._cli import build_parser

ROOT = Path(__file__).resolve().parents[1]


def shell_blocks(text: str) -> list[str]:
    return [block.strip() for block in re.findall(r"```sh\n(.*?)```", text, re.S)]


def test_ci_runs_the_readme_test_command_exactly() -> None:
    """.ci/run ends with the README's second command, character for character."""
    readme_commands = shell_blocks((ROOT / "README.md").read_text())
    ci_lines = (ROOT / ".ci" / "run").read_text().strip().splitlines()
    assert ci_lines[-1] == readme_commands[1]
    assert readme_commands[0].endswith("trio-sessions loadtest")


def test_readme_shows_every_scenario_of_the_main_job() -> None:
    """The README's sample report lists the eight scenarios, all PASS."""
    readme = (ROOT / "README.md").read_text()
    report = re.search(r"```text\n(.*?)```", readme, re.S)
    assert report is not None
    rows = [line for line in report.group(1).splitlines() if re.match(r" \d ", line)]
    assert len(rows) == len(loadtest.SCENARIO_NAMES) == 8
    assert all(" PASS " in row for row in rows)


def test_cli_help_lists_both_subcommands() -> None:
    """trio-sessions --help names loadtest and serve."""
    help_text = build_parser().format_help()
    assert "loadtest" in help_text
    assert "serve" in help_text
