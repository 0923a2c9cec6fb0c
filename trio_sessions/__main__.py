"""``python -m trio_sessions``: the same command as the ``trio-sessions`` script."""

from __future__ import annotations

from ._cli import main

if __name__ == "__main__":
    raise SystemExit(main())
