#!/usr/bin/env bash
# `make demo`: start the seed's system under supervisord (producer1, consumer1, consumer2, manager,
# ops), wait until it runs, and say what runs where. Safe to run again: it starts nothing twice.
# JOBQ_* variables set when calling it (e.g. JOBQ_DATABASE_URL=postgresql://...) reach every program.
set -euo pipefail
cd "$(dirname "$0")/.."
conf=supervisord.conf
bin=.venv/bin
pidfile=run/supervisord.pid

# Private files and directories (0600/0700) for everything below: the database holds every payload,
# and supervisord opens log/supervisord.log before its own umask=077 applies.
umask 077
mkdir -p data/files log run
# Some shells (containers, cron) leave USER unset; supervisord and the apps' audit trail use it.
export USER="${USER:-$(id -un)}"
# Passed through supervisord's environment to every program; the default is jobq's own.
export JOBQ_DATABASE_URL="${JOBQ_DATABASE_URL:-sqlite:///data/queue.db}"

ctl() { "$bin/supervisorctl" -c "$conf" "$@"; }

running_pid() {
  [ -f "$pidfile" ] || return 1
  local pid
  pid=$(cat "$pidfile" 2>/dev/null) || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

if pid=$(running_pid); then
  echo "jobq: supervisord already runs (pid $pid); not starting it again."
else
  args=(-c "$conf")
  # The config says user=root (a clean start as root, as the seed runs it); any other user names itself.
  [ "$(id -u)" -eq 0 ] || args+=(-u "$(id -un)")
  "$bin/supervisord" "${args[@]}"
  echo "jobq: supervisord started (database: $JOBQ_DATABASE_URL)"
fi

# Wait for the queue's programs (the web apps are reported, not waited for beyond their start).
want=(producer1 consumer1 consumer2)
deadline=$((SECONDS + 30))
while :; do
  status=$(ctl status 2>/dev/null || true)  # exit status 3 while a program is not RUNNING
  missing=0
  for p in "${want[@]}"; do
    grep -Eq "^$p +RUNNING" <<<"$status" || missing=1
  done
  [ $missing -eq 0 ] && break
  if [ $SECONDS -ge $deadline ]; then
    echo "jobq: not every program is RUNNING after 30 s; see log/supervisord.log and log/<program>.log" >&2
    echo "$status" >&2
    exit 1
  fi
  sleep 0.5
done
for port in 8501 8502; do  # the web apps answer a few seconds after they start
  for _ in $(seq 40); do
    curl -fsS "http://127.0.0.1:$port/_stcore/health" >/dev/null 2>&1 && break
    sleep 0.5
  done
done

cat <<MSG

$(ctl status 2>/dev/null || true)

jobq demo is running:
  manager (resubmit / cancel)   http://localhost:8501
  ops (monitoring)              http://localhost:8502
  logs                          log/producer1.log  log/consumer1.log  log/consumer2.log
                                log/manager.log  log/ops.log  log/supervisord.log
  files                         data/files/*.txt (one stamp line per processed job)
  database                      $JOBQ_DATABASE_URL

  the seed's commands (supervisorctl, streamlit, sqlite3) as written: first  source .venv/bin/activate
  status     supervisorctl -c supervisord.conf status       (or .venv/bin/supervisorctl ...)
  crash one  kill -9 \$(supervisorctl -c supervisord.conf pid consumer1)
  stop       make stop                                       (or supervisorctl -c supervisord.conf shutdown)
MSG
