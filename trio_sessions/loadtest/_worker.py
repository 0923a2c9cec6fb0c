"""Client processes of an HTTP load split over several cores, and their parent's side.

:func:`run_workers` starts ``python -m trio_sessions.loadtest._worker`` once per
share of the :class:`~._http.Plan`; each reads its share on stdin, says
``ready``, starts at the time the parent sends (``time.monotonic``, which all
processes share on one machine), prints ``sent N`` as it goes and its
:class:`~._http.Tally` as JSON at the end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import trio

from ._http import Plan, Tally, drive

__all__ = ["main", "run_workers"]

# The children import this very package, wherever it is.
_ROOT = str(Path(__file__).resolve().parents[2])

# Starting Python and importing trio takes well under this on a loaded machine.
_READY_TIMEOUT = 60.0
# Between the last "ready" and the start: time to send the start line to all.
_START_DELAY = 0.05


class _Lines:
    """Lines of a process's output, one at a time."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._buffer = b""

    async def readline(self) -> bytes:
        """The next line, without its newline; ``b""`` at the end of the output."""
        while b"\n" not in self._buffer:
            data = await self._stream.receive_some()
            if not data:
                line, self._buffer = self._buffer, b""
                return line
            self._buffer += data
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line


async def run_workers(plan: Plan, progress: Callable[[int], None]) -> Tally:
    """Drive ``plan`` from ``plan.processes`` client processes; merge their tallies.

    ``progress(sent)`` is called with the requests sent by all so far.

    Raises:
      RuntimeError: a process failed, or did not hand over its tally.
    """
    shares = plan.shares()
    sent = [0] * len(shares)
    tallies: list[dict[str, Any] | None] = [None] * len(shares)
    errors = [b""] * len(shares)
    failure: str | None = None
    started = False
    path = os.environ.get("PYTHONPATH")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [_ROOT, path]))}
    command = [sys.executable, "-m", "trio_sessions.loadtest._worker"]
    run = partial(
        trio.run_process,
        command,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        check=False,
        env=env,
    )

    async def follow(index: int, lines: _Lines) -> None:
        while line := await lines.readline():
            kind, _, rest = line.partition(b" ")
            if kind == b"sent":
                sent[index] = int(rest)
                progress(sum(sent))
            elif kind == b"tally":
                tallies[index] = json.loads(rest)

    async with trio.open_nursery() as nursery:
        processes: list[trio.Process] = []
        outputs: list[_Lines] = []
        for index, share in enumerate(shares):
            process: trio.Process = await nursery.start(run)
            assert process.stdin is not None
            assert process.stdout is not None
            assert process.stderr is not None
            processes.append(process)
            outputs.append(_Lines(process.stdout))
            nursery.start_soon(_collect_errors, process.stderr, errors, index)
            line = json.dumps(attrs.asdict(share)) + "\n"
            await process.stdin.send_all(line.encode())
        with trio.move_on_after(_READY_TIMEOUT):
            for index, lines in enumerate(outputs):
                if await lines.readline() != b"ready":
                    failure = f"client process {index + 1} failed to start"
                    break
            else:
                start = time.monotonic() + _START_DELAY
                for process in processes:
                    assert process.stdin is not None
                    await process.stdin.send_all(f"{start!r}\n".encode())
                started = True
        if failure is None and not started:
            failure = f"client processes not ready within {_READY_TIMEOUT:g} s"
        # Without a start line, a waiting worker exits; the others run to the end.
        for process in processes:
            assert process.stdin is not None
            await process.stdin.aclose()
        if failure is None:
            for index, lines in enumerate(outputs):
                nursery.start_soon(follow, index, lines)
    if failure is not None:
        said = b"".join(errors).decode(errors="replace").strip()
        raise RuntimeError(f"{failure}: {said}" if said else failure)
    for index, (process, tally) in enumerate(zip(processes, tallies, strict=True)):
        if process.returncode != 0 or tally is None:
            raise RuntimeError(_failed(index, errors))
    return Tally.merge([tally for tally in tallies if tally is not None])


async def _collect_errors(
    stream: trio.abc.ReceiveStream, errors: list[bytes], index: int
) -> None:
    while data := await stream.receive_some():
        errors[index] = (errors[index] + data)[-4000:]


def _failed(index: int, errors: list[bytes]) -> str:
    said = errors[index].decode(errors="replace").strip()
    return f"client process {index + 1} failed: {said or 'it said nothing'}"


def main() -> None:
    """The worker's side: read the share, say ready, wait for the start, drive."""
    plan = Plan(**json.loads(sys.stdin.readline()))
    print("ready", flush=True)
    line = sys.stdin.readline()
    if not line:  # the parent gave up before the start: another worker failed
        sys.exit(1)
    trio.run(_drive, plan, float(line))


async def _drive(plan: Plan, start: float) -> None:
    def progress(tally: Tally) -> None:
        print(f"sent {tally.sent}", flush=True)

    # Trio's clock has its own origin: place the shared start on it.
    tally = await drive(plan, trio.current_time() + start - time.monotonic(), progress)
    print(f"tally {json.dumps(tally.as_dict())}", flush=True)


if __name__ == "__main__":
    main()
