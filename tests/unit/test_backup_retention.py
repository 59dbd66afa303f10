"""Retention decisions (pure) and the backup config section."""

import pytest

from chimera_ops.config import ConfigError, parse_config
from chimera_ops.ops.backup.retention import SetFacts, prune_plan

DAY = 86400.0
NOW = 100 * DAY


def ids(deletions):
    return sorted(d.id for d in deletions)


def test_keeps_the_newest_n_and_nothing_older_than_max_age():
    sets = [SetFacts(f"s{i}", NOW - i * DAY) for i in range(10)]
    assert ids(prune_plan(sets, keep=7, max_age=30 * DAY, now=NOW)) == ["s7", "s8", "s9"]
    assert ids(prune_plan(sets, keep=10, max_age=3.5 * DAY, now=NOW)) == [
        "s4",
        "s5",
        "s6",
        "s7",
        "s8",
        "s9",
    ]


def test_the_newest_verified_set_is_kept_even_when_older_than_max_age():
    sets = [
        SetFacts("new", NOW - 1 * DAY),
        SetFacts("old-good", NOW - 40 * DAY, verified_ok=True),
        SetFacts("older-good", NOW - 50 * DAY, verified_ok=True),
    ]
    assert ids(prune_plan(sets, keep=1, max_age=30 * DAY, now=NOW)) == ["older-good"]


def test_the_newest_set_and_sets_being_read_survive():
    sets = [SetFacts("only", NOW - 90 * DAY), SetFacts("read", NOW - 95 * DAY, being_read=True)]
    assert prune_plan(sets, keep=1, max_age=30 * DAY, now=NOW) == []


def test_backup_section_is_validated_with_lines(tmp_path):
    text = "backup:\n  postgres:\n    databases: [chimera]\n"
    with pytest.raises(ConfigError) as info:
        parse_config(text, "c.yaml")
    assert "c.yaml:2: backup.postgres" in str(info.value.issues[0]) and "dsn" in str(
        info.value.issues[0]
    )
    with pytest.raises(ConfigError) as info:
        parse_config("backup:\n  dir: ./b\n", "c.yaml")
    assert "postgres" in str(info.value.issues[0])
    cfg = parse_config(
        "backup:\n  dir: ./b\n  redis: redis://127.0.0.1:6379/0\n  retention: {max_age: 30d}\n",
        "c.yaml",
        base_dir=tmp_path,
    )
    assert cfg.backup is not None and cfg.backup.dir == (tmp_path / "b").resolve()
    assert cfg.backup.retention.max_age == 30 * DAY
