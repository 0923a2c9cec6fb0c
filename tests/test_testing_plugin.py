"""trio_sessions.testing as users get it: the pytest plugin, and the helpers.

The plugin is run the way a user's suite runs it, through ``pytester``; the
helpers are tested here directly, under ``autojump_clock``.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import trio
import trio.testing
from trio.testing import MockClock

import trio_sessions as ts
from trio_sessions.testing import (
    SessionManagerFactory,
    check_invariants,
    hang_until_cancelled,
    ignore_cancellation_for,
    open_session_managers,
    wait_for_active,
)

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "howto" / "plugin_tests.py"
INI = """
[pytest]
trio_mode = true
addopts = --strict-markers --strict-config
filterwarnings = error
"""


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    """A user's suite: pytest-trio in trio_mode, the plugin enabled in conftest."""
    pytester.makeini(INI)
    pytester.makeconftest('pytest_plugins = ["trio_sessions.testing"]\n')
    return pytester


def run(suite: pytest.Pytester, code: str, *args: str) -> pytest.RunResult:
    suite.makepyfile(test_user=textwrap.dedent(code))
    return suite.runpytest(*args)


# ------------------------------------------------------------------ the fixtures


def test_marker_configures_the_fixtures_manager(suite: pytest.Pytester) -> None:
    """The marker's arguments are open_session_manager's; --strict-markers passes."""
    result = run(
        suite,
        """
        import pytest
        import trio_sessions as ts

        @pytest.mark.session_manager(max_sessions=2, request_timeout=None)
        async def test_configured(session_manager):
            assert session_manager.config.max_sessions == 2
            assert session_manager.config.request_timeout is None

        @pytest.mark.session_manager(ts.SessionConfig(max_sessions=3), max_waiting=1)
        async def test_config_and_overrides(session_manager):
            assert session_manager.config.max_sessions == 3
            assert session_manager.config.max_waiting == 1

        async def test_defaults(session_manager):
            assert session_manager.config == ts.SessionConfig()
            assert await session_manager.run(ts_echo, 1) == 1

        async def ts_echo(value):
            return value
        """,
    )
    result.assert_outcomes(passed=3)


def test_fixture_runs_on_the_tests_clock(suite: pytest.Pytester) -> None:
    """With autojump_clock the manager's time jumps; without, it is the real clock."""
    result = run(
        suite,
        """
        import trio
        from trio.testing import MockClock

        async def test_mock(session_manager, autojump_clock):
            assert trio.lowlevel.current_clock() is autojump_clock
            session = await session_manager.start_session(trio.sleep, 29)
            await session.wait()
            assert trio.current_time() == 29

        async def test_real(session_manager):
            clock = trio.lowlevel.current_clock()
            assert not isinstance(clock, MockClock)
            await session_manager.run(trio.sleep, 0)
        """,
    )
    result.assert_outcomes(passed=2)


def test_fixture_shuts_down_after_the_test(suite: pytest.Pytester) -> None:
    """A session left running is drained for shutdown_timeout, then cancelled."""
    result = run(
        suite,
        """
        import pytest
        import trio
        import trio_sessions as ts

        left = []

        @pytest.mark.session_manager(shutdown_timeout=4)
        async def test_leaves_a_session(session_manager, autojump_clock):
            left.append(await session_manager.start_session(trio.sleep, 100))
            left.append(await session_manager.start_session(trio.sleep, 3))

        def test_it_was_drained_then_cancelled():
            assert [s.outcome for s in left] == [
                ts.Outcome.CANCELLED, ts.Outcome.SUCCESS
            ]
            assert left[0].completed_at == 4
        """,
    )
    result.assert_outcomes(passed=2)


