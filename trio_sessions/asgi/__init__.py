"""ASGI 3 middleware that runs every HTTP request as a session of a manager.

Refusals, deadlines and the drain become HTTP answers (503, 504, 413); the ASGI
lifespan opens and shuts down the manager. Needs nothing beyond Trio itself.

The middleware is :class:`SessionMiddleware` (``_middleware.py``); one request's
messages pass through an ``Exchange`` (``_exchange.py``); the lifespan lives in
``_lifespan.py`` and the ASGI type aliases in ``_types.py``.
"""

from __future__ import annotations

from ._middleware import SessionMiddleware as SessionMiddleware
from ._types import ASGIApp as ASGIApp
from ._types import Message as Message
from ._types import Receive as Receive
from ._types import Scope as Scope
from ._types import Send as Send

__all__ = ["ASGIApp", "Message", "Receive", "Scope", "Send", "SessionMiddleware"]

SessionMiddleware.__module__ = __name__
