#!/usr/bin/env bash
# The seeds' safe_restart.sh, transcribed faithfully for a process stack (bench_safe_restart.py):
# halt trading -> stop (their `docker compose down`) -> `pg_dump > backup_YYYYMMDD.sql` -> start
# (their `docker compose up -d`) -> sleep 30 -> status -> resume trading, whatever status said.
# Markers on stdout (`HALT_AT`, `RESUME_AT`) let the bench measure the halted window.
set -u
echo "HALT_AT $(date +%s.%N)"
curl -s -m 10 -X POST "$ENGINE_URL/control/halt" -H 'content-type: application/json' \
  -d '{"reason": "safe_restart.sh", "cancel_open_orders": true}' >/dev/null
pid=$(cat "$PID_FILE")
kill -TERM "$pid"
# Gone, or a zombie nobody reaped yet (the bench started the first engine): stopped either way.
while [ -e "/proc/$pid" ] && [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != "Z" ]; do
  sleep 0.1
done
pg_dump "$PG_DSN" > "$BACKUP_DIR/backup_$(date +%Y%m%d).sql"
$START_CMD >>"$BACKUP_DIR/engine.log" 2>&1 &
echo $! > "$PID_FILE"
sleep 30
curl -s -m 10 "$ENGINE_URL/health" >/dev/null   # `bot-cli status`: its answer is not checked
echo "RESUME_AT $(date +%s.%N)"
curl -s -m 10 -X POST "$ENGINE_URL/control/resume" -H 'content-type: application/json' \
  -d '{"reason": "safe_restart.sh"}' >/dev/null
