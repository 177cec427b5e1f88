#!/usr/bin/env bash
# `make stop`: stop supervisord and every program cleanly. Consumers finish their running job
# first (up to their grace period), so this can take up to ~30 s. Never kill -9 supervisord: its
# children would be orphaned and keep running.
set -euo pipefail
cd "$(dirname "$0")/.."
conf=supervisord.conf
pidfile=run/supervisord.pid

pid=$(cat "$pidfile" 2>/dev/null || true)
if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null; then
  echo "jobq: supervisord is not running."
  exit 0
fi
.venv/bin/supervisorctl -c "$conf" shutdown
# shutdown returns before the programs have stopped: wait for supervisord itself to exit.
deadline=$((SECONDS + 60))
while kill -0 "$pid" 2>/dev/null; do
  if [ $SECONDS -ge $deadline ]; then
    echo "jobq: supervisord (pid $pid) still stopping after 60 s; see log/supervisord.log" >&2
    exit 1
  fi
  sleep 0.2
done
echo "jobq: stopped."
