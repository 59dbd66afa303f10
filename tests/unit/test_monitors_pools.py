from chimera_ops.monitors.pools import (
    PgPoolSample,
    RedisPoolSample,
    evaluate_app,
    evaluate_postgres,
    evaluate_redis,
    parse_app_pools,
)
from chimera_ops.monitors.spec import AppPoolConfig, PostgresPoolConfig, RedisPoolConfig

PG = PostgresPoolConfig(dsn="postgresql://x@h/db", idle_in_transaction=60, long_query=300)


def by_check(verdicts):
    return {check: (sev, msg, values) for check, sev, msg, values in verdicts}


def test_postgres_usage_grades():
    for active, expected in ((10, "ok"), (82, "warning"), (96, "critical")):
        sample = PgPoolSample(100, 3, {"active": active}, [], [])
        assert by_check(evaluate_postgres(sample, PG))["postgres"][0] == expected


def test_postgres_idle_in_transaction_and_long_queries():
    sample = PgPoolSample(
        100,
        3,
        {"idle in transaction": 2, "active": 1},
        [(11, 120.0), (12, 5.0)],
        [(13, 900.0, "SELECT pg_sleep(1000)")],
    )
    v = by_check(evaluate_postgres(sample, PG))
    assert v["postgres:idle_in_transaction"][0] == "warning"
    assert "11" in v["postgres:idle_in_transaction"][1]
    assert v["postgres:idle_in_transaction"][2]["stale"] == 1
    assert v["postgres:long_query"][0] == "warning" and "pid 13" in v["postgres:long_query"][1]
    assert v["postgres"][2]["connections_idle_in_transaction"] == 2


def test_redis_grades_and_rejected_growth():
    cfg = RedisPoolConfig(url="redis://h")
    prev = RedisPoolSample(5, 10, 0, 0)
    now = RedisPoolSample(10, 10, 4, 1)
    v = by_check(evaluate_redis(now, prev, cfg))
    assert v["redis"][0] == "critical" and v["redis"][2]["ratio"] == 1.0
    assert v["redis:rejected"][0] == "critical" and v["redis:rejected"][2]["rejected_delta"] == 4
    assert v["redis:blocked"][0] == "warning"
    assert by_check(evaluate_redis(prev, None, cfg))["redis"][0] == "ok"


def test_redis_unknown_maxclients_uses_config():
    sample = RedisPoolSample(9, None, 0, 0)
    assert (
        by_check(evaluate_redis(sample, None, RedisPoolConfig(url="redis://h")))["redis"][0] == "ok"
    )
    cfg = RedisPoolConfig(url="redis://h", maxclients=10)
    assert by_check(evaluate_redis(sample, None, cfg))["redis"][0] == "warning"


METRICS = """\
# TYPE paper_pool_size gauge
paper_pool_size{pool="db"} 10
paper_pool_in_use{pool="db"} 10
paper_pool_waiting{pool="db"} 3
paper_pool_max{pool="db"} 10
paper_pool_size{pool="redis"} 20
paper_pool_in_use{pool="redis"} 2
paper_pool_waiting{pool="redis"} 0
paper_pool_max{pool="redis"} 20
other_metric 1
"""


def test_app_pools_parsed_and_graded_with_overrides():
    pools = parse_app_pools(METRICS)
    assert pools["db"].in_use == 10 and pools["redis"].max == 20
    cfg = AppPoolConfig.model_validate(
        {"metrics_url": "http://x/metrics", "pools": {"redis": {"warn": 0.05, "critical": 0.5}}}
    )
    v = by_check(evaluate_app(pools, cfg))
    assert v["app:db"][0] == "critical" and v["app:db"][2]["waiting"] == 3
    assert v["app:redis"][0] == "warning"
