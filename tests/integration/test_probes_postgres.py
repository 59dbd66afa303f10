"""The postgres probe against a private PostgreSQL that is stopped and started again."""

import asyncio

from chimera_ops.probes import build_probe
from chimera_ops.probes.spec import ProbeConfig
from tests.services import private_postgres

SECRET = "Sup3rS3cretPw"


def test_postgres_probe_stopped_then_started():
    with private_postgres() as pg:
        dsn = f"postgresql://postgres:{SECRET}@127.0.0.1:{pg.port}/postgres"
        env = {"ENGINE_DSN": dsn}
        probe = build_probe(
            ProbeConfig.model_validate({"postgres": {"dsn_env": "ENGINE_DSN"}, "timeout": "5s"}),
            env=env,
        )
        assert asyncio.run(probe.run()).ok
        pg.stop()
        result = asyncio.run(probe.run())
        assert not result.ok
        assert f"127.0.0.1:{pg.port}" in result.reason
        assert SECRET not in result.reason and SECRET not in str(result.to_dict())
        pg.start()
        result = asyncio.run(probe.run())
        assert result.ok, result.reason


def test_postgres_probe_missing_env_and_bad_dsn_never_leak():
    probe = build_probe(ProbeConfig.model_validate({"postgres": {"dsn_env": "NOPE_DSN"}}), env={})
    result = asyncio.run(probe.run())
    assert not result.ok and "NOPE_DSN" in result.reason
    bad = f"host=127.0.0.1 password={SECRET} port=notaport"
    result = asyncio.run(build_probe(ProbeConfig.model_validate({"postgres": bad})).run())
    assert not result.ok and SECRET not in result.reason
