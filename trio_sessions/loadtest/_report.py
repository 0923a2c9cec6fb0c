"""What every scenario returns, and the report of a whole run.

:class:`ScenarioResult` is the base of the scenarios' results; :class:`Checks`
turns a scenario's checks into its verdict; :class:`LoadTestReport` holds a run.
"""

from __future__ import annotations

from typing import Any, ClassVar, TypedDict, final

import attrs

from .. import Session


@attrs.frozen
class ScenarioResult:
    """What every scenario result has: whether it passed, why not, and how long it took.

    Each scenario returns a final subclass that adds its own figures, and
    overrides :attr:`title` and :meth:`describe` to show them::

        result = await loadtest.capacity_limit()
        assert result.passed, result.problems

    Attributes:
      passed: True when every check of the scenario held.
      problems: One sentence per check that failed (empty when ``passed``).
      elapsed: Seconds the scenario took on the Trio clock.
    """

    name: ClassVar[str] = "scenario"

    passed: bool
    problems: tuple[str, ...]
    elapsed: float

    @property
    def title(self) -> str:
        """A one-line description of what the scenario does, with its parameters."""
        return self.name

    def describe(self) -> str:
        """The scenario's figures, as one line for people."""
        return ""

    def as_dict(self) -> dict[str, Any]:
        """The result as plain JSON-encodable data, with ``name`` and ``title``."""
        data: dict[str, Any] = {"name": self.name, "title": self.title}
        data.update(attrs.asdict(self))
        return data


@final
@attrs.frozen
class LoadTestReport:
    """All the scenario results of one load test, from :func:`run_loadtest`::

        report = await loadtest.run_loadtest(my_handler)
        assert report.passed, report.problems

    Attributes:
      results: One result per scenario, in the order they ran.
      elapsed: Seconds the whole run took on the Trio clock.
    """

    results: tuple[ScenarioResult, ...]
    elapsed: float

    @property
    def passed(self) -> bool:
        """True when every scenario passed."""
        return all(result.passed for result in self.results)

    @property
    def problems(self) -> list[str]:
        """Every failed check, as ``"scenario: problem"``."""
        return [
            f"{result.name}: {problem}"
            for result in self.results
            for problem in result.problems
        ]

    def as_dict(self) -> dict[str, Any]:
        """The report as plain JSON-encodable data."""
        return {
            "passed": self.passed,
            "elapsed": self.elapsed,
            "scenarios": [result.as_dict() for result in self.results],
        }


class Verdict(TypedDict):
    """The fields of :class:`ScenarioResult` that :meth:`Checks.verdict` fills."""

    passed: bool
    problems: tuple[str, ...]


@final
class Checks:
    """The checks of one scenario; a check that fails leaves a problem sentence.

    ::

        checks = Checks()
        checks.expect(stats.active == 0, f"{stats.active} still active")
        return NoHangResult(**checks.verdict(), elapsed=..., ...)
    """

    def __init__(self) -> None:
        self._problems: list[str] = []

    def expect(self, ok: bool, problem: str) -> None:
        """Record ``problem`` unless ``ok``."""
        if not ok:
            self._problems.append(problem)

    def verdict(self) -> Verdict:
        """``passed`` and ``problems``, as keyword arguments of a result."""
        return {"passed": not self._problems, "problems": tuple(self._problems)}


@final
class Tally:
    """Counts how sessions ended, keeping only the first error's description."""

    def __init__(self) -> None:
        self.succeeded = 0
        self.failed = 0
        self.first_error: str | None = None

    async def wait(self, session: Session) -> None:
        """Wait for ``session`` and count how it ended."""
        try:
            await session.wait()
        except Exception as exc:
            self.fail(exc)
        else:
            self.succeeded += 1

    def fail(self, exc: Exception) -> None:
        """Count one session that raised ``exc``."""
        self.failed += 1
        if self.first_error is None:
            self.first_error = f"{type(exc).__name__}: {exc}"

    def expect_all(self, checks: Checks, total: int, what: str = "sessions") -> None:
        """Check that all ``total`` sessions counted succeeded."""
        detail = "" if self.first_error is None else f" (first: {self.first_error})"
        checks.expect(
            self.succeeded == total,
            f"{self.succeeded}/{total} {what} succeeded, {self.failed} failed{detail}",
        )


def ms(seconds: float | None) -> str:
    """Seconds as milliseconds for people; ``-`` for None."""
    return "-" if seconds is None else f"{seconds * 1000:.1f} ms"


def us(seconds: float) -> str:
    """Seconds as microseconds for people, or milliseconds from 1 ms on."""
    return f"{seconds * 1e6:.1f} µs" if seconds < 1e-3 else ms(seconds)


def percent(rate: float | None) -> str:
    """A rate as a percentage for people; ``-`` for None."""
    return "-" if rate is None else f"{rate:.1%}"
