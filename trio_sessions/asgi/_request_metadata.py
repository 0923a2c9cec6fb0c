"""The metadata of a request's session: method, path and client, fitted to a limit."""

from __future__ import annotations

from .._metadata import metadata_size

__all__ = ["fit_metadata"]


def fit_metadata(metadata: dict[str, str], limit: int) -> dict[str, str] | None:
    """Shorten the path (then drop fields) until the metadata fits ``limit`` bytes."""

    size = metadata_size
    if size(metadata) <= limit:
        return metadata
    path = metadata["path"]
    short = {**metadata, "path": ""}
    if size(short) <= limit:
        # Binary search on the number of characters of the path that fit.
        low, high = 0, len(path)
        while low < high:
            middle = (low + high + 1) // 2
            if size({**metadata, "path": path[:middle]}) <= limit:
                low = middle
            else:
                high = middle - 1
        return {**metadata, "path": path[:low]}
    for field in ("client", "method", "path"):
        del short[field]
        if size(short) <= limit:
            return short
    return None