def test_factory_opens_more_managers(suite: pytest.Pytester) -> None:
    """Each manager from the factory has its own config and is shut down after."""
    result = run(
        suite,
        """
        import pytest
        import trio_sessions as ts
        from trio_sessions.testing import hang_until_cancelled

        opened = []

        @pytest.mark.session_manager(max_sessions=1)
        async def test_two_more(session_manager, session_manager_factory,
                                autojump_clock):
            small = await session_manager_factory(max_sessions=2)
            large = await session_manager_factory(ts.SessionConfig(max_sessions=9))
            opened.extend([session_manager, small, large])
            assert [m.config.max_sessions for m in opened] == [1, 2, 9]
            for manager in opened:
                await manager.start_session(hang_until_cancelled)
            assert session_manager_factory.managers[1:] == [small, large]

        def test_all_were_shut_down():
            assert all(m.statistics().cancelled == 1 for m in opened)
            with pytest.raises(ts.ShuttingDownError):
                opened[1].start_session_nowait(hang_until_cancelled)
        """,
    )
    result.assert_outcomes(passed=2)


def test_broken_invariant_fails_the_test(suite: pytest.Pytester) -> None:
    """After the test the manager is checked; a problem fails it, not an error."""
    result = run(
        suite,
        """
        async def test_leaks_metadata_bytes(session_manager, monkeypatch):
            # As a manager that lost track of a session's bytes would be.
            monkeypatch.setattr(session_manager, "_metadata_bytes", 17)
        """,
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*AssertionError: session manager invariants broken:",
            "*manager 1 before its shutdown: metadata_bytes=17 != 0 held by*",
            "*manager 1 after its shutdown: metadata_bytes=17, expected 0 once*",
        ]
    )


