"""The planted-secrets corpus: one value per rule and form, each unique, plus lines that must
come out of the bundle exactly as they went in (prices, sizes, order ids, timestamps)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field


def _v(tag: str) -> str:
    return f"{tag}{secrets.token_hex(6)}"


@dataclass
class Corpus:
    """Secrets planted in the engine's env, the config, the CLI's env and log lines."""

    api_key: str = field(default_factory=lambda: _v("bgkey"))
    api_secret: str = field(default_factory=lambda: _v("bgsec"))
    passphrase: str = field(default_factory=lambda: _v("bgpass"))
    pg_password: str = field(default_factory=lambda: _v("pgpw"))
    control_token: str = field(default_factory=lambda: _v("ctltok"))
    cli_secret: str = field(default_factory=lambda: _v("clisec"))
    backup_password: str = field(default_factory=lambda: _v("bkpw"))
    # pattern-only secrets: they appear in log lines and nowhere chimera-ops could know them
    by_rule: dict[str, list[str]] = field(default_factory=dict)
    lines_out: list[str] = field(default_factory=list)
    lines_err: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        sign, sign2, okx = _v("sig"), _v("bapisig"), _v("okpp")
        json_key, query_sig = _v("jsonkey"), _v("qsig")
        jwt = f"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ0cmFkZXIifQ.{_v('jwtsig')}"
        bearer = _v("bearer")
        basic = _v("basic")
        dsn_pw = _v("tbpw")
        pem = _v("pembody")
        cloud = "AKIA" + secrets.token_hex(8).upper()
        env_form = _v("b64sec")
        self.by_rule = {
            "quoted_secret_key": [sign, okx],
            "signature_param": [query_sig],
            "secret_key_value": [sign2, env_form],
            "auth_header": [bearer, basic],
            "jwt": [jwt],
            "url_credentials": [dsn_pw],
            "pem_private_key": [pem],
            "cloud_access_key": [cloud],
        }
        self.lines_out = [
            "2024-05-01 12:00:00,123 INFO engine.orders order_id=ord-000123 symbol=BTCUSDT "
            "side=buy price=64123.50 size=0.0150 ts=1700000000123 status=filled",
            f"exchange: connecting with key {self.api_key} (secret {self.api_secret})",
            f"POST /api/v2/mix/order headers={{'ACCESS-KEY': 'public-ok', 'ACCESS-SIGN': '{sign}', "
            f"'ACCESS-TIMESTAMP': '1700000000000', 'ACCESS-PASSPHRASE': '{okx}'}}",
            f'{{"level": "info", "api_key": "{json_key}", "price": 64123.5, "qty": 3}}',
            f"GET /api/v3/order?symbol=BTCUSDT&timestamp=1700000000000&signature={query_sig}",
            f"X-BAPI-SIGN: {sign2}",
            f"Authorization: Bearer {bearer}",
            f"upstream said Authorization: Basic {basic}",
            f"ws session cookie {jwt}",
            f"aws credentials {cloud} loaded",
            f"EXCHANGE_SECRET_B64={env_form}",
            f"passphrase in use: {self.passphrase}",
        ]
        self.by_rule["quoted_secret_key"].append(json_key)
        self.lines_err = [
            "Traceback (most recent call last):",
            '  File "/app/engine/db.py", line 42, in connect',
            "    engine = create_engine(url)",
            "sqlalchemy.exc.OperationalError: (psycopg.OperationalError) connection to "
            f"postgresql://trader:{dsn_pw}@db:5432/chimera failed: timeout expired",
            "-----BEGIN RSA PRIVATE KEY-----",
            f"MIIEowIBAAKCAQEA{pem}",
            "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW",
            "-----END RSA PRIVATE KEY-----",
        ]

    @property
    def known(self) -> list[str]:
        """The values chimera-ops can see (env, config, CLI env)."""
        return [
            self.api_key,
            self.api_secret,
            self.passphrase,
            self.pg_password,
            self.control_token,
            self.cli_secret,
            self.backup_password,
        ]

    @property
    def everything(self) -> list[str]:
        """Every planted secret."""
        return self.known + [v for values in self.by_rule.values() for v in values]

    @property
    def engine_env(self) -> dict[str, str]:
        """The engine's `env:` in the config."""
        return {
            "BITGET_API_KEY": self.api_key,
            "BITGET_API_SECRET": self.api_secret,
            "BITGET_PASSPHRASE": self.passphrase,
            "CHIMERA_PG_DSN": f"postgresql://postgres:{self.pg_password}@127.0.0.1:5432/postgres",
            "CHIMERA_CONTROL_TOKEN": self.control_token,
        }


ENGINE = """
import json, sys, time
lines = json.load(open(sys.argv[1]))
for line in lines["out"]:
    print(line, flush=True)
for line in lines["err"]:
    print(line, file=sys.stderr, flush=True)
time.sleep(3600)
"""
