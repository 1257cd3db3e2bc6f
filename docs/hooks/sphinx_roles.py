"""mkdocs hook: show the Sphinx roles of numpydoc docstrings as plain code.

The docstrings follow scikit-learn's numpydoc style (``:class:`~skmoe.Foo```), which Python's
``help()`` and Sphinx understand; mkdocstrings renders the role name literally
(``:class:<code>~skmoe.Foo</code>``). This keeps the code and drops the role, and a leading ``~``
shortens the path to its last part, as Sphinx does.
"""

from __future__ import annotations

import re
from typing import Any

_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|attr|mod|data|obj|exc|const):<code>(~?)([^<]+)</code>")


def _plain(match: re.Match[str]) -> str:
    tilde, target = match.groups()
    return f"<code>{target.rsplit('.', 1)[-1] if tilde else target}</code>"


def on_page_content(html: str, **kwargs: Any) -> str:
    return _ROLE.sub(_plain, html)
