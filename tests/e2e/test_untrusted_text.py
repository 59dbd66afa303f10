"""Nothing a child or a config says is executed or rendered (issue 20, item 6): children do not
inherit the agent's tokens; a child's escape sequences and rich markup are shown literally by
`status`, `status NAME`, `events` and `logs`; procedure journals are redacted and need the token
over TCP."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.harness import REPO, child, wait_for
from tests.services import free_port

API_TOKEN = "api-token-4f1d2c9e8b7a"
ENGINE_TOKEN = "engine-token-0a9b8c7d6e5f"


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(): v.decode(errors="replace") for k, v in pairs}


def test_children_do_not_inherit_the_agents_tokens(agent_factory):
    engine_port = free_port()
    agent = agent_factory(
        {
            "agent": {"api": {"token_env": "CHIMERA_API_TOKEN"}},
            "components": {
                "engine": {
                    "runtime": "process",
                    "command": child("http", engine_port),
                    "trading": {
                        "control": {
                            "http": f"http://127.0.0.1:{engine_port}",
                            "token_env": "ENGINE_CONTROL_TOKEN",
                        }
                    },
                },
                "worker": {
                    "runtime": "process",
                    "command": child("sleep"),
                    "env": {"WORKER_SETTING": "on-purpose"},
                },
                "helper": {
                    "runtime": "process",
                    "command": child("sleep"),
                    # The config hands this one the engine's token on purpose.
                    "env": {"ENGINE_CONTROL_TOKEN": "given-by-the-config"},
                },
            },
        }
    )
    env = {**os.environ, "CHIMERA_API_TOKEN": API_TOKEN, "ENGINE_CONTROL_TOKEN": ENGINE_TOKEN}
    agent.start(env=env)
    pids = {
        name: agent.wait_state(name, "running")["pid"] for name in ("engine", "worker", "helper")
    }
    engine, worker, helper = (_environ(pids[n]) for n in ("engine", "worker", "helper"))
    for name, environ in (("engine", engine), ("worker", worker), ("helper", helper)):
        assert "CHIMERA_API_TOKEN" not in environ, name
        assert API_TOKEN not in "\n".join(environ.values()), name
    # The engine's own control token (its trading section names it) reaches the engine only.
    assert engine["ENGINE_CONTROL_TOKEN"] == ENGINE_TOKEN
    assert "ENGINE_CONTROL_TOKEN" not in worker and worker["WORKER_SETTING"] == "on-purpose"
    assert helper["ENGINE_CONTROL_TOKEN"] == "given-by-the-config"
    assert all(e.get("CHIMERA_OPS_UNIT") for e in (engine, worker, helper))  # marker kept


HOSTILE = (
    "import sys\n"
    "sys.stderr.write('\\x1b]0;pwned-title\\x07\\x1b[2J[bold red]FAKE: all components healthy"
    "\\x1b[0m\\n')\n"
    "sys.stderr.flush()\n"
    "sys.exit(3)\n"
)


def test_a_childs_escape_sequences_and_markup_are_shown_literally(agent_factory):
    agent = agent_factory(
        {
            "components": {
                "hostile": {
                    "runtime": "process",
                    "command": [sys.executable, "-c", HOSTILE],
                    "restart": {"policy": "never"},
                }
            }
        }
    ).start()
    comp = agent.wait_state("hostile", "exited")
    assert "FAKE" in comp["last_exit"] or "FAKE" in comp["reason"], comp  # the child's words
    outputs = {
        "status": agent.cli("status"),
        "status NAME": agent.cli("status", "hostile"),
        "events": agent.cli("events"),
        "logs": agent.cli("logs", "hostile"),
    }
    for what, result in outputs.items():
        text = result.stdout
        assert "\x1b" not in text and "\x07" not in text, (what, text)
        assert "\\x1b]0;pwned-title\\x07" in text, (what, text)  # shown, escaped
        # Literally, brackets and all: rich never read it as markup.
        assert "[bold red]FAKE: all components healthy" in text, (what, text)


RUNBOOK = """\
# Leaky tail

**When:** testing that journals are redacted

```sh {{step=check id=leaky-tail}}
cat {log}
```

