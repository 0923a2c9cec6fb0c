"""Tests of a handler written with the trio_sessions.testing pytest plugin.

Enable the plugin in conftest.py (``pytest_plugins = ["trio_sessions.testing"]``)
and set ``trio_mode = true``; ``tests/test_testing_plugin.py`` runs this file.
"""

import pytest
import trio

import trio_sessions as ts
from trio_sessions.testing import hang_until_cancelled, wait_for_active


async def handler(request):
    await trio.sleep(request["delay"])
    return "ok"


@pytest.mark.session_manager(request_timeout=2)
async def test_slow_request_times_out(session_manager, autojump_clock):
    with pytest.raises(ts.SessionTimeout):
        await session_manager.run(handler, {"delay": 60})
    assert trio.current_time() == 2
    # No check_invariants() here: the plugin checks after the test.


@pytest.mark.session_manager(max_sessions=2)
async def test_third_request_is_refused(session_manager, autojump_clock, nursery):
    for _ in range(2):
        nursery.start_soon(session_manager.run, hang_until_cancelled)
    await wait_for_active(session_manager, 2)
    with pytest.raises(ts.CapacityError):
        await session_manager.run(handler, {"delay": 1})
    # The two left hanging are cancelled by the manager's shutdown after the test.


async def test_two_services(session_manager_factory, autojump_clock):
    search = await session_manager_factory(max_sessions=1)
    upload = await session_manager_factory(max_sessions=5, request_timeout=60)
    await search.start_session(handler, {"delay": 1})
    assert await upload.run(handler, {"delay": 30}) == "ok"
    assert search.statistics().succeeded == 1
