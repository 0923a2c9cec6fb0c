"""A real headless Chromium for tests, driven over the DevTools protocol.

:func:`open_page` loads a file, collects what the page logged as errors and
every request it made off the file, takes a screenshot and runs a script in
the page. Tests skip when Chromium is absent, unless ``CI`` is set: there a
missing browser is a broken CI image, and fails loudly instead.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
from trio_websocket import WebSocketConnection, open_websocket_url

# Starting the browser and loading a page of a few MB of script, on a loaded
# machine, take well under this.
PAGE_TIMEOUT = 60.0


def require_chromium() -> str:
    """Return the Chromium binary's path; else skip (fail where CI is set)."""
    for name in ("chromium", "chromium-browser"):
        binary = shutil.which(name)
        if binary is not None:
            return binary
    missing = "chromium is not installed (apt-get install chromium)"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{missing}, and CI is set: the CI image must provide it")
    pytest.skip(missing)


@attrs.frozen
class Page:
    """What a page did while it loaded, and what a script found in it.

    Attributes:
      errors: Uncaught exceptions, ``console.error`` calls and error log
        entries, one line each.
      requests: URLs requested that are not the file itself, ``data:`` or
        ``about:`` (a self-contained page makes none).
      found: The value of the script run once the page had loaded.
      colours: For each element the ``regions`` selector matched, how many
        distinct colours the screenshot has where it is (1 for a blank box).
    """

    errors: list[str]
    requests: list[str]
    found: Any
    colours: list[int]


class _DevTools:
    """Calls and events of the DevTools protocol on one page, over one websocket."""

    def __init__(self, socket: WebSocketConnection) -> None:
        self._socket = socket
        self._ids = 0
        self._replies: dict[int, Any] = {}
        self._arrived = trio.Event()
        self.events: list[dict[str, Any]] = []
        self.session: str | None = None

    async def read(self) -> None:
        """Sort the messages into replies and events, until the socket closes."""
        while True:
            message = json.loads(await self._socket.get_message())
            if "id" in message:
                self._replies[message["id"]] = message
            else:
                self.events.append(message)
            self._arrived.set()
            self._arrived = trio.Event()

    async def call(self, method: str, **params: Any) -> Any:
        """Send a command to the page (or the browser before attaching); its result."""
        self._ids += 1
        number = self._ids
        message: dict[str, Any] = {"id": number, "method": method, "params": params}
        if self.session is not None:
            message["sessionId"] = self.session
        await self._socket.send_message(json.dumps(message))
        while number not in self._replies:
            await self._arrived.wait()
        reply = self._replies.pop(number)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply["result"]

    async def event(self, method: str) -> dict[str, Any]:
        """Wait for the page's first event named ``method``."""
        while True:
            for event in self.events:
                if event["method"] == method:
                    return event
            await self._arrived.wait()

    async def evaluate(self, expression: str) -> Any:
        """The value of ``expression`` in the page; awaited if it is a promise."""
        reply = await self.call(
            "Runtime.evaluate",
            expression=expression,
            awaitPromise=True,
            returnByValue=True,
        )
        if "exceptionDetails" in reply:
            raise RuntimeError(f"script failed: {reply['exceptionDetails']}")
        return reply["result"].get("value")


