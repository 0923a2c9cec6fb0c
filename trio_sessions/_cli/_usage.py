"""What the subcommands of ``trio-sessions`` share: exit statuses, usage errors.

A usage error found after parsing is raised as :class:`UsageError`; ``main()``
prints it and returns :data:`EXIT_USAGE`.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

PROG = "trio-sessions"

# Exit statuses: like pytest, 1 means "ran, and something failed".
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """A bad argument found after parsing; reported with exit status 2."""


class ArgumentParser(argparse.ArgumentParser):
    """An ArgumentParser that raises instead of exiting, so main() returns a status."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        raise UsageError(f"{self.prog}: error: {message}")
