"""The repository tells the truth: README commands, CI script and CLI help agree."""

from __future__ import annotations

import importlib.metadata
import re
import sys
from pathlib import Path
from typing import Any

import pytest

import trio_sessions
from trio_sessions import loadtest
from trio_sessions._cli import build_parser

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")

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


def pyproject() -> dict[str, Any]:
    with (ROOT / "pyproject.toml").open("rb") as file:
        return tomllib.load(file)


def test_version_is_written_once() -> None:
    """The version is trio_sessions.__version__; pyproject and metadata read it."""
    config = pyproject()
    assert "version" not in config["project"]
    assert "version" in config["project"]["dynamic"]
    assert config["tool"]["hatch"]["version"]["path"] == "trio_sessions/__init__.py"
    init = (ROOT / "trio_sessions" / "__init__.py").read_text(encoding="utf-8")
    assert len(re.findall(r"^__version__ = ", init, re.MULTILINE)) == 1
    assert trio_sessions.__version__ == importlib.metadata.version("trio-sessions")


def test_classifiers_name_the_pythons_and_the_licence() -> None:
    """Classifiers list each Python from requires-python up; the licence is MIT."""
    project = pyproject()["project"]
    pythons = [
        c.rpartition(" :: ")[2]
        for c in project["classifiers"]
        if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)
    ]
    assert pythons == ["3.10", "3.11", "3.12", "3.13"]
    assert project["requires-python"] == f">={pythons[0]}"
    assert "Typing :: Typed" in project["classifiers"]
    # PEP 639: the SPDX expression, and no License :: classifier beside it.
    assert project["license"] == "MIT"
    assert not [c for c in project["classifiers"] if c.startswith("License ::")]
    assert project["license-files"] == ["LICENSE"]
    assert (ROOT / "LICENSE").read_text(encoding="utf-8").startswith("MIT License")
