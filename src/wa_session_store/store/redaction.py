"""Secrets out of URLs and messages: DSN passwords never reach a log line.

Used by the URL opener, the CLI and the PostgreSQL backend (which scrubs its
driver's messages); it imports nothing of the library, so each can use it.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

__all__ = ["SECRET_PARAMS", "redact_text", "redact_url"]

#: Connection parameters whose values are secrets (libpq's names).
SECRET_PARAMS = ("password", "sslpassword")

# key=value conninfo: a secret parameter's value, quoted or bare.
_KV_SECRET = re.compile(r"(?i)\b((?:ssl)?password)(\s*=\s*)('(?:[^'\\]|\\.)*'?|[^\s']*)")
# URLs inside a longer text (a message): up to white space or a quote.
_URL = re.compile(r"(?i)\b[a-z][a-z0-9+.-]*://[^\s'\"]*")


def redact_url(url: str) -> str:
    """``url`` without its secrets: the password in its user info, and the value
    of every secret parameter (``password=``, ``sslpassword=``), in a URL's
    query string or in a ``key=value`` conninfo string."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return _KV_SECRET.sub(r"\1\2***", url)
    authority, slash, tail = rest.partition("/")
    authority, question, query_in_authority = authority.partition("?")
    if "@" in authority:
        # The last '@' ends the user info: an unescaped '@' in a password
        # (which libpq refuses) is hidden along with the rest of it.
        userinfo, _, host = authority.rpartition("@")
        user = userinfo.split(":", 1)[0]
        authority = f"{user}{':***' if ':' in userinfo else ''}@{host}"
    url = f"{scheme}{sep}{authority}{question}{query_in_authority}{slash}{tail}"
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    if not any(name.lower() in SECRET_PARAMS for name, _ in query):
        return url
    query = [(name, "***" if name.lower() in SECRET_PARAMS else value) for name, value in query]
    return urlunsplit(parts._replace(query=urlencode(query, safe="*")))


def redact_text(text: str) -> str:
    """``text`` (a message) with every URL and ``key=value`` secret in it redacted."""
    text = _URL.sub(lambda match: redact_url(match.group()), text)
    return _KV_SECRET.sub(r"\1\2***", text)
