"""What ``trio-sessions serve`` and the example servers share: options and exits.

One set of command-line options turned into a :class:`SessionConfig`, one way
to refuse a bad value or a missing extra, one way to report a port that cannot
be bound, and one signal policy: the first SIGINT/SIGTERM drains, a second one
cancels what is left and the program exits with :data:`EXIT_FORCED`.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from types import FrameType
from typing import Any, TypeVar

import trio

from ._config import SessionConfig
from ._validate import check_count, parse_seconds
from .signals import ShutdownSignals, open_shutdown_signals

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

__all__ = [
    "EPILOG",
    "EXIT_FAILED",
    "EXIT_FORCED",
    "EXIT_OK",
    "EXIT_USAGE",
    "ListenError",
    "add_http_options",
    "add_session_options",
    "cannot_listen",
    "count",
    "forced_line",
    "listen_tcp",
    "missing_extra",
    "open_signals",
    "request_key",
    "request_priority",
    "run",
    "session_config",
    "signal_name",
]

EXIT_OK = 0
"""Served, then drained on the first SIGINT/SIGTERM."""
EXIT_FAILED = 1
"""A runtime failure, such as an address that cannot be bound."""
EXIT_USAGE = 2
"""A bad option, or a missing extra."""
EXIT_FORCED = 130
"""A second SIGINT/SIGTERM cut the drain short (as after a second Ctrl+C)."""

EPILOG = f"""\
signals: the first SIGINT or SIGTERM drains (requests in flight finish within
--shutdown-timeout, new ones are refused), then the shutdown report is printed;
a second one cancels whatever is left at once, prints the report too and exits
{EXIT_FORCED}.

