"""Plivo webhook signatures, version 3 (``X-Plivo-Signature-V3``).

Our own implementation of the scheme the official SDKs check (``plivo/utils/signature_v3.py``
in plivo-python, ``lib/utils/v3Security.js`` in plivo-node); the test suite cross-checks it
against the Python SDK on random inputs.

The string that is signed, for a request Plivo sent to ``url`` with nonce ``nonce``:

* the URL without its query and fragment: ``scheme://netloc/path``;
* POST: the URL's query parameters, decoded and sorted (by name, then each name's values), as
  ``k=v&k2=v2``. A ``?`` and that query follow when the query is non-empty or there are POST
  parameters; a ``.`` follows the query when both are non-empty. Then the POST parameters sorted
  by name, each as ``namevalue`` with no separator;
* GET: the URL's query merged with ``params`` (the URL's values win for a name in both),
  sorted the same way, after a ``?`` when non-empty;
* then ``.`` and the nonce.

The signature is base64(HMAC-SHA256(auth token, that string)). A header may carry several
signatures separated by commas (one per auth token of the account): a request is genuine when
any of them matches.

Text is encoded as UTF-8 once. (The Python SDK re-encodes non-ASCII URLs and parameters a
second time, latin-1 style; the two agree on ASCII, which is what callbacks carry.)
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from urllib.parse import parse_qsl, urlparse, urlunparse

__all__ = ["sign_v3", "v3_string_to_sign", "verify_v3"]


def _query_values(query: str) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        values.setdefault(name, []).append(value)
    return values


def _sorted_query(values: Mapping[str, Iterable[str]]) -> str:
    return "&".join(f"{name}={value}" for name in sorted(values) for value in sorted(values[name]))


def v3_string_to_sign(
    url: str, nonce: str, params: Mapping[str, str] | None, method: str = "POST"
) -> str:
    """The exact text that Signature V3 signs (useful to debug a mismatch)."""
    parts = urlparse(url)
    signed = urlunparse((parts.scheme, parts.netloc, parts.path, "", "", ""))
    url_query = _query_values(parts.query)
    posted = dict(params or {})
    if method.upper() == "GET":
        merged: dict[str, list[str]] = {name: [value] for name, value in posted.items()}
        merged.update(url_query)
        query = _sorted_query(merged)
        if query:
            signed += "?" + query
    else:
        query = _sorted_query(url_query)
        if query or posted:
            signed += "?" + query
        if query and posted:
            signed += "."
        signed += "".join(f"{name}{posted[name]}" for name in sorted(posted))
    return f"{signed}.{nonce}"


def sign_v3(
    auth_token: str,
    url: str,
    nonce: str,
    params: Mapping[str, str] | None,
    method: str = "POST",
) -> str:
    """The ``X-Plivo-Signature-V3`` value Plivo sends for this request."""
    message = v3_string_to_sign(url, nonce, params, method).encode("utf-8")
    digest = hmac.new(auth_token.encode("utf-8"), message, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def verify_v3(
    auth_token: str,
    url: str,
    nonce: str,
    signature_header: str,
    params: Mapping[str, str] | None,
    method: str = "POST",
) -> bool:
    """Whether any signature in the (comma-separated) header matches this request.

    ``url`` is the full URL Plivo called (the public one, with its query string), ``params``
    the form fields of a POST (for a GET, pass ``None``: the parameters are in the URL).
    """
    expected = sign_v3(auth_token, url, nonce, params, method).encode("ascii")
    matched = False
    for candidate in signature_header.split(","):
        # No short cut: every candidate is compared, each in constant time.
        if hmac.compare_digest(expected, candidate.strip().encode("utf-8")):
            matched = True
    return matched