@asynccontextmanager
async def _browser(width: int, height: int) -> AsyncIterator[_DevTools]:
    """A headless Chromium of its own profile; the DevTools protocol on a new page."""
    binary = require_chromium()
    # Closed from the protocol, Chromium has stopped writing to its profile;
    # killed (if it had to be), its helper processes may still be at it.
    profile_dir = tempfile.TemporaryDirectory(
        prefix="chromium-", ignore_cleanup_errors=True
    )
    with profile_dir as profile:
        command = [
            binary,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            "--no-default-browser-check",
            "--remote-debugging-port=0",
            f"--user-data-dir={profile}",
            f"--window-size={width},{height}",
            "about:blank",
        ]
        process = await trio.lowlevel.open_process(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        try:
            assert process.stderr is not None
            said = b""
            while (
                found := re.search(rb"DevTools listening on (ws://\S+)", said)
            ) is None:
                data = await process.stderr.receive_some()
                if not data:
                    raise RuntimeError(f"chromium did not start: {said.decode()}")
                said += data
            async with (
                open_websocket_url(
                    found.group(1).decode(), max_message_size=1 << 26
                ) as socket,
                trio.open_nursery() as nursery,
            ):
                # Chromium's own log lines must not fill the pipe and stall it.
                nursery.start_soon(_drain, process.stderr)
                devtools = _DevTools(socket)
                nursery.start_soon(devtools.read)
                target = await devtools.call("Target.createTarget", url="about:blank")
                attached = await devtools.call(
                    "Target.attachToTarget", targetId=target["targetId"], flatten=True
                )
                devtools.session = attached["sessionId"]
                yield devtools
                devtools.session = None
                await devtools.call("Browser.close")
                nursery.cancel_scope.cancel()
            with trio.move_on_after(10):
                await process.wait()
        finally:
            if process.returncode is None:
                process.kill()
                with trio.CancelScope(shield=True):
                    await process.wait()


async def _drain(stream: trio.abc.ReceiveStream) -> None:
    while await stream.receive_some():
        pass


# Counts the colours of the screenshot (decoded by the browser itself) in the
# box of each element that REGIONS selects.
_COLOURS = """(async () => {
  const boxes = [...document.querySelectorAll(REGIONS)].map((element) => {
    const box = element.getBoundingClientRect();
    return [box.x, box.y, box.width, box.height];
  });
  const image = new Image();
  image.src = "data:image/png;base64," + SHOT;
  await image.decode();
  const canvas = document.createElement("canvas");
  canvas.width = image.width;
  canvas.height = image.height;
  const context = canvas.getContext("2d");
  context.drawImage(image, 0, 0);
  return boxes.map(([x, y, width, height]) => {
    const pixels = context.getImageData(x, y, width, height).data;
    const seen = new Set();
    for (let i = 0; i < pixels.length; i += 4) {
      seen.add((pixels[i] << 16) | (pixels[i + 1] << 8) | pixels[i + 2]);
    }
    return seen.size;
  });
})()"""


async def open_page(
    path: Path,
    script: str,
    screenshot: Path,
    *,
    regions: str = "body",
    width: int = 1400,
    height: int = 1600,
) -> Page:
    """Load ``path``; once loaded, run ``script`` and save a PNG of the window.

    The script may be a promise: it can wait for what the page draws. Then
    the screenshot is taken and saved (a test that fails still leaves it to
    look at), and its colours counted in each box that ``regions`` selects.
    """
    with trio.fail_after(PAGE_TIMEOUT):
        async with _browser(width, height) as devtools:
            for domain in ("Page", "Runtime", "Log", "Network"):
                await devtools.call(f"{domain}.enable")
            url = path.as_uri()  # an absolute path, as tmp_path gives
            await devtools.call("Page.navigate", url=url)
            await devtools.event("Page.loadEventFired")
            found = await devtools.evaluate(script)
            shot = (await devtools.call("Page.captureScreenshot", format="png"))["data"]
            await trio.Path(screenshot).write_bytes(base64.b64decode(shot))
            events = list(devtools.events)
            colours = await devtools.evaluate(
                _COLOURS.replace("REGIONS", json.dumps(regions)).replace(
                    "SHOT", json.dumps(shot)
                )
            )
    return Page(
        errors=_errors(events),
        requests=_requests(events, url),
        found=found,
        colours=colours,
    )


def _errors(events: list[dict[str, Any]]) -> list[str]:
    errors = []
    for event in events:
        method, params = event["method"], event.get("params", {})
        if method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            thrown = details.get("exception", {}).get("description")
            errors.append(f"uncaught: {thrown or details.get('text')}")
        elif method == "Runtime.consoleAPICalled" and params["type"] in (
            "error",
            "assert",
        ):
            texts = [
                str(arg.get("value", arg.get("description"))) for arg in params["args"]
            ]
            errors.append(f"console.{params['type']}: {' '.join(texts)}")
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            errors.append(f"log: {params['entry']['text']}")
    return errors


def _requests(events: list[dict[str, Any]], url: str) -> list[str]:
    return [
        event["params"]["request"]["url"]
        for event in events
        if event["method"] == "Network.requestWillBeSent"
        and event["params"]["request"]["url"] != url
        and not event["params"]["request"]["url"].startswith(("data:", "about:"))
    ]