exit status: {EXIT_OK} after a drain, {EXIT_FAILED} when the address cannot be \
bound, {EXIT_USAGE} on a bad
option or a missing extra, {EXIT_FORCED} when a second signal cut the drain short.
"""

_T = TypeVar("_T")


class ListenError(OSError):
    """The server cannot listen on the address it was given; one line says why."""


def count(name: str, minimum: int) -> Callable[[str], int]:
    """An argparse ``type`` for a whole number of at least ``minimum``.

    ::

        parser.add_argument("--max-sessions", type=count("--max-sessions", 1))
    """

    def parse(text: str) -> int:
        try:
            value = int(text.replace("_", ""))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"must be a whole number, got {text!r}"
            ) from None
        try:
            check_count(value, name, minimum=minimum)
        except ValueError as exc:
            raise _type_error(exc, name) from None
        return value

    return parse


def _port(text: str) -> int:
    value = count("--port", minimum=0)(text)
    if value > 65_535:
        raise argparse.ArgumentTypeError(f"must be <= 65535, got {value}")
    return value


def _seconds(name: str, *, optional: bool) -> Callable[[str], float | None]:
    def parse(text: str) -> float | None:
        try:
            return parse_seconds(text, name, optional=optional)
        except ValueError as exc:
            raise _type_error(exc, name) from None

    return parse


def _type_error(error: ValueError, name: str) -> argparse.ArgumentTypeError:
    # argparse says "argument --port: ..." itself: the message need not repeat it.
    return argparse.ArgumentTypeError(str(error).removeprefix(f"{name} "))


def add_session_options(
    parser: argparse.ArgumentParser, *, port: int
) -> argparse._ArgumentGroup:
    """Add the options every server shares; ``port`` is this server's default.

    Returns the "serving" group, for the server's own options::

        parser = argparse.ArgumentParser(epilog=EPILOG)
        serving = add_session_options(parser, port=9000)
        serving.add_argument("--max-line-bytes", type=count("--max-line-bytes", 1))
        config = session_config(parser.parse_args())
    """
    group = parser.add_argument_group("serving")
    group.add_argument(
        "--host", default="127.0.0.1", help="address to listen on; default: %(default)s"
    )
    group.add_argument(
        "--port",
        type=_port,
        default=port,
        help="port to listen on, 0 picks a free one; default: %(default)s",
    )
    sessions = parser.add_argument_group("sessions")
    sessions.add_argument(
        "--max-sessions",
        type=count("--max-sessions", minimum=1),
        default=100,
        metavar="N",
        help="requests served at once; default: %(default)s",
    )
    sessions.add_argument(
        "--max-waiting",
        type=count("--max-waiting", minimum=0),
        default=0,
        metavar="N",
        help="requests allowed to queue for a slot (0: refuse at once); "
        "default: %(default)s",
    )
    sessions.add_argument(
        "--wait-timeout",
        type=_seconds("--wait-timeout", optional=True),
        default=None,
        metavar="SECONDS",
        help="longest wait in the queue, seconds or 'none'; default: none",
    )
    sessions.add_argument(
        "--request-timeout",
        type=_seconds("--request-timeout", optional=True),
        default=30.0,
        metavar="SECONDS",
        help="deadline of each request, seconds or 'none'; default: 30",
    )
    sessions.add_argument(
        "--shutdown-timeout",
        type=_seconds("--shutdown-timeout", optional=False),
        default=5.0,
        metavar="SECONDS",
        help="how long the first SIGINT/SIGTERM lets requests in flight finish; "
        "default: 5",
    )
    return group


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 0 and < 1, got {text}")
    return value


def _key_source(text: str) -> str:
    if text == "client" or (text.startswith("header:") and len(text) > 7):
        return text
    raise argparse.ArgumentTypeError(f"must be 'client' or 'header:NAME', got {text!r}")


def add_http_options(serving: argparse._ArgumentGroup) -> None:
    """The HTTP servers' own options (``trio-sessions serve``, the HTTP example)::

    add_http_options(add_session_options(parser, port=8000))
    """
    serving.add_argument(
        "--key",
        type=_key_source,
        default=None,
        metavar="SOURCE",
        help="what a request's key is, for --max-sessions-per-key and the "
        "per-key statistics: 'client' (its address) or 'header:NAME' (a "
        "request header, such as header:x-tenant); default: none",
    )
    serving.add_argument(
        "--max-sessions-per-key",
        type=count("--max-sessions-per-key", minimum=1),
        default=None,
        metavar="N",
        help="requests of one key (see --key) served at once; default: no limit",
    )
    serving.add_argument(
        "--reserved-share",
        type=_share,
        default=0.0,
        metavar="FRACTION",
        help="share of --max-sessions kept for priority >= 1 (see "
        "--priority-header), from 0 to below 1; default: 0",
    )
    serving.add_argument(
        "--priority-header",
        default=None,
        metavar="NAME",
        help="request header holding a request's priority, an integer (higher "
        "first; a missing or malformed one is 0); only behind a proxy that "
        "sets it; default: none",
    )
    serving.add_argument(
        "--max-body-bytes",
        type=count("--max-body-bytes", minimum=0),
        default=1_048_576,
        metavar="N",
        help="largest request body, 413 beyond; default: %(default)s",
    )
    serving.add_argument(
        "--spawned",
        action="store_true",
        help="run each request's session in a task of its own, not inline in "
        "the server's request task (SessionMiddleware's inline=False)",
    )


def example_parser(
    prog: str, description: str, *, port: int
) -> tuple[argparse.ArgumentParser, argparse._ArgumentGroup]:
    """An example server's parser: the shared options and the exit statuses.

    Returns the parser and its "serving" group, for the server's own options::

        parser, serving = example_parser(PROG, __doc__.splitlines()[0], port=9000)
    """
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return parser, add_session_options(parser, port=port)


def parse_checked(
    parser: argparse.ArgumentParser, argv: list[str] | None = None
) -> argparse.Namespace:
    """Parse ``argv``; a value the config refuses is a one-line usage error (2)."""
    args = parser.parse_args(argv)
    try:
        session_config(args)
    except (TypeError, ValueError) as exc:
        parser.error(str(exc))
    return args


def session_config(args: argparse.Namespace) -> SessionConfig:
    """The :class:`SessionConfig` the shared options describe.

    Raises:
      TypeError, ValueError: a value :class:`SessionConfig` refuses.
    """
    return SessionConfig(
        max_sessions=args.max_sessions,
        max_waiting=args.max_waiting,
        wait_timeout=args.wait_timeout,
        request_timeout=args.request_timeout,
        shutdown_timeout=args.shutdown_timeout,
        # The HTTP servers' (add_http_options): the others have no keys.
        max_sessions_per_key=getattr(args, "max_sessions_per_key", None),
        reserved_share=getattr(args, "reserved_share", 0.0),
    )


def request_key(source: str | None) -> Callable[[Mapping[str, Any]], str | None] | None:
    """The ``key=`` of :class:`~trio_sessions.asgi.SessionMiddleware` that ``--key``
    describes: a request's client address, or one of its headers::

        key = request_key("header:x-tenant")   # key(scope) -> "acme" or None
    """
    if source is None:
        return None
    if source == "client":

        def client(scope: Mapping[str, Any]) -> str | None:
            peer = scope.get("client")
            return str(peer[0]) if peer else None

        return client
    return _header(source.removeprefix("header:"), str)


def request_priority(header: str | None) -> Callable[[Mapping[str, Any]], int] | None:
    """The ``priority=`` that ``--priority-header`` describes (0 unless an integer)."""
    if header is None:
        return None
    read = _header(header, int)

    def priority(scope: Mapping[str, Any]) -> int:
        value = read(scope)
        return 0 if value is None else value

    return priority


def _header(
    name: str, parse: Callable[[str], _T]
) -> Callable[[Mapping[str, Any]], _T | None]:
    """A function of a scope: its header ``name``, parsed (None if absent or bad)."""
    wanted = name.lower().encode("latin-1")

    def read(scope: Mapping[str, Any]) -> _T | None:
        for field, value in scope.get("headers", ()):
            if field.lower() == wanted:
                try:
                    return parse(value.decode("latin-1").strip())
                except ValueError:
                    return None
        return None

    return read


def missing_extra(prog: str, error: ImportError, extra: str = "servers") -> int:
    """Say which extra to install, in one line on stderr; return :data:`EXIT_USAGE`.

    ::

        try:
            import hypercorn
        except ImportError as exc:
            sys.exit(missing_extra("http_server.py", exc))
    """
    missing = f" (no module named {error.name!r})" if error.name else ""
    print(
        f"{prog} needs: pip install 'trio-sessions[{extra}]'{missing}", file=sys.stderr
    )
    return EXIT_USAGE


def cannot_listen(host: str, port: int, error: BaseException) -> ListenError | None:
    """The :class:`ListenError` behind ``error`` (which may be a group), or None."""
    leaf = _os_error(error)
    if leaf is None:
        return None
    reason = leaf.strerror or str(leaf)
    return ListenError(leaf.errno, f"cannot listen on {host}:{port}: {reason}")


def _os_error(error: BaseException) -> OSError | None:
    # Servers bind inside their own nurseries, so the OSError may come wrapped.
    if isinstance(error, OSError):
        return error
    if isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        return _os_error(error.exceptions[0])
    return None


async def listen_tcp(host: str, port: int) -> list[trio.SocketListener]:
    """Bind ``host:port`` (0 picks a free port) before anything else starts.

    Raises:
      ListenError: the address is in use, not local, or not an address.
    """
    try:
        return await trio.open_tcp_listeners(port, host=host)
    except OSError as exc:
        error = cannot_listen(host, port, exc)
        assert error is not None
        raise error from None


# Signals that arrive before the async part has opened its handler (or after it
# closed it) are kept here by run(), and handed to open_signals() on entry.
_early: list[int] = []


def _keep(signum: int, frame: FrameType | None) -> None:
    _early.append(signum)


@contextmanager
def _signals_kept() -> Iterator[None]:
    previous = {
        signum: signal.signal(signum, _keep)
        for signum in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
        _early.clear()


@asynccontextmanager
async def open_signals(hurry: trio.CancelScope) -> AsyncIterator[ShutdownSignals]:
    """:func:`open_shutdown_signals`, also counting signals that came before it.

    A SIGTERM sent while the program was still starting starts the drain as
    soon as the server listens, instead of killing it or going unnoticed. The
    second signal cancels ``hurry``, which the server enters around its drain.
    """
    async with open_shutdown_signals(cancel_scope=hurry) as signals:
        while _early:
            signals._deliver(_early.pop(0))
        yield signals


def run(prog: str, async_fn: Callable[[_T], Awaitable[int]], args: _T) -> int:
    """``trio.run(async_fn, args)`` with every SIGINT/SIGTERM handled until the end.

    A :class:`ListenError` becomes one line on stderr and :data:`EXIT_FAILED`::

        sys.exit(run("tcp_json_server.py", main, parse_args()))
    """
    with _signals_kept():
        try:
            return trio.run(async_fn, args)
        except ListenError as exc:
            print(f"{prog}: error: {exc.strerror}", file=sys.stderr)
            return EXIT_FAILED


def forced_line(signals: ShutdownSignals) -> str:
    """The line printed when a second signal cut the drain short."""
    return f"received {signal_name(signals.received[1])} again, cancelled what was left"


def signal_name(signum: int) -> str:
    """``"SIGTERM"`` for ``signal.SIGTERM``."""
    return signal.Signals(signum).name
