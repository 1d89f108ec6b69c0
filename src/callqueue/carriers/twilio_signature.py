"""Twilio webhook signatures (``X-Twilio-Signature``).

Our own implementation of the scheme Twilio documents (twilio.com/docs/usage/webhooks/
webhooks-security) and the official SDKs check (``twilio/request_validator.py`` in
twilio-python); the test suite cross-checks it against the Python SDK's ``RequestValidator``.

The string that is signed, for a request Twilio sent to ``url``:

* the full URL Twilio called, exactly as configured (scheme, host, port, path and query);
* then, for a POST, the form parameters sorted by name, each as ``namevalue`` with no
  separator (a name sent several times contributes each distinct value, sorted). For a GET the
  parameters are already in the URL and nothing is appended.

The signature is base64(HMAC-SHA1(auth token, that string)). Twilio is not consistent about an
explicit default port (``:443`` / ``:80``) in the URL it signs, so, like the SDK, a request is
genuine when the signature matches the URL with or without it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit, urlunsplit

__all__ = ["Params", "sign", "string_to_sign", "verify"]

#: Form parameters: one value per name, or several (a name repeated in the form).
Params = Mapping[str, str | Sequence[str]]


def _values(value: str | Sequence[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def string_to_sign(url: str, params: Params | None) -> str:
    """The exact text Twilio signs (useful to debug a mismatch)."""
    signed = url
    for name in sorted(params or {}):
        for value in sorted(set(_values((params or {})[name]))):
            signed += name + value
    return signed


def sign(auth_token: str, url: str, params: Params | None) -> str:
    """The ``X-Twilio-Signature`` value Twilio sends for a POST of ``params`` to ``url``."""
    message = string_to_sign(url, params).encode("utf-8")
    digest = hmac.new(auth_token.encode("utf-8"), message, hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def _port_variants(url: str) -> list[str]:
    """``url`` as given, plus the same URL with its default port added or removed."""
    parts = urlsplit(url)
    default = {"https": 443, "http": 80}.get(parts.scheme.lower())
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 literal keeps its brackets
        host = f"[{host}]"
    userinfo = parts.netloc.rpartition("@")[0]
    prefix = f"{userinfo}@" if userinfo else ""
    try:
        port = parts.port
    except ValueError:
        return [url]
    variants = [url]
    if port is None and default is not None:
        variants.append(urlunsplit(parts._replace(netloc=f"{prefix}{host}:{default}")))
    elif port is not None and port == default:
        variants.append(urlunsplit(parts._replace(netloc=f"{prefix}{host}")))
    return variants


def verify(auth_token: str, url: str, params: Params | None, signature: str) -> bool:
    """Whether ``signature`` (the ``X-Twilio-Signature`` header) matches this request.

    ``url`` is the full URL Twilio called (the public one, with its query string), ``params``
    the form fields of a POST (``None`` or empty for a GET). Compared in constant time.
    """
    if not signature:
        return False
    given = signature.strip().encode("utf-8")
    matched = False
    for candidate in _port_variants(url):
        # No short cut: every variant is compared, each in constant time.
        if hmac.compare_digest(sign(auth_token, candidate, params).encode("ascii"), given):
            matched = True
    return matched
