"""Sphinx configuration of the trio-sessions documentation.

Build with ``.venv/bin/nox -s docs``, or
``.venv/bin/sphinx-build -E -a -W -n -b html docs docs/_build/html``.
The build needs no network: intersphinx reads the inventories vendored in
``_inventories/`` (see ``make_inventories.py`` there).
"""

from __future__ import annotations

import ast
import collections.abc
import re
import sys
import typing
from pathlib import Path
from typing import Any

import attrs
from docutils import nodes
from sphinx.addnodes import pending_xref
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment
from sphinx.util.typing import stringify_annotation

import trio_sessions

project = "trio-sessions"
author = "the trio-sessions authors"
copyright = "the trio-sessions authors"
# The one place the version is written; an editable install's metadata can lag it.
release = trio_sessions.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.intersphinx",
    "sphinx.ext.napoleon",
]

exclude_patterns = ["_build", "_inventories"]
nitpicky = True
nitpick_ignore_regex = [
    # Neither publishes a Sphinx inventory to link to.
    (r"py:.*", r"prometheus_client(\..*)?"),
    (r"py:.*", r"httpx(\..*)?"),
    # coredis does, but no copy is vendored in _inventories/ (an optional extra).
    (r"py:.*", r"coredis(\..*)?"),
    # Type variables of the typed API (Session[T], fn(*args) -> T) have no page.
    (r"py:class", r"T|ArgsT|E"),
]

# Links go to the real sites; the inventories are read from disk.
intersphinx_mapping = {
    "python": ("https://docs.python.org/3", "_inventories/python.inv"),
    "trio": ("https://trio.readthedocs.io/en/stable", "_inventories/trio.inv"),
    "attrs": ("https://www.attrs.org/en/stable", "_inventories/attrs.inv"),
}

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_typehints_format = "short"
# Defaults as written in the source (1_048_576, CAPACITY_MESSAGE); attrs classes,
# whose generated __init__ has no source of its own, get theirs below.
autodoc_preserve_defaults = True
python_use_unqualified_type_names = True
# The public aliases, by name, instead of the Callable[...] they stand for.
autodoc_type_aliases = {
    name: f"trio_sessions.{module}.{name}"
    for module, names in {
        "asgi": ("ASGIApp", "Message", "Receive", "Scope", "Send"),
        "loadtest": ("Work", "ProgressCallback"),
    }.items()
    for name in names
}
autodoc_default_options = {"members": True}

napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

html_theme = "furo"
html_title = f"trio-sessions {release}"
pygments_style = "default"
pygments_dark_style = "monokai"

# Sphinx writes Callable[..., T] as Callable[[...], T], which is not Python,
# and an alias in a union (Work | None) as its repr.
_FIXES = (
    (re.compile(r"(Callable)\[\[\.\.\.\], "), r"\1[..., "),
    (re.compile(r"TypeAliasForwardRef\('([\w.]+)'\)"), r"~\1"),
)


def process_signature(
    app: Sphinx,
    what: str,
    name: str,
    obj: object,
    options: object,
    signature: str | None,
    return_annotation: str | None,
) -> tuple[str | None, str | None] | None:
    """Make every signature readable, each default shown as its value.

    One handler, because Sphinx takes the first handler's answer.
    """
    if what == "class" and getattr(obj, "_is_protocol", False):
        # A Protocol is not constructed: no (*args, **kwargs) for it.
        return "", None
    if what in ("class", "exception") and isinstance(obj, type) and attrs.has(obj):
        signature = attrs_signature(app, obj)
    return readable_signature(signature, return_annotation)


def readable_signature(
    signature: str | None, return_annotation: str | None
) -> tuple[str | None, str | None] | None:
    """Keep every signature a Python expression.

    A signature that does not parse as Python is shown as raw text,
    ``~collections.abc`` prefixes and all.
    """
    if signature is None:
        return None
    for pattern, replacement in _FIXES:
        signature = pattern.sub(replacement, signature)
        if return_annotation is not None:
            return_annotation = pattern.sub(replacement, return_annotation)
    return signature, return_annotation


def _class_body(cls: type) -> tuple[str, ast.ClassDef] | None:
    """The source of the module that defines ``cls``, and its ``class`` statement.

    The package face sets ``__module__`` to ``trio_sessions``, so
    :func:`inspect.getsource` looks in the wrong file: search the package.
    """
    package = cls.__module__.partition(".")[0]
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if name.partition(".")[0] != package or path is None:
            continue
        if getattr(module, cls.__name__, None) is not cls:
            continue
        source = Path(path).read_text(encoding="utf-8")
        for node in ast.parse(source).body:
            if isinstance(node, ast.ClassDef) and node.name == cls.__name__:
                return source, node
    return None


