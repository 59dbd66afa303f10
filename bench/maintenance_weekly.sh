#!/usr/bin/env bash
# The seeds' weekly checklist as a person would script it for cron (bench_maintenance.py): log
# files over 1 GB, each process's RSS now (no trend: one snapshot), the engine's request rate
# from its /metrics, database sizes, free disk. No thresholds beyond the log size, no history,
# no growth, no verdict: the output is for a person to read.
set -u
find "$LOG_DIR" /var/log -type f -size +1G 2>/dev/null
ps -o pid=,rss=,args= -p "$ENGINE_PID"
curl -s -m 5 "$ENGINE_URL/metrics" | grep -E '^paper_exchange_requests_(peak_)?per_minute'
psql -X -A -t "$PG_DSN" -c "SELECT datname, pg_database_size(datname) FROM pg_database"
df -h "$STATE_DIR" /
