"""Mask credentials in DSNs, URLs and free text before they reach a reason, a log or a bundle.

The one place for redaction rules. Each rule in `RULES` has a name (the support bundle counts
what each rule removed), a pattern, and trigger words: a text (or a bytes chunk) in which none of
a rule's triggers occurs (case-insensitively) is not searched by that rule at all, which keeps
redaction of gigabytes of ordinary log lines fast. The rules cover URL userinfo
(`scheme://user:secret@host` -> `scheme://user:***@host`), secret-named keys in `key=value`,
`key: value` (YAML, headers), env and quoted (JSON, Python repr) forms, `Authorization:
Bearer|Basic`, exchange signature headers (`ACCESS-SIGN`, `X-BAPI-SIGN`) and `signature=` query
parameters, JWTs, PEM private keys and cloud access keys.

Literal secrets known to the caller (a password read from an env var) are removed too, wherever
they occur verbatim: `redact_text(text, secrets)` for one-off strings, `Redactor` for many values
over much data (an Aho-Corasick automaton, `ahocorasick_rs`, when installed; a trie-shaped regex
otherwise). Prices, order ids, timestamps and ordinary numbers match no rule.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

MASK = "***"
MIN_LITERAL = 4  # shorter known values would mask ordinary words; the patterns still apply
KNOWN_VALUE = "known_value"
_PEM_MASK = f"-----BEGIN PRIVATE KEY-----{MASK}-----END PRIVATE KEY-----"

# A key naming a secret. `secret` may carry a suffix (`EXCHANGE_SECRET_B64`); `sign` only as the
# last part of a header-like key (`ACCESS-SIGN`, `api_sign`).
_SECRET_KEYS = (
    r"password|passwd|pwd|pass|secret(?:[_\-][A-Za-z0-9]+)*|token|api[_-]?key|apikey|"
    r"access[_-]?key|private[_-]?key|passphrase|auth|authorization|signature|credentials?|"
    r"[_\-]sign"
)
_KEY = rf"\b[A-Za-z0-9_\-]*?(?:{_SECRET_KEYS})\b"
_KEY_TRIGGERS = ("pass", "pwd", "secret", "token", "key", "auth", "sign", "credential")
_UNQUOTED = r"[^\s,;&'\"]+"
_QUOTED = r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\""
_SCHEMES = ("Bearer", "Basic", "Token")
_NOT_SECRET = {"pwd", "oldpwd"}  # the shell's working directory, not a password


def _keep_masked(value: str) -> bool:
    return value in (MASK, f"'{MASK}'", f'"{MASK}"')


def _mask_url(m: re.Match[str]) -> str | None:
    if m.group("secret") == MASK:
        return None
    return f"{m.group('prefix')}{MASK}{m.group('at')}"


def _mask_scheme(m: re.Match[str]) -> str | None:
    return None if m.group("cred") == MASK else f"{m.group('scheme')} {MASK}"


def _mask_key_value(m: re.Match[str]) -> str | None:
    value = m.group("value")
    if m.group("key").lower() in _NOT_SECRET:
        return None
    if value in _SCHEMES or _keep_masked(value):
        return None  # a scheme's credential is the auth rule's; a mask stays a mask
    masked = f"{value[0]}{MASK}{value[0]}" if value[:1] in ("'", '"') else MASK
    return f"{m.group('key')}{m.group('sep')}{masked}"


def _mask_argv_option(m: re.Match[str]) -> str | None:
    if _keep_masked(m.group("value")):
        return None
    return f"{m.group('key')}{m.group('sep')}{MASK}"


def _mask_quoted(m: re.Match[str]) -> str | None:
    if m.group("value") == MASK:
        return None
    return f"{m.group('head')}{m.group('vq')}{MASK}{m.group('vq')}"


def _mask_group(group: str) -> Callable[[re.Match[str]], str | None]:
    def mask(m: re.Match[str]) -> str | None:
        if m.group(group) == MASK:
            return None
        start, end = m.span(group)
        whole = m.group(0)
        base = m.start(0)
        return whole[: start - base] + MASK + whole[end - base :]

    return mask


def _mask_all(m: re.Match[str]) -> str | None:
    return MASK


@dataclass(frozen=True)
class Rule:
    """One redaction rule: `mask` returns the replacement, or None to leave a match alone."""

    name: str
    pattern: str
    triggers: tuple[str, ...]
    mask: Callable[[re.Match[str]], str | None]
    flags: int = 0
    description: str = ""


RULES: tuple[Rule, ...] = (
    Rule(
        "pem_private_key",
        r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY-----(?:.*?-----END[A-Z0-9 ]*PRIVATE KEY-----|.*\Z)",
        ("-----begin",),
        lambda m: None if m.group(0) == _PEM_MASK else _PEM_MASK,
        re.DOTALL,
        "PEM private key blocks",
    ),
    Rule(
        "url_credentials",
        r"(?P<prefix>\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^:/@\s]*:)(?P<secret>[^@\s]*)(?P<at>@)",
        ("@",),
        _mask_url,
        0,
        "the password in scheme://user:password@host (DSNs, broker URLs)",
    ),
    Rule(
        "auth_header",
        r"\b(?P<scheme>Bearer|Basic|Token)\s+(?P<cred>[A-Za-z0-9._~+/=\-]+)",
        ("bearer", "basic", "token"),
        _mask_scheme,
        0,
        "Authorization: Bearer|Basic|Token credentials",
    ),
    Rule(
        "jwt",
        r"\beyJ[A-Za-z0-9_\-]{4,}\.eyJ[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]{4,}",
        ("eyj",),
        _mask_all,
        0,
        "JSON Web Tokens",
    ),
    Rule(
        "cloud_access_key",
        r"\b(?:(?:AKIA|ASIA)[0-9A-Z]{16}|AIza[0-9A-Za-z_\-]{35}|gh[pousr]_[A-Za-z0-9]{30,}|"
        r"xox[abprs]-[A-Za-z0-9\-]{10,})\b",
        ("akia", "asia", "aiza", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "xox"),
        _mask_all,
        0,
        "AWS, Google, GitHub and Slack access keys",
    ),
    Rule(
        "signature_param",
        r"[?&;](?:signature|sign|sig)=(?P<value>[^&\s\"']+)",
        ("sig",),
        _mask_group("value"),
        re.IGNORECASE,
        "signature=/sign=/sig= query parameters (HMAC request signatures)",
    ),
    Rule(
        "quoted_secret_key",
        rf"(?P<head>(?P<q>[\"'])(?P<key>{_KEY})(?P=q)\s*:\s*)(?P<vq>[\"'])"
        r"(?P<value>(?:(?!(?P=vq))[^\\]|\\.)*)(?P=vq)",
        _KEY_TRIGGERS,
        _mask_quoted,
        re.IGNORECASE,
        "secret-named keys in JSON and Python repr ('api_key': '...', \"ACCESS-SIGN\": ...)",
    ),
    Rule(
        "secret_argv_option",
        rf"(?P<key>(?<![\w\-])--?[A-Za-z0-9_\-]*?(?:{_SECRET_KEYS}))(?P<sep>[ \t]+)"
        rf"(?P<value>(?!-){_QUOTED}|(?!-){_UNQUOTED})",
        _KEY_TRIGGERS,
        _mask_argv_option,
        re.IGNORECASE,
        "the value after a secret-named command-line option (`--api-secret X`, `-password X`)",
    ),
    Rule(
        "secret_key_value",
        rf"(?P<key>{_KEY})(?P<sep>\s*[=:]\s*)(?P<value>{_QUOTED}|{_UNQUOTED})",
        _KEY_TRIGGERS,
        _mask_key_value,
        re.IGNORECASE,
        "secret-named keys in key=value, key: value (YAML, headers) and env form "
        "(*_API_KEY, *_SECRET*, *_PASSPHRASE, password, token, ...)",
    ),
)
"""Applied in this order, after known values; each rule sees what the earlier ones left.
`secret_key_value` stays last: `is_secret_name` uses it."""

RULE_NAMES: tuple[str, ...] = (KNOWN_VALUE, *(rule.name for rule in RULES))


def _substitute(
    pattern: re.Pattern[str], mask: Callable[[re.Match[str]], str | None], text: str
) -> tuple[str, int]:
    count = 0

    def replace(m: re.Match[str]) -> str:
        nonlocal count
        out = mask(m)
        if out is None:
            return m.group(0)
        count += 1
        return out

    return pattern.sub(replace, text), count


_COMPILED = tuple((rule, re.compile(rule.pattern, rule.flags)) for rule in RULES)


def apply_rules(text: str, counts: Counter[str] | None = None) -> str:
    """Every pattern rule over `text` (no known values); counts per rule added to `counts`."""
    lowered = text.lower()
    for rule, pattern in _COMPILED:
        if not any(t in lowered for t in rule.triggers):
            continue
        text, n = _substitute(pattern, rule.mask, text)
        if n and counts is not None:
            counts[rule.name] += n
    return text


def is_secret_name(name: str) -> bool:
    """True for a variable or key name whose value the key/value rule masks (`*_API_KEY`,
    `*_SECRET*`, `*_PASSPHRASE`, `PASSWORD`, `..._TOKEN`, `Authorization`, ...)."""
    if name.lower() in _NOT_SECRET:
        return False
    return _COMPILED[-1][1].fullmatch(f"{name}=x") is not None


def redact_text(text: str, secrets: Iterable[str | None] = ()) -> str:
    """Return `text` with the given literals and everything the rules recognise masked."""
    for secret in secrets:
        # Very short literals would mask ordinary words; they are still caught by the patterns.
        if secret and len(secret) >= 3:
            text = text.replace(secret, MASK)
    return apply_rules(text)


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


class Redactor:
    """Known values plus every rule, over many texts, with a count per rule (never values).

    `redact(text)` takes whole lines (the rules are line-local, except PEM blocks, which the
    caller keeps whole: see `ops/bundle/scrub.py`). Known values are found with one
    multi-pattern automaton, so thousands of values cost about what one does; the pattern rules
    run only on the lines where one of their trigger words occurs (one automaton pass finds
    them), so a chunk of ordinary log lines costs two scans, not one regex per rule.
    """

    def __init__(self, known_values: Iterable[str] = ()) -> None:
        values: set[bytes] = set()
        self.too_short = 0
        for value in known_values:
            for part in value.splitlines():  # values are matched line by line
                part = part.strip()
                if len(part) >= MIN_LITERAL:
                    values.add(part.encode(errors="surrogateescape"))
                elif part:
                    self.too_short += 1
        self.known_values = len(values)
        self.counts: Counter[str] = Counter()
        self._find_values = _finder(sorted(values, key=len, reverse=True), overlapping=True)
        triggers = sorted({t.encode() for rule in RULES for t in rule.triggers})
        self._find_triggers = _finder(triggers, overlapping=False)

    def redact(self, text: str) -> str:
        """`text` with known values and every rule's matches masked; counts updated."""
        data = text.encode(errors="surrogateescape")
        return self.redact_bytes(data).decode(errors="surrogateescape")

    def redact_bytes(self, data: bytes) -> bytes:
        """`redact` over bytes (UTF-8 or not), the bulk path of the support bundle."""
        if self._find_values is not None:
            spans = _merge(self._find_values(data))
            if spans:
                self.counts[KNOWN_VALUE] += len(spans)
                data = _splice(data, spans, lambda _: _BMASK)
        if b"-----BEGIN" in data:  # multi-line: over the whole text, before the line rules
            text, n = _substitute(_COMPILED[0][1], RULES[0].mask, _decode(data))
            self.counts[RULES[0].name] += n
            data = text.encode(errors="surrogateescape")
        assert self._find_triggers is not None
        hits = self._find_triggers(data.lower())
        if not hits:
            return data
        lines = _merge(_line_span(data, start) for start, _ in hits)
        return _splice(
            data,
            lines,
            lambda span: apply_rules(_decode(data[span[0] : span[1]]), self.counts).encode(
                errors="surrogateescape"
            ),
        )

    def summary(self) -> dict[str, int]:
        """Counts for every rule (zeros included), in rule order."""
        return {name: self.counts.get(name, 0) for name in RULE_NAMES}