def _source_defaults(cls: type) -> dict[str, str]:
    """Each attrs field's default as written in the class body: ``200``, ``10_240``."""
    found = _class_body(cls)
    if found is None:
        return {}
    source, body = found
    defaults: dict[str, str] = {}
    for node in body.body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        value = node.value
        if isinstance(value, ast.Call):  # attrs.field(default=...)
            value = next(
                (kw.value for kw in value.keywords if kw.arg == "default"), None
            )
        text = None if value is None else ast.get_source_segment(source, value)
        if text is not None:
            defaults[node.target.id] = text
    return defaults


def attrs_signature(app: Sphinx, obj: type) -> str:
    """Give an attrs class the signature its fields declare, defaults and all.

    attrs generates ``__init__``, so the source that ``autodoc_preserve_defaults``
    reads is attrs' own (``attr_dict['max_sessions'].default``), and a field
    with a converter takes the converter's parameter type (``Any``).
    """
    # Names imported only under TYPE_CHECKING are collections.abc's.
    hints = typing.get_type_hints(obj, localns=vars(collections.abc))
    written: dict[str, str] = {}
    for cls in reversed(obj.__mro__):
        if attrs.has(cls):
            written.update(_source_defaults(cls))
    short = app.config.autodoc_typehints_format == "short"
    mode = "smart" if short else "fully-qualified-except-typing"
    params: list[str] = []
    keyword_only = False
    for field in attrs.fields(obj):
        if not field.init:
            continue
        if field.kw_only and not keyword_only:
            params.append("*")
            keyword_only = True
        text = f"{field.alias}: {stringify_annotation(hints[field.name], mode)}"
        if field.default is not attrs.NOTHING:
            default = written.get(field.name)
            if default is None:
                default = (
                    f"{field.default.factory.__name__}()"
                    if isinstance(field.default, attrs.Factory)
                    else repr(field.default)
                )
            text += f" = {default}"
        params.append(text)
    return f"({', '.join(params)})"


def keep_attribute_colons(
    app: Sphinx, what: str, name: str, obj: object, options: object, lines: list[str]
) -> None:
    """Undo napoleon's reading of ``text: more text`` as ``type: description``.

    For properties and attributes napoleon takes whatever precedes the first
    colon of the docstring as the type; this project's docstrings never use
    that form, and often start with a sentence that has a colon in it.
    """
    if what not in ("attribute", "data", "property"):
        return
    for index, line in enumerate(lines):
        if line.startswith(":type: "):
            words = line.removeprefix(":type: ")
            del lines[index]
            if lines and lines[-1] == "":
                lines.pop()
            first = next(i for i, text in enumerate(lines) if text.strip())
            lines[first] = f"{words}: {lines[first]}"
            return


def resolve_package_names(
    app: Sphinx, env: BuildEnvironment, node: pending_xref, contnode: nodes.Element
) -> nodes.Element | None:
    """Resolve a bare ``SessionConfig`` in a submodule's docstring to the package's.

    The optional modules (``asgi``, ``prometheus``, ``loadtest``) use the
    package's public names unqualified, as their code does after
    ``from . import ...``.
    """
    if node.get("refdomain") != "py" or node.get("refspecific"):
        return None
    target = node["reftarget"]
    if target.startswith("trio_sessions.") or not node.get("py:module", ""):
        return None
    if not str(node.get("py:module")).startswith("trio_sessions"):
        return None
    domain: Any = env.get_domain("py")
    qualified = f"trio_sessions.{target}"
    if qualified not in domain.objects:
        return None
    node["reftarget"] = qualified
    result: nodes.Element | None = domain.resolve_xref(
        env, node["refdoc"], app.builder, node["reftype"], qualified, node, contnode
    )
    return result


def type_variables_as_text(
    app: Sphinx, env: BuildEnvironment, node: pending_xref, contnode: nodes.Element
) -> nodes.Element | None:
    """Show a type variable of the package (``T`` of ``Session[T]``) as plain text.

    A TypeVar has no page of its own to link to; it reads as what it is.
    """
    module, _, name = str(node.get("reftarget", "")).rpartition(".")
    if node.get("refdomain") != "py" or not module.startswith("trio_sessions"):
        return None
    kinds = tuple(
        getattr(typing, kind)
        for kind in ("TypeVar", "ParamSpec", "TypeVarTuple")
        if hasattr(typing, kind)
    )
    value = getattr(sys.modules.get(module), name, None)
    return contnode if isinstance(value, kinds) else None


def setup(app: Sphinx) -> None:
    app.connect("autodoc-process-signature", process_signature)
    # After napoleon (priority 500) has turned the docstring into reST.
    app.connect("autodoc-process-docstring", keep_attribute_colons, priority=600)
    app.connect("missing-reference", resolve_package_names)
    app.connect("missing-reference", type_variables_as_text)
