"""Signed unsubscribe tokens: the address and an HMAC of it, so a link works without a lookup
table and a forged or altered link is refused.

The secret comes from NEWSLETTER_SECRET only; it is never written anywhere. Rotating it voids
the links of every message sent before.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
from collections.abc import Mapping

from newsletter.errors import NewsletterError, Problem

SECRET_VARIABLE = "NEWSLETTER_SECRET"
MIN_SECRET_LENGTH = 16
_MAC_BYTES = 16


def secret_from_env(env: Mapping[str, str] | None = None) -> bytes:
    """The signing secret, or a NewsletterError that says how to make one (never its value)."""
    value = (os.environ if env is None else env).get(SECRET_VARIABLE, "")
    if not value:
        raise NewsletterError(
            Problem(
                f"{SECRET_VARIABLE} is not set; it signs unsubscribe links. Make one with "
                "`python3 -c 'import secrets; print(secrets.token_urlsafe(32))'` and keep it"
            )
        )
    if len(value) < MIN_SECRET_LENGTH:
        raise NewsletterError(
            Problem(f"{SECRET_VARIABLE} is too short; use at least {MIN_SECRET_LENGTH} characters")
        )
    return value.encode()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


_B64_ALPHABET = re.compile(r"[A-Za-z0-9_-]+")


def _unb64(text: str) -> bytes:
    """Strict inverse of `_b64`: only the URL-safe alphabet, no padding, and only the one
    canonical spelling of the bytes (no stray characters, no set bits past the last byte);
    ValueError otherwise."""
    if not _B64_ALPHABET.fullmatch(text) or len(text) % 4 == 1:
        raise ValueError("not canonical base64")
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if _b64(data) != text:
        raise ValueError("not canonical base64")
    return data


def _mac(secret: bytes, scope: str, email: str) -> bytes:
    message = f"unsubscribe\0{scope}\0{email}".encode()
    return hmac.digest(secret, message, hashlib.sha256)[:_MAC_BYTES]


def sign(secret: bytes, scope: str, email: str) -> str:
    """A URL-safe token for `email` on the list `scope` (the List-Id)."""
    return f"{_b64(email.encode())}.{_b64(_mac(secret, scope, email))}"


def verify(secret: bytes, scope: str, token: str) -> str | None:
    """The address a genuine token was made for; None for anything forged or damaged."""
    if len(token) > 1024:
        return None
    payload, dot, mac = token.strip().partition(".")
    if not dot or not payload or not mac:
        return None
    try:
        email = _unb64(payload).decode("utf-8", "strict")
        given = _unb64(mac)
    except (binascii.Error, ValueError):  # UnicodeDecodeError is a ValueError
        return None
    if len(given) != _MAC_BYTES:
        return None
    if not hmac.compare_digest(given, _mac(secret, scope, email)):
        return None
    return email
