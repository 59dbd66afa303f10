"""The pure decisions behind typed runbook variables and trusted runbook files."""

from __future__ import annotations

import stat

import pytest

from chimera_ops.ops.runbook.trust import Owned, judge
from chimera_ops.ops.runbook.types import Scope, builtin_type, check_typed

SCOPE = Scope(frozenset({"engine", "md-feed"}), ("/srv/chimera/var", "/srv/backups"))


@pytest.mark.parametrize(
    ("kind", "good", "bad"),
    [
        ("port", ["1", "8701", "65535"], [",,55432", "0", "65536", "08701", "+1", "1 2", ""]),
        ("pid", ["2", "4242", "4194304"], ["1", "0", "4194305", "-1", "42x", "4242,1"]),
        ("identifier", ["chimera", "_x1", "a" * 63], ["1db", "dbname=x", "a-b", "a" * 64, ""]),
        ("component", ["engine", "md-feed"], ["nope", "Engine", "x; rm -rf /", ""]),
        ("path", ["/srv/chimera/var", "/srv/backups/x/../y"], ["/srv/chimera", "/etc", "var"]),
        ("host", ["127.0.0.1", "::1", "db-1.local"], ["a..b", "h=1", "a b", "-h", ""]),
        ("url", ["http://127.0.0.1:8701/health"], ["file:///etc/passwd", "http://", "http://a b"]),
        ("backup-set", ["latest", "20261202T013000Z-3fa2c1", "2026"], ["../x", "last", ""]),
        ("text", ["anything; at all"], []),
    ],
)
def test_types_admit_only_plain_values(kind: str, good: list[str], bad: list[str]) -> None:
    assert [v for v in good if check_typed(kind, v, SCOPE) is not None] == []
    assert [v for v in bad if check_typed(kind, v, SCOPE) is None] == []


def test_dir_type_refuses_system_dirs_and_missing_ones(tmp_path: object) -> None:
    assert check_typed("dir", str(tmp_path), SCOPE) is None
    assert "root directory" in str(check_typed("dir", "/", SCOPE))
    assert "inside /usr, a system directory" in str(check_typed("dir", "/usr/lib", SCOPE))
    assert "system directory" in str(check_typed("dir", "/proc", SCOPE))
    assert check_typed("dir", "/root", SCOPE) is None  # a bundle may go to root's home
    assert "no such directory" in str(check_typed("dir", f"{tmp_path}/missing", SCOPE))


def test_config_names_have_types() -> None:
    assert builtin_type("state_dir") == "path" and builtin_type("db.port") == "port"
    assert builtin_type("engine.health_url") == "url" and builtin_type("component.log") == "path"
    assert builtin_type("port") is None and builtin_type("db.name") is None


FILE = stat.S_IFREG | 0o644
DIR = stat.S_IFDIR | 0o755


def test_judge_trusts_root_or_me_and_nothing_others_can_write() -> None:
    page = Owned("/r/p.md", 0, FILE)
    dirs = [Owned("/r", 0, DIR), Owned("/", 0, DIR)]
    assert judge(page, dirs, 0) is None
    assert judge(Owned("/r/p.md", 1000, FILE), [Owned("/r", 1000, DIR), *dirs[1:]], 1000) is None
    assert "owned by uid 4321" in str(judge(Owned("/r/p.md", 4321, FILE), dirs, 0))
    assert "mode 0666" in str(judge(Owned("/r/p.md", 0, stat.S_IFREG | 0o666), dirs, 0))
    assert "not a regular file" in str(judge(Owned("/r/p.md", 0, stat.S_IFLNK | 0o777), dirs, 0))
    open_dir = [Owned("/r", 0, stat.S_IFDIR | 0o777), dirs[1]]
    assert "its directory /r is writable" in str(judge(page, open_dir, 0))
    sticky_own = [Owned("/r", 0, stat.S_IFDIR | 0o1777), dirs[1]]
    assert judge(page, sticky_own, 0) is not None  # others could add pages beside it
    tmp_above = [dirs[0], Owned("/tmp", 0, stat.S_IFDIR | 0o1777), dirs[1]]
    assert judge(page, tmp_above, 0) is None  # /tmp above: nobody can rename our dir
    open_above = [dirs[0], Owned("/x", 0, stat.S_IFDIR | 0o777), dirs[1]]
    assert "the directory /x is writable" in str(judge(page, open_above, 0))
    group_above = [dirs[0], Owned("/x", 0, stat.S_IFDIR | 0o775), dirs[1]]
    assert "writable by group" in str(judge(page, group_above, 0))
    # Another user's file is refused even to root; a user's own file is not root's to trust
    # for another user either.
    assert "not by root or you" in str(judge(Owned("/r/p.md", 0, FILE), [Owned("/r", 7, DIR)], 8))