_BMASK = MASK.encode()


def _decode(data: bytes) -> str:
    return data.decode(errors="surrogateescape")


def _line_span(data: bytes, pos: int) -> tuple[int, int]:
    end = data.find(b"\n", pos)
    return data.rfind(b"\n", 0, pos) + 1, len(data) if end < 0 else end


def _splice(
    text: bytes, spans: list[tuple[int, int]], replace: Callable[[tuple[int, int]], bytes]
) -> bytes:
    pieces, last = [], 0
    for span in spans:
        pieces += [text[last : span[0]], replace(span)]
        last = span[1]
    pieces.append(text[last:])
    return b"".join(pieces)


def _merge(spans: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def _finder(
    words: list[bytes], overlapping: bool
) -> Callable[[bytes], list[tuple[int, int]]] | None:
    """A function returning the (start, end) of every occurrence of any of `words`."""
    if not words:
        return None
    try:
        import ahocorasick_rs
    except ImportError:  # a trie-shaped regex: slower, and overlaps are not reported
        pattern = re.compile(_trie_regex(words))
        return lambda data: [m.span() for m in pattern.finditer(data)]
    matchkind = ahocorasick_rs.MatchKind
    kind = matchkind.Standard if overlapping else matchkind.LeftmostLongest
    automaton = ahocorasick_rs.BytesAhoCorasick(words, matchkind=kind)

    def find(data: bytes) -> list[tuple[int, int]]:
        found = automaton.find_matches_as_indexes(data, overlapping=overlapping)
        return [(start, end) for _, start, end in found]

    return find


def _trie_regex(words: list[bytes]) -> bytes:
    trie: dict[int, Any] = {}
    for word in words:
        node = trie
        for byte in word:
            node = node.setdefault(byte, {})
        node[-1] = {}

    def build(node: dict[int, Any]) -> bytes:
        ends = -1 in node
        branches = [
            re.escape(bytes([b])) + build(child) for b, child in sorted(node.items()) if b >= 0
        ]
        if not branches:
            return b""
        body = branches[0] if len(branches) == 1 else b"(?:" + b"|".join(branches) + b")"
        return b"(?:" + body + b")?" if ends else body

    return build(trie)
