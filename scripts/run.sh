#!/usr/bin/env bash
# `make run`'s long-running part: the web server, the task worker, the stats sampler, the
# engine's event follower and the sweep side by side. Ctrl-C (SIGINT to the terminal's process group) or SIGTERM
# stops them all and waits for them; if one of them ends by itself, the others are
# stopped too and its exit status is ours.
#
# Only our own children are signalled, once each: the earlier `trap 'kill 0' EXIT INT
# TERM` signalled the whole process group, make included, and the shell itself, whose
# trap then ran again inside its own trap until bash crashed (make said "Segmentation
# fault").
set -uo pipefail

venv=${VENV:-.venv}
manage=("$venv/bin/python" manage.py)

stop() {
  trap - INT TERM
  local pids
  pids=$(jobs -pr)
  if [ -n "$pids" ]; then
    # shellcheck disable=SC2086 # one word per pid
    kill -TERM $pids 2>/dev/null
  fi
  wait
  exit "$1"
}

trap 'stop 0' INT TERM

"$venv/bin/gunicorn" -c berth/gunicorn.conf.py &
"${manage[@]}" qcluster &
"${manage[@]}" sample_stats &
"${manage[@]}" follow_engine &
"${manage[@]}" recover --every 60 &

wait -n
status=$?
# On Ctrl-C the children get the SIGINT too, and one may end before our trap runs: only a
# failure is news.
if [ "$status" -ne 0 ]; then
  echo "berth: a process of \`make run\` ended (status $status); stopping the others." >&2
fi
stop "$status"
