"""`collect-logs --self-test`: canary secrets of every rule through the real bundle writer.

A scratch bundle is made with the same `Redactor`, scrubber and archive writer as a real one:
a log whose lines carry one canary per rule (fed a few bytes at a time, so every canary is
split across reads), a config, an environment and a JSON part. The archive is then opened and
every member's raw bytes (gunzipped too, for a nested archive) searched for every canary. It
passes when no canary survives and every rule removed at least one value.
"""

from __future__ import annotations

import gzip
import secrets
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from chimera_ops.ops.bundle.secrets import env_text, known_values
from chimera_ops.ops.bundle.writer import BundleWriter
from chimera_ops.redact import RULE_NAMES, Redactor

FEED = 7  # bytes per read: every canary straddles reads


def canaries() -> dict[str, tuple[str, str]]:
    """rule -> (canary value, the text that carries it)."""

    def c() -> str:
        return "canary" + secrets.token_hex(8)

    upper = secrets.token_hex(8).upper()
    values = {name: c() for name in RULE_NAMES}
    values["cloud_access_key"] = f"AKIA{upper}"
    values["jwt"] = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJjYW5hcnkifQ." + c()
    pem_body = c()
    return {
        "known_value": (values["known_value"], f"login rejected for {values['known_value']}"),
        "pem_private_key": (
            pem_body,
            f"-----BEGIN RSA PRIVATE KEY-----\nMIIE{pem_body}\n-----END RSA PRIVATE KEY-----",
        ),
        "url_credentials": (
            values["url_credentials"],
            f"OperationalError: postgresql://trader:{values['url_credentials']}@db:5432/chimera",
        ),
        "auth_header": (values["auth_header"], f"Authorization: Bearer {values['auth_header']}"),
        "jwt": (values["jwt"], f"session={values['jwt']}"),
        "cloud_access_key": (values["cloud_access_key"], f"aws id {values['cloud_access_key']}"),
        "signature_param": (
            values["signature_param"],
            f"GET /api/v3/order?symbol=BTCUSDT&signature={values['signature_param']}",
        ),
        "quoted_secret_key": (
            values["quoted_secret_key"],
            f"headers={{'ACCESS-SIGN': '{values['quoted_secret_key']}'}}",
        ),
        "secret_argv_option": (
            values["secret_argv_option"],
            f"exchange-cli --api-secret {values['secret_argv_option']} --symbol BTCUSDT",
        ),
        "secret_key_value": (
            values["secret_key_value"],
            f"BITGET_PASSPHRASE={values['secret_key_value']}",
        ),
    }


def _search(bundle: Path, planted: dict[str, str]) -> tuple[dict[str, list[str]], int]:
    found: dict[str, list[str]] = {rule: [] for rule in planted}
    files = 0
    with tarfile.open(bundle, "r:gz") as tar:
        for member in tar.getmembers():
            handle = tar.extractfile(member)
            if handle is None:
                continue
            files += 1
            raw = handle.read()
            blobs = [raw]
            if raw[:2] == b"\x1f\x8b":
                blobs.append(gzip.decompress(raw))
            for rule, value in planted.items():
                if any(value.encode() in blob for blob in blobs):
                    found[rule].append(member.name)
    return found, files


def run_self_test() -> dict[str, Any]:
    """The checks, one per rule; `ok` when every canary is gone and every rule fired."""
    planted = canaries()
    env = {"BITGET_API_KEY": planted["known_value"][0], "PATH": "/usr/bin"}
    redactor = Redactor(known_values({}, [env]))
    stamp = "2024-05-01T12:00:00.000Z stderr "
    log = "".join(f"{stamp}{line}\n" for _, text in planted.values() for line in text.splitlines())
    with tempfile.TemporaryDirectory(prefix="chimera-selftest-") as tmp:
        path = Path(tmp) / "selftest.tar.gz"
        writer = BundleWriter(path, "selftest", redactor)
        data = log.encode()
        writer.add_stream(
            "logs/canary.log", (data[i : i + FEED] for i in range(0, len(data), FEED)), "canaries"
        )
        writer.add_text("env/canary.env", env_text(env), "canaries")
        writer.add_text("config/canary.yaml", "\n".join(t for _, t in planted.values()), "canaries")
        nested = gzip.compress(log.encode())
        writer.add_text("logs/canary.log.gz", gzip.decompress(nested), "canaries")
        writer.close(lambda: ("manifest.json", str(redactor.summary())))
        found, files = _search(path, {rule: value for rule, (value, _) in planted.items()})
    counts = redactor.summary()
    checks = []
    for rule in planted:
        leaked = found[rule]
        ok = not leaked and counts.get(rule, 0) > 0
        detail = (
            f"found in {', '.join(leaked)}"
            if leaked
            else f"removed ({counts.get(rule, 0)} values)"
            if ok
            else "the rule removed nothing"
        )
        checks.append({"rule": rule, "ok": ok, "detail": detail})
    return {
        "ok": all(c["ok"] for c in checks),
        "checks": checks,
        "canaries": len(planted),
        "files": files,
        "counts": counts,
    }
