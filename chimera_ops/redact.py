"""Mask credentials in DSNs, URLs and free text before they reach a reason, a log or a bundle.

Two shapes of secret are covered: URL userinfo (`scheme://user:secret@host` becomes
`scheme://user:***@host`) and key/value pairs whose key names a secret (`password=...`,
`token: ...`, libpq `password='a b'`). Literal secrets known to the caller (a password read from
an env var) can be passed too, so an error message that echoes one verbatim is still masked.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MASK = "***"

# scheme://user:password@host -- the password part may hold anything but '@' and whitespace;
# the user part anything but ':', '/', '@' and whitespace.
_URL_CREDENTIALS = re.compile(
    r"(?P<prefix>\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^:/@\s]*:)(?P<secret>[^@\s]*)(?P<at>@)"
)

# A key naming a secret, then '=' or ':', then a quoted or bare value.
_SECRET_KEYS = (
    r"password|passwd|pwd|pass|secret|token|api[_-]?key|apikey|access[_-]?key|"
    r"secret[_-]?key|private[_-]?key|passphrase|auth|authorization"
)
_KEY_VALUE = re.compile(
    rf"(?P<key>\b(?:[A-Za-z0-9_\-]*?(?:{_SECRET_KEYS}))\b)(?P<sep>\s*[=:]\s*)"
    r"(?P<value>'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|[^\s,;&'\"]+)",
    re.IGNORECASE,
)


# HTTP auth schemes: the credential follows the scheme word.
_AUTH_SCHEME = re.compile(r"\b(?P<scheme>Bearer|Basic|Token)\s+(?P<cred>[A-Za-z0-9._~+/=\-]+)")


def _mask_value(match: re.Match[str]) -> str:
    value = match.group("value")
    if value in ("Bearer", "Basic", "Token"):
        return match.group(0)  # the credential after the scheme is masked by _AUTH_SCHEME
    if value in (MASK, f"'{MASK}'", f'"{MASK}"'):
        return match.group(0)
    masked = f"{value[0]}{MASK}{value[0]}" if value[:1] in ("'", '"') else MASK
    return f"{match.group('key')}{match.group('sep')}{masked}"


def redact_text(text: str, secrets: Iterable[str | None] = ()) -> str:
    """Return `text` with URL credentials, secret key/values and the given literals masked."""
    for secret in secrets:
        # Very short literals would mask ordinary words; they are still caught by the patterns.
        if secret and len(secret) >= 3:
            text = text.replace(secret, MASK)
    text = _URL_CREDENTIALS.sub(lambda m: f"{m.group('prefix')}{MASK}{m.group('at')}", text)
    text = _AUTH_SCHEME.sub(
        lambda m: m.group(0) if m.group("cred") == MASK else f"{m.group('scheme')} {MASK}", text
    )
    return _KEY_VALUE.sub(_mask_value, text)


def redact_dsn(dsn: str) -> str:
    """Mask the password of a DSN, URL form (`postgresql://u:p@h/db`) or libpq key/value form."""
    return redact_text(dsn)


_KV_PASSWORD = re.compile(r"(?:^|\s)password\s*=\s*(?P<value>'(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def dsn_password(dsn: str) -> str | None:
    """The password inside a DSN (URL or libpq key/value form), so callers can also mask it
    where an error message echoes it verbatim."""
    from urllib.parse import unquote, urlsplit

    if "://" in dsn:
        try:
            password = urlsplit(dsn).password
        except ValueError:
            return None
        return unquote(password) if password else None
    match = _KV_PASSWORD.search(dsn)
    if not match:
        return None
    value = match.group("value")
    return value[1:-1].replace("\\'", "'") if value.startswith("'") else value
