"""Sphinx configuration of the trio-sessions documentation.

Build with ``nox -s docs``, or ``sphinx-build -W -n -b html docs docs/_build/html``.
The build needs no network: intersphinx reads the inventories vendored in
``_inventories/`` (see ``make_inventories.py`` there).
"""

from __future__ import annotations

import importlib.metadata
import re
from typing import Any

from docutils import nodes
from sphinx.addnodes import pending_xref
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment

project = "trio-sessions"
author = "the trio-sessions authors"
copyright = "the trio-sessions authors"
release = importlib.metadata.version("trio-sessions")
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
autodoc_preserve_defaults = True
autodoc_default_options = {"members": True}

napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

html_theme = "furo"
html_title = f"trio-sessions {release}"
pygments_style = "default"
pygments_dark_style = "monokai"

# The sentinel behind "timeout defaults to config.request_timeout" is private.
_SENTINEL_TYPE = re.compile(r"\s*\|\s*~?(?:[\w.]+\.)?_UseConfig\b")


def hide_private_sentinel(
    app: Sphinx,
    what: str,
    name: str,
    obj: object,
    options: object,
    signature: str | None,
    return_annotation: str | None,
) -> tuple[str | None, str | None] | None:
    """Show ``timeout: float | None = <config default>`` in signatures."""
    if signature is None or "_UseConfig" not in signature:
        return None
    signature = _SENTINEL_TYPE.sub("", signature)
    return signature.replace("_CONFIG_DEFAULT", "<config default>"), return_annotation


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


def setup(app: Sphinx) -> None:
    app.connect("autodoc-process-signature", hide_private_sentinel)
    # After napoleon (priority 500) has turned the docstring into reST.
    app.connect("autodoc-process-docstring", keep_attribute_colons, priority=600)
    app.connect("missing-reference", resolve_package_names)
