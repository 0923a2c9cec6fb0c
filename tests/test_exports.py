"""The package face: each public name once, documented, as trio_sessions.X."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import attrs

import trio_sessions as ts

API_MD = Path(__file__).resolve().parents[2] / "shared" / "API.md"

CONTRACT_NAMES = {
    "open_session_manager",
    "SessionManager",
    "SessionConfig",
    "Session",
    "SessionState",
    "Outcome",
    "SessionStatistics",
    "LatencySummary",
    "ShutdownReport",
    "SessionError",
    "RejectedError",
    "CapacityError",
    "ShuttingDownError",
    "MetadataError",
    "SessionTimeout",
    "SessionCancelled",
}


def test_all_is_sorted_unique_and_complete() -> None:
    """__all__ is sorted, has no duplicates, and holds every name of the contract."""
    # Sorted as ruff's RUF022 sorts: constants first, then the rest.
    assert ts.__all__ == sorted(set(ts.__all__), key=lambda n: (not n.isupper(), n))
    assert set(ts.__all__) >= CONTRACT_NAMES
    # Submodules (asgi, prometheus, loadtest...) appear once imported; not exports.
    public = {
        name
        for name, value in vars(ts).items()
        if not name.startswith("_") and not inspect.ismodule(value)
    }
    assert set(ts.__all__) == public - {"annotations"}


def test_contract_names_match_api_md() -> None:
    """Every name API.md lists under ts. is exported (when API.md is at hand)."""
    if not API_MD.exists():  # the contract lives in ../shared next to a checkout
        return
    listed = set(re.findall(r"^ts\.(\w+)", API_MD.read_text(), flags=re.M))
    assert listed == CONTRACT_NAMES
    assert listed <= set(ts.__all__)


def test_public_names_live_in_trio_sessions() -> None:
    """Public objects say trio_sessions.X, not trio_sessions._module.X."""
    for name in ts.__all__:
        assert getattr(ts, name).__module__ == "trio_sessions", name


def test_every_public_name_and_member_has_a_docstring() -> None:
    """Every public name, and every public method and property, is documented."""
    for name in ts.__all__:
        obj = getattr(ts, name)
        assert inspect.getdoc(obj), name
        if inspect.isclass(obj):
            for member_name, member in vars(obj).items():
                if member_name.startswith("_") or not callable(
                    getattr(member, "fget", member)
                ):
                    continue
                assert inspect.getdoc(member), f"{name}.{member_name}"


def test_every_statistics_field_is_documented() -> None:
    """Each field of the snapshot classes is described in its docstring."""
    documented: tuple[type, ...] = (
        ts.SessionStatistics,
        ts.LatencySummary,
        ts.ShutdownReport,
        ts.SessionConfig,
    )
    for cls in documented:
        doc = inspect.getdoc(cls) or ""
        for field in attrs.fields(cls):
            assert re.search(rf"^\s+{field.name}:", doc, flags=re.M), (
                f"{cls.__name__}.{field.name} is not documented"
            )


def test_error_hierarchy() -> None:
    """Rejections share one root; the timeout is also a trio.TooSlowError."""
    import trio

    for rejection in (ts.CapacityError, ts.ShuttingDownError, ts.MetadataError):
        assert issubclass(rejection, ts.RejectedError)
    for error in (ts.RejectedError, ts.SessionTimeout, ts.SessionCancelled):
        assert issubclass(error, ts.SessionError)
    assert issubclass(ts.SessionTimeout, trio.TooSlowError)
    assert not issubclass(ts.SessionCancelled, trio.Cancelled)
    assert str(ts.CapacityError()) == "Maximum concurrent sessions reached"
    assert ts.CapacityError().reason == "capacity"


def test_package_is_typed() -> None:
    """The package ships py.typed for type checkers."""
    assert (Path(ts.__file__).parent / "py.typed").exists()
