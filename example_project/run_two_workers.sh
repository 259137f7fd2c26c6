#!/usr/bin/env bash
# Two daphne workers of the example on ports 8000 and 8001, sharing Redis, so a
# message sent on one is delivered on both and /traces/ shows both workers.
#
#   example_project/run_two_workers.sh            # REDIS_URL defaults to redis://127.0.0.1:6379/0
#   PORTS="8000 8001 8002" example_project/run_two_workers.sh
#
# Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-.venv/bin/python}"
DAPHNE="${DAPHNE:-.venv/bin/daphne}"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379/0}"
PORTS="${PORTS:-8000 8001}"

"$PYTHON" manage.py migrate --verbosity 0

pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

for port in $PORTS; do
    WORKER_NAME="chat-$port" "$DAPHNE" -b 127.0.0.1 -p "$port" example_project.asgi:application &
    pids+=("$!")
    echo "worker chat-$port: http://127.0.0.1:$port/rooms/lobby/"
done
echo "live traces: http://127.0.0.1:${PORTS%% *}/traces/  (Redis: $REDIS_URL)"
wait -n
