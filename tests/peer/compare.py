"""Compare Starlette's suite bare and wrapped in SessionMiddleware (``nox -s peer``).

Reads the two runs' reports (written by ``peer_plugin``) and the allowlist of
by-design differences; prints a summary and exits 1 if a test that passes bare
fails, errors or times out wrapped without being allowlisted.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import tomllib  # Python 3.11+, as Starlette's own suite needs

HERE = Path(__file__).resolve().parent


def load_allowlist(path: Path) -> dict[str, str]:
    """Map each allowlisted test id to the reason its difference is by design."""
    data = tomllib.loads(path.read_text())
    return {entry["test"]: entry["reason"] for entry in data.get("difference", [])}


def summary(name: str, results: dict[str, list[str]]) -> str:
    counts = Counter(outcome for outcome, _ in results.values())
    return (
        f"{name}: {len(results)} tests, {counts['passed']} passed, "
        f"{counts['failed']} failed, {counts['timeout']} timed out, "
        f"{counts['skipped']} skipped"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("bare", type=Path, help="report of the bare run")
    parser.add_argument("wrapped", type=Path, help="report of the wrapped run")
    parser.add_argument("--allowlist", type=Path, default=HERE / "allowlist.toml")
    args = parser.parse_args(argv)

    bare = json.loads(args.bare.read_text())["tests"]
    report = json.loads(args.wrapped.read_text())
    wrapped, routed = report["tests"], report["routed"]
    allowed = load_allowlist(args.allowlist)

    print(summary("bare   ", bare))
    print(summary("wrapped", wrapped))
    print(
        "wrapped connections: "
        + (", ".join(f"{n} {kind}" for kind, n in sorted(routed.items())) or "none")
    )
    if not routed.get("http (manager per request)") or not routed.get(
        "http (lifespan manager)"
    ):
        print("the wrapped run did not send requests through SessionMiddleware")
        return 1
    regressions: list[tuple[str, str, str]] = []
    by_design: list[tuple[str, str, str]] = []
    for test_id, (outcome, _) in sorted(bare.items()):
        if outcome != "passed":
            continue
        after, detail = wrapped.get(test_id, ["missing", "not run wrapped"])
        if after in ("passed", "skipped"):
            continue
        if test_id in allowed:
            by_design.append((test_id, after, allowed[test_id]))
        else:
            regressions.append((test_id, after, detail))

    differing = {test_id for test_id, _, _ in by_design}
    stale = sorted(set(allowed) - differing)
    if by_design:
        print(f"\n{len(by_design)} by-design difference(s), see allowlist.toml:")
        for test_id, after, reason in by_design:
            print(f"  {test_id} [{after}]\n      {reason}")
    if stale:
        # Not an error: the difference may depend on scheduling, or be fixed.
        print(f"\n{len(stale)} allowlisted test(s) pass wrapped this time:")
        for test_id in stale:
            print(f"  {test_id}")
    if regressions:
        print(f"\n{len(regressions)} test(s) pass bare and fail wrapped:")
        for test_id, after, detail in regressions:
            print(f"  {test_id} [{after}]\n      {detail}")
        return 1
    print("\nno test that passes bare fails wrapped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