Shows a log that quotes secrets.
"""


def run_leaky_tail(config: Path, directory: Path, log: Path, *args: str) -> Any:
    """`runbook run leaky-tail --yes ARGS` (the page above, catting `log`) from a private dir."""
    books = directory / "books"
    books.mkdir(mode=0o700)
    (books / "leaky-tail.md").write_text(RUNBOOK.format(log=log))
    (books / "leaky-tail.md").chmod(0o600)
    return subprocess.run(
        [sys.executable, "-m", "chimera_ops", "--config", str(config)]
        + ["runbook", "run", "leaky-tail", "--yes", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=str(REPO),
        env={**os.environ, "CHIMERA_OPS_RUNBOOKS": str(books)},
    )


def test_procedure_details_over_tcp_need_the_token_and_are_redacted(agent_factory, short_tmp):
    port = free_port()
    agent = agent_factory(
        {
            "agent": {
                "metrics": {"listen": f"127.0.0.1:{port}"},
                "api": {"token_env": "CHIMERA_API_TOKEN"},
            },
            "components": {"svc": {"runtime": "process", "command": child("sleep")}},
        }
    )
    agent.start(env={**os.environ, "CHIMERA_API_TOKEN": API_TOKEN})
    agent.wait_state("svc", "running")
    log = short_tmp / "app.log"
    aws_key = "AKIAZ7QX3MV5KD2PLW4N"
    log.write_text(f"connected with {aws_key}\nran: exchange-cli --api-secret s3cr3tVALUE9 --x\n")
    ran = run_leaky_tail(agent.config_path, short_tmp, log, "--json")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    base = f"http://127.0.0.1:{port}/v1/procedures"

    def get(url: str, token: str | None) -> tuple[int, str]:
        request = urllib.request.Request(url)
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return answer.status, answer.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    status, body = wait_for(lambda: (a := get(base, API_TOKEN))[0] == 200 and a, what="list")
    (job,) = [p["id"] for p in json.loads(body)["procedures"] if p["kind"] == "runbook"]
    for url in (base, f"{base}/{job}"):
        assert get(url, None)[0] == 401, url
        assert get(url, "wrong-token")[0] == 401, url
    status, body = get(f"{base}/{job}", API_TOKEN)
    assert status == 200, body
    doc = json.loads(body)
    detail = json.loads(doc["steps"][0]["detail"])
    assert "connected with" in detail["output"], detail  # the step's output is there...
    for secret in (aws_key, "s3cr3tVALUE9"):  # ...without its secrets
        assert secret not in body, body
    # Stored redacted, not only served so: the rows themselves hold no secret.
    db = sqlite3.connect(f"file:{agent.state_dir / 'chimera.db'}?mode=ro", uri=True)
    rows = db.execute("SELECT detail FROM procedure_steps WHERE procedure = ?", (job,)).fetchall()
    audit = db.execute("SELECT * FROM audit").fetchall()
    db.close()
    assert rows and "connected with" in rows[0][0]
    for secret in (aws_key, "s3cr3tVALUE9"):
        assert secret not in repr(rows) and secret not in repr(audit)


def test_runbook_step_output_is_shown_literally(agent_factory, short_tmp):
    # No agent needed: `runbook run` runs its steps itself and prints what they printed.
    agent = agent_factory(
        {"components": {"svc": {"runtime": "process", "command": child("sleep")}}}
    )
    hostile = short_tmp / "hostile.log"
    hostile.write_bytes(b"\x1b]0;pwned-title\x07\x1b[2J[bold red]FAKE: all components healthy\n")
    ran = run_leaky_tail(agent.config_path, short_tmp, hostile)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "\x1b" not in ran.stdout and "\x07" not in ran.stdout, ran.stdout
    assert "| \\x1b]0;pwned-title\\x07\\x1b[2J[bold red]FAKE: all components healthy" in ran.stdout


def test_emergency_stop_shows_a_childs_log_tail_literally(agent_factory):
    sleeper = HOSTILE.replace("sys.exit(3)", "import time\ntime.sleep(600)")
    agent = agent_factory(
        {
            "components": {
                "hostile": {"runtime": "process", "command": [sys.executable, "-c", sleeper]}
            }
        }
    ).start()
    agent.wait_state("hostile", "running")
    log = agent.state_dir / "logs" / "hostile.log"
    wait_for(lambda: log.exists() and b"FAKE" in log.read_bytes(), what="the child's line")
    stopped = agent.cli("emergency-stop", "--yes", "--reason", "drill")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    job = json.loads(agent.cli("procedure", "list", "--json").stdout)["procedures"][0]["id"]
    for result in (stopped, agent.cli("procedure", "show", job)):
        text = result.stdout
        assert "\x1b" not in text and "\x07" not in text, text
        assert "\\x1b]0;pwned-title\\x07\\x1b[2J[bold red]FAKE: all components healthy" in text
        assert "[ok  ]" in text, text  # the step marks themselves are no markup either