def test_invalid_marker_field_fails_naming_it(suite: pytest.Pytester) -> None:
    """A marker with a bad field fails the test with the config's own message."""
    result = run(
        suite,
        """
        import pytest

        @pytest.mark.session_manager(max_sessions=0)
        async def test_bad(session_manager):
            pass
        """,
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*ValueError*max_sessions*"])


def test_the_how_to_example_passes(suite: pytest.Pytester) -> None:
    """The testing how-to's example of the plugin passes, as the page says."""
    result = run(suite, EXAMPLE.read_text(encoding="utf-8"))
    result.assert_outcomes(passed=3)


def test_plugin_by_command_line_option(pytester: pytest.Pytester) -> None:
    """-p trio_sessions.testing registers the fixtures and the marker too."""
    pytester.makeini(INI)
    result = run(
        pytester,
        """
        import pytest

        @pytest.mark.session_manager(max_sessions=5)
        async def test_it(session_manager):
            assert session_manager.config.max_sessions == 5
        """,
        "-p",
        "trio_sessions.testing",
    )
    result.assert_outcomes(passed=1)


def test_testing_imports_without_pytest() -> None:
    """trio_sessions.testing imports where pytest does not: only the plugin is gone."""
    code = textwrap.dedent(
        """
        import sys

        class NoPytest:
            def find_spec(self, name, path=None, target=None):
                if name.partition(".")[0] in ("pytest", "_pytest"):
                    raise ModuleNotFoundError(f"No module named {name!r}", name=name)

        sys.meta_path.insert(0, NoPytest())
        import trio_sessions.testing as testing

        assert "pytest" not in sys.modules
        assert not hasattr(testing, "session_manager")
        assert callable(testing.check_invariants)
        assert callable(testing.wait_for_active)
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# ------------------------------------------------------------------- the helpers


async def test_wait_for_active_sees_sessions_start(autojump_clock: MockClock) -> None:
    """wait_for_active returns once the spawned sessions run, with no time passing."""
    async with (
        ts.open_session_manager(max_sessions=2) as manager,
        trio.open_nursery() as nursery,
    ):
        for _ in range(2):
            nursery.start_soon(manager.run, hang_until_cancelled)
        stats = await wait_for_active(manager, 2)
        assert (stats.active, trio.current_time()) == (2, 0)
        with pytest.raises(ts.CapacityError):
            await manager.run(hang_until_cancelled)
        nursery.cancel_scope.cancel()
    check_invariants(manager, settled=True)


async def test_wait_for_active_lets_time_pass_to_the_instant(
    autojump_clock: MockClock,
) -> None:
    """Counts reached only later are waited for, to that exact instant."""
    async with (
        ts.open_session_manager(max_sessions=1, max_waiting=2) as manager,
        trio.open_nursery() as nursery,
    ):
        manager.start_session_nowait(trio.sleep, 1.5)
        for _ in range(2):
            nursery.start_soon(manager.run, trio.sleep, 2)
        stats = await wait_for_active(manager, 1, waiting=2)
        assert (stats.waiting, trio.current_time()) == (2, 0)
        stats = await wait_for_active(manager, 1, waiting=1)
        assert trio.current_time() == 1.5
        # Without waiting=, the instant between one session and the next counts.
        stats = await wait_for_active(manager, 0, waiting=0)
        assert trio.current_time() == 5.5
        assert stats.succeeded == 3


async def test_wait_for_active_already_true_does_not_yield(
    autojump_clock: MockClock,
) -> None:
    """Counts that already hold: it returns at once, but honours cancellation."""
    async with (
        ts.open_session_manager() as manager,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(manager.run, hang_until_cancelled)
        # The task just spawned has not run: no schedule point let it.
        assert (await wait_for_active(manager, 0)).active == 0
        assert (await wait_for_active(manager, 1)).active == 1
        with trio.CancelScope() as scope:
            scope.cancel()
            await wait_for_active(manager, 1)
        assert scope.cancelled_caught
        nursery.cancel_scope.cancel()


async def test_hang_until_cancelled_ends_only_when_cancelled(
    autojump_clock: MockClock,
) -> None:
    """hang_until_cancelled takes any arguments and ends as CANCELLED, never itself."""
    async with ts.open_session_manager(request_timeout=None) as manager:
        session = await manager.start_session(hang_until_cancelled, {"id": 1}, "x")
        await trio.sleep(1000)
        assert session.outcome is None
        session.cancel()
        with pytest.raises(ts.SessionCancelled):
            await session.wait()
        assert trio.current_time() == 1000


async def test_ignore_cancellation_for_delays_shutdown(
    autojump_clock: MockClock,
) -> None:
    """Shutdown's cancellation, and a deadline, take effect only when it ends."""
    async with ts.open_session_manager(shutdown_timeout=1, shutdown_grace=5) as manager:
        late = await manager.start_session(ignore_cancellation_for, 3, timeout=None)
        timed = await manager.start_session(ignore_cancellation_for, 2, timeout=0.5)
        done = await manager.start_session(ignore_cancellation_for, 0.5, timeout=None)
        report = await manager.shutdown()
    assert trio.current_time() == 3
    assert (report.duration, report.cancelled, report.stuck) == (3, 1, ())
    assert (late.outcome, late.completed_at) == (ts.Outcome.CANCELLED, 3)
    assert (timed.outcome, timed.completed_at) == (ts.Outcome.TIMEOUT, 2)
    assert (done.outcome, done.completed_at) == (ts.Outcome.SUCCESS, 0.5)


async def test_open_session_managers_checks_each_after_shutdown(
    autojump_clock: MockClock,
) -> None:
    """Managers opened on demand are shut down at the block's end, then checked."""
    async with open_session_managers() as open_manager:
        first = await open_manager(shutdown_timeout=2)
        second = await open_manager(max_sessions=1)
        session = await first.start_session(hang_until_cancelled)
        await second.start_session(trio.sleep, 1)
    assert trio.current_time() == 2
    assert session.outcome is ts.Outcome.CANCELLED
    assert second.statistics().succeeded == 1
    with pytest.raises(RuntimeError, match="has ended"):
        await open_manager()


async def test_open_session_managers_reports_every_problem(
    autojump_clock: MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One AssertionError names each manager and when its problem was seen."""
    with pytest.raises(AssertionError) as info:
        async with open_session_managers() as open_manager:
            await open_manager()
            broken = await open_manager()
            monkeypatch.setattr(broken, "_waiting", 1)
    assert str(info.value).splitlines() == [
        "session manager invariants broken:",
        "  manager 2 after its shutdown: waiting=1, expected 0 once settled",
    ]


async def test_open_session_managers_body_error_cancels_unchecked(
    autojump_clock: MockClock,
) -> None:
    """If the block raises, its managers are cancelled at once and it propagates."""
    factory: SessionManagerFactory | None = None
    with pytest.raises(LookupError):
        async with open_session_managers() as factory:
            manager = await factory(shutdown_timeout=50)
            session = await manager.start_session(hang_until_cancelled)
            raise LookupError("body failed")
    assert factory is not None
    assert trio.current_time() == 0
    assert session.outcome is ts.Outcome.CANCELLED
