"""Write the offline intersphinx inventories in this directory.

The docs build must pass without network access, so ``conf.py`` points
intersphinx at the real documentation sites for links but reads these local
``objects.inv`` files instead of downloading them.

- ``trio.inv`` and ``attrs.inv`` are read from the upstream Sphinx sources (the
  ``.. autoclass::``/``.. autofunction::``/... directives and ``.. _label:``
  targets), with ``:members:`` expanded from the installed packages, exactly as
  autodoc does when those projects build their docs.
- ``python.inv`` lists the standard library objects these docs and the
  docstrings of trio_sessions refer to; CPython's own inventory is too large to
  vendor, and these anchors are stable across Python 3 versions.

Regenerate after upgrading trio or attrs::

    git clone --depth 1 https://github.com/python-trio/trio /tmp/trio
    git clone --depth 1 https://github.com/python-attrs/attrs /tmp/attrs
    python docs/_inventories/make_inventories.py /tmp/trio/docs/source /tmp/attrs/docs

Add a line to ``PYTHON`` when the docs start referring to another stdlib object.
The files here were generated from trio's docs at commit 60d0c2f8 (with trio
0.35.0 installed) and attrs' at commit c1dc5dcb (attrs 26.1.0).
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
import warnings
import zlib
from pathlib import Path

HERE = Path(__file__).parent

# (role, name, page): the anchor is the name, as for every autodoc'd object.
PYTHON = [
    *(("py:class", n, "library/functions.html") for n in ("int", "float", "bool")),
    *(("py:class", n, "library/functions.html") for n in ("object", "type")),
    *(("py:function", n, "library/functions.html") for n in ("callable", "len")),
    *(("py:class", n, "library/stdtypes.html") for n in ("str", "bytes", "dict")),
    *(("py:class", n, "library/stdtypes.html") for n in ("tuple", "list", "set")),
    *(("py:data", n, "library/constants.html") for n in ("None", "True", "False")),
    *(
        ("py:exception", n, "library/exceptions.html")
        for n in (
            "BaseException",
            "Exception",
            "BaseExceptionGroup",
            "ExceptionGroup",
            "KeyboardInterrupt",
            "SystemExit",
            "RuntimeError",
            "TimeoutError",
            "TypeError",
            "ValueError",
            "KeyError",
            "OSError",
        )
    ),
    *(
        ("py:class", f"collections.abc.{n}", "library/collections.abc.html")
        for n in (
            "AsyncGenerator",
            "AsyncIterator",
            "Awaitable",
            "Callable",
            "Collection",
            "Coroutine",
            "Iterable",
            "Iterator",
            "Mapping",
            "MutableMapping",
            "Sequence",
        )
    ),
    ("py:module", "collections.abc", "library/collections.abc.html"),
    *(
        ("py:data", f"typing.{n}", "library/typing.html")
        for n in ("Any", "ClassVar", "Final", "Literal", "Optional", "Union")
    ),
    *(
        ("py:class", f"typing.{n}", "library/typing.html")
        for n in ("Protocol", "TypeVar", "ParamSpec", "Generic")
    ),
    ("py:function", "typing.final", "library/typing.html"),
    ("py:class", "types.MappingProxyType", "library/types.html"),
    ("py:data", "types.CoroutineType", "library/types.html"),
    ("py:function", "contextlib.asynccontextmanager", "library/contextlib.html"),
    ("py:class", "contextlib.AbstractAsyncContextManager", "library/contextlib.html"),
    ("py:module", "json", "library/json.html"),
    ("py:function", "json.dumps", "library/json.html"),
    ("py:function", "json.loads", "library/json.html"),
    ("py:exception", "json.JSONDecodeError", "library/json.html"),
    ("py:class", "json.JSONEncoder", "library/json.html"),
    ("py:class", "enum.Enum", "library/enum.html"),
    ("py:module", "signal", "library/signal.html"),
    ("py:data", "signal.SIGTERM", "library/signal.html"),
    ("py:data", "signal.SIGINT", "library/signal.html"),
    ("py:function", "signal.signal", "library/signal.html"),
    ("py:function", "os.kill", "library/os.html"),
    ("py:function", "os.getpid", "library/os.html"),
    ("py:function", "functools.partial", "library/functools.html"),
    ("py:class", "logging.Logger", "library/logging.html"),
    ("py:function", "logging.getLogger", "library/logging.html"),
    ("py:data", "math.inf", "library/math.html"),
    ("py:function", "time.perf_counter", "library/time.html"),
    ("py:class", "threading.Lock", "library/threading.html"),
    ("py:class", "threading.Thread", "library/threading.html"),
    (
        "py:class",
        "concurrent.futures.ThreadPoolExecutor",
        "library/concurrent.futures.html",
    ),
]

_ROLES = {
    "class": "class",
    "autoclass": "class",
    "exception": "exception",
    "autoexception": "exception",
    "function": "function",
    "autofunction": "function",
    "decorator": "function",
    "method": "method",
    "automethod": "method",
    "attribute": "attribute",
    "autoattribute": "attribute",
    "data": "data",
    "autodata": "data",
}
_DIRECTIVE = re.compile(r"^(\s*)\.\. (?:py:)?([a-z]+)::\s*(\S.*)?$")
_LABEL = re.compile(r"^\.\. _([A-Za-z0-9_-]+):\s*$")
_UNDERLINE = re.compile(r"^([-=~^\"*+#])\1{2,}$")


def _anchor(label: str) -> str:
    # Sphinx turns a label into an HTML id with docutils' make_id.
    return re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")


def _members(qualname: str, option: str) -> list[tuple[str, str]]:
    """Return (role, name) of the members ``:members:`` documents for a class."""
    module_name, _, attr = qualname.rpartition(".")
    while module_name:
        try:
            obj: object = importlib.import_module(module_name)
            break
        except ImportError:
            module_name, _, head = module_name.rpartition(".")
            attr = f"{head}.{attr}"
    else:
        return []
    for part in attr.split("."):
        obj = getattr(obj, part, None)
    if not inspect.isclass(obj):
        return []
    wanted = [n.strip() for n in option.split(",") if n.strip()]
    found = []
    for name, value in vars(obj).items():
        if wanted and name not in wanted:
            continue
        if not wanted and (name.startswith("_") or not getattr(value, "__doc__", None)):
            continue
        if isinstance(value, property):
            role = "property"
        elif inspect.isfunction(value) or isinstance(value, staticmethod | classmethod):
            role = "method"
        else:
            role = "attribute"
        found.append((f"py:{role}", f"{qualname}.{name}"))
    return found


def parse_rst(path: Path, page: str) -> list[tuple[str, str, str, str]]:
    """Return (role, name, uri, display name) for the objects one page documents."""
    entries = []
    module: str | None = None
    cls: str | None = None
    lines = path.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        label = _LABEL.match(line)
        if label:
            j = i + 1
            while j < len(lines) and not lines[j].strip():
                j += 1
            title = "-"
            if j + 1 < len(lines) and _UNDERLINE.match(lines[j + 1].strip()):
                title = lines[j].strip()
            name = label.group(1).lower()
            entries.append(("std:label", name, f"{page}#{_anchor(name)}", title))
            continue
        match = _DIRECTIVE.match(line)
        if not match:
            continue
        indent, directive, argument = match.groups()
        argument = (argument or "").strip()
        if directive in ("module", "currentmodule"):
            module = argument
            if directive == "module":
                entries.append(("py:module", module, f"{page}#module-{module}", "-"))
            continue
        role = _ROLES.get(directive)
        if role is None:
            continue
        name = re.split(r"[(\s]", argument)[0]
        if not indent:
            top = name.split(".")[0]
            qualified = module is None or top in ("trio", "attrs", "attr")
            full = name if qualified else f"{module}.{name}"
            cls = full if role in ("class", "exception") else None
        elif cls is None:
            continue
        else:
            full = name if name.startswith(f"{cls}.") else f"{cls}.{name}"
        entries.append((f"py:{role}", full, f"{page}#{full}", "-"))
        if not indent and cls is not None:
            for option in lines[i + 1 : i + 6]:
                members = re.match(r"^\s+:members:(.*)$", option)
                if members:
                    for member_role, member in _members(full, members.group(1)):
                        entries.append((member_role, member, f"{page}#{member}", "-"))
    return entries


def write_inventory(
    path: Path, project: str, version: str, entries: list[tuple[str, str, str, str]]
) -> None:
    """Write a Sphinx version 2 ``objects.inv``."""
    seen = set()
    body = []
    for role, name, uri, display in sorted(entries):
        if (role, name) in seen:
            continue
        seen.add((role, name))
        priority = "-1" if role == "std:label" else "1"
        body.append(f"{name} {role} {priority} {uri} {display}\n")
    header = (
        "# Sphinx inventory version 2\n"
        f"# Project: {project}\n"
        f"# Version: {version}\n"
        "# The remainder of this file is compressed using zlib.\n"
    )
    data = header.encode() + zlib.compress("".join(body).encode("utf-8"), 9)
    path.write_bytes(data)
    print(f"{path.name}: {len(seen)} objects")


def main(trio_docs: str, attrs_docs: str) -> None:
    import attrs
    import trio

    # Expanding :members: touches trio's deprecated names; that is not our concern.
    warnings.simplefilter("ignore", DeprecationWarning)

    trio_entries = []
    for topic in ("core", "io", "testing", "lowlevel"):
        page = f"reference-{topic}"
        trio_entries += parse_rst(Path(trio_docs, f"{page}.rst"), f"{page}.html")
    write_inventory(HERE / "trio.inv", "Trio", trio.__version__, trio_entries)

    attrs_entries = parse_rst(Path(attrs_docs, "api.rst"), "api.html")
    write_inventory(HERE / "attrs.inv", "attrs", attrs.__version__, attrs_entries)

    python_entries = [
        (role, name, f"{page}#{'module-' if role == 'py:module' else ''}{name}", "-")
        for role, name, page in PYTHON
    ]
    write_inventory(HERE / "python.inv", "Python", "3", python_entries)


if __name__ == "__main__":
    main(*sys.argv[1:])
