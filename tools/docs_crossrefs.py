"""Sphinx roles in docstrings, rendered as cross-references on the documentation site.

The docstrings of ``src/`` use Sphinx roles (``:class:`LeaseLostError```,
``:meth:`~wa_session_store.AuthState.flush```), which read well in an editor
and in ``help()``, but mkdocstrings prints them literally. This module is two
things for ``mkdocs.yml``, so no docstring has to change:

- ``SphinxRoles``, a Griffe extension (``extensions:`` of the mkdocstrings
  Python handler): once the package is loaded, every role in a docstring
  becomes an autorefs cross-reference to the object it names, resolved in the
  docstring's own scope as Python would (a member, an import, a module-level
  name, or a public name of ``wa_session_store``). The reference is optional:
  a link where the object is documented on the site, code where it is not
  (a private helper, ``TypeError``, ``random.Random``).
- ``on_post_page``, an mkdocs hook: a role left in a built page (a syntax
  the extension does not know, a docstring it did not see) is a warning,
  which fails ``mkdocs build --strict``.

A role is ``:kind:`target``` with kind one of :data:`KINDS` (optionally
``py:``-prefixed); ``~`` before the target shows its last component only.
"""

from __future__ import annotations

import functools
import html
import logging
import re
from typing import Any

import griffe

KINDS = ("class", "func", "meth", "attr", "exc", "mod", "data", "obj", "const")
#: A role in docstring source: ``:class:`~a.b.C```.
ROLE = re.compile(r":(?:py:)?(?P<kind>" + "|".join(KINDS) + r"):`(?P<target>[^`]+)`")
#: Sphinx's explicit title: ``:meth:`the title <a.b.method>```.
TITLED = re.compile(r"^(?P<title>.*?)\s*<(?P<target>[^<>]+)>$", re.DOTALL)
#: A role as Markdown renders one that was left alone: ``:class:<code>C</code>``.
RENDERED_ROLE = re.compile(r":(?:py:)?(?:" + "|".join(KINDS) + r"):(?:<code>|`)")
#: Code blocks, where a role is shown on purpose (what a docstring's source looks like).
CODE_BLOCK = re.compile(r"<pre\b.*?</pre>", re.DOTALL)
PACKAGE = "wa_session_store"

logger = logging.getLogger("mkdocs.hooks.docs_crossrefs")


def _identifier(obj: griffe.Object, target: str) -> str | None:
    """The full path ``target`` names in the scope of ``obj``, or None."""
    if target.startswith(f"{PACKAGE}.") or target == PACKAGE:
        return target
    first, _, rest = target.partition(".")
    scope: griffe.Object | None = obj
    while scope is not None:
        try:
            resolved = scope.resolve(first)
        except griffe.NameResolutionError:
            scope = scope.parent
            continue
        return f"{resolved}.{rest}" if rest else resolved
    return None


def _reference(obj: griffe.Object, match: re.Match[str]) -> str:
    written = match["target"]
    if titled := TITLED.match(written):  # :meth:`title <target>`
        shown, target = titled["title"], titled["target"].lstrip("~")
    else:
        shown = written.lstrip("~")
        if written.startswith("~"):
            shown = shown.rsplit(".", 1)[-1]
        target = written.lstrip("~")
    target = target.removesuffix("()")
    code = f"<code>{html.escape(shown)}</code>"
    identifier = _identifier(obj, target)
    if identifier is None:
        return code
    return f'<autoref identifier="{html.escape(identifier)}" optional>{code}</autoref>'


class SphinxRoles(griffe.Extension):
    """Rewrites the Sphinx roles of every docstring of a loaded package into autorefs."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        for obj in _walk(pkg):
            docstring = obj.docstring
            if docstring is not None and ROLE.search(docstring.value):
                docstring.value = ROLE.sub(functools.partial(_reference, obj), docstring.value)


def _walk(obj: griffe.Object) -> list[griffe.Object]:
    found = [obj]
    for member in obj.members.values():
        if not member.is_alias and isinstance(member, griffe.Object):
            found += _walk(member)
    return found


def on_post_page(output: str, *, page: Any, config: Any) -> str:
    """Warn (a failure under ``--strict``) about every role a built page still shows.

    Code blocks are left out: a role there is shown on purpose.
    """
    text = CODE_BLOCK.sub("", output)
    for match in RENDERED_ROLE.finditer(text):
        start = max(0, match.start() - 60)
        context = re.sub(r"<[^>]+>", "", text[start : match.end() + 60])
        logger.warning(
            "%s: a Sphinx role was left unrendered: ...%s...",
            page.file.src_uri,
            " ".join(context.split()),
        )
    return output
