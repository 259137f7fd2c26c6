#!/usr/bin/env bash
# Two daphne workers of the example on ports 8000 and 8001, sharing Redis, so a
# message sent on one is delivered on both and /traces/ shows both workers.
#
#   example_project/run_two_workers.sh            # REDIS_URL defaults to redis://127.0.0.1:6379/0
#   PORTS="8000 8001 8002" example_project/run_two_workers.sh
#
# Stop one worker with `kill <pid>` (its pid is printed): the others keep
# serving, the script prints the command that starts the stopped one again, and
# the browser tabs reconnect to it once it is back. Ctrl-C stops every worker
# the script started (one you started again by hand, in its own terminal, is
# yours to stop). PYTHON, DAPHNE, DATABASE_URL and CHANNEL_PREFIX pass through.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"

PYTHON="${PYTHON:-.venv/bin/python}"
DAPHNE="${DAPHNE:-.venv/bin/daphne}"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379/0}"
PORTS="${PORTS:-8000 8001}"

"$PYTHON" manage.py migrate --verbosity 0

pids=() ports=()
cleanup() {
    trap - EXIT INT TERM
    for pid in "${pids[@]}"; do [[ -n "$pid" ]] && kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    echo "all workers stopped"
}
trap cleanup EXIT
trap 'exit 130' INT   # exit runs the EXIT trap: cleanup, once
trap 'exit 143' TERM

# The command line that starts the worker on port $1, runnable from any directory.
start_command() {
    local env=(REDIS_URL="$REDIS_URL" WORKER_NAME="chat-$1")
    [[ -n "${DATABASE_URL:-}" ]] && env+=(DATABASE_URL="$DATABASE_URL")
    [[ -n "${CHANNEL_PREFIX:-}" ]] && env+=(CHANNEL_PREFIX="$CHANNEL_PREFIX")
    printf 'cd %q &&' "$ROOT"
    printf ' %q' "${env[@]}" "$DAPHNE" -b 127.0.0.1 -p "$1" example_project.asgi:application
}

for port in $PORTS; do
    WORKER_NAME="chat-$port" "$DAPHNE" -b 127.0.0.1 -p "$port" example_project.asgi:application &
    pids+=("$!") ports+=("$port")
    echo "worker chat-$port (pid $!): http://127.0.0.1:$port/rooms/lobby/"
done
echo "live traces: http://127.0.0.1:${PORTS%% *}/traces/  (Redis: $REDIS_URL)"
echo "stop one worker with: kill <pid>; stop them all with Ctrl-C"

# Watch the workers: report one that stops, keep the others, end when none is left.
alive=${#pids[@]}
while (( alive > 0 )); do
    sleep 1
    for i in "${!pids[@]}"; do
        pid="${pids[$i]}" port="${ports[$i]}"
        [[ -n "$pid" ]] && ! kill -0 "$pid" 2>/dev/null || continue
        pids[$i]="" alive=$((alive - 1))
        echo "worker chat-$port (pid $pid) stopped; the other workers keep running."
        echo "start it again (in another terminal) with:"
        echo "  $(start_command "$port")"
    done
done
echo "no worker left"
