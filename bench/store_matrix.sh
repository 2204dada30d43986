#!/usr/bin/env bash
# Usage: bench/store_matrix.sh DATA_DIR RESULTS.jsonl LOG_DIR
#   Runs inside the private network namespace made by bench/run_store.sh (not meant to be run directly).
#   env: SERVERS="pacs orthanc storescp"  PARS="1 4"  RUNS=3  RUN_TIMEOUT=60  START_TIMEOUT=60
#        STOP_TIMEOUT=60  MAX_SECONDS=420  PACS_CMD="<repo>/.venv/bin/pacs up"  PACS_LABEL=pacs  PACS_AET=PACS
#        PY=<repo>/.venv/bin/python  WORK=bench/out/run  QUIET_WAIT=0  QUIET_PCT=15
# The interleaved C-STORE matrix: for pass 1..RUNS, for each association count in PARS, for each server (the
# order rotates every pass), start the server fresh on empty storage, wait until it answers C-ECHO, run
# bench/store_run.py once (all DATA_DIR files over that many associations), stop exactly that server, wipe
# its storage, `sync`. With QUIET_WAIT=S, each run first waits up to S s for other load on the machine to
# drop under QUIET_PCT % of one core. Results are appended to RESULTS.jsonl, server logs go to
# LOG_DIR/<server>.log. A server that fails to start or times out is recorded as a failed run and skipped for
# the rest of the matrix. No new run starts after MAX_SECONDS. Every server is started in its own session
# and stopped (then its process group emptied) by the EXIT trap too, whatever happens. Servers listen on
# 127.0.0.1 (Orthanc 1.10 on every interface: the namespace only has loopback).
set -euo pipefail
B=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$B")
DATA=${1:?data dir}; RESULTS=${2:?results.jsonl}; LOGS=${3:?log dir}
PY=${PY:-$ROOT/.venv/bin/python}
SERVERS=${SERVERS:-"pacs orthanc storescp"}
PARS=${PARS:-"1 4"}
RUNS=${RUNS:-3}
RUN_TIMEOUT=${RUN_TIMEOUT:-60}
START_TIMEOUT=${START_TIMEOUT:-60}
STOP_TIMEOUT=${STOP_TIMEOUT:-60}
MAX_SECONDS=${MAX_SECONDS:-420}
PACS_CMD=${PACS_CMD:-"$ROOT/.venv/bin/pacs up"}
PACS_LABEL=${PACS_LABEL:-pacs}
PACS_AET=${PACS_AET:-PACS}
WORK=${WORK:-$B/out/run}
QUIET_WAIT=${QUIET_WAIT:-0}
QUIET_PCT=${QUIET_PCT:-15}
ORTHANC_BIN=${ORTHANC_BIN:-$(command -v Orthanc || echo /usr/sbin/Orthanc)}
HOST=127.0.0.1
mkdir -p "$WORK" "$LOGS"
STUDY_UID=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["study_uid"])' "$DATA/manifest.json")
SERIES_UID=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["series_uid"])' "$DATA/manifest.json")

SERVER_PID=""; SERVER_NAME=""; STOP_SIG=TERM
log() { echo "[bench $(date +%T)] $*"; }
# shellcheck source=bench/common.sh
source "$B/common.sh"


stop_server() {  # stop exactly the server we started
  [[ -n "$SERVER_PID" ]] || return 0
  stop_pid "$SERVER_NAME" "$SERVER_PID" "$STOP_SIG"
  SERVER_PID=""  # only now: an interrupt during the stop makes the EXIT trap stop it again
}
trap 'stop_server' EXIT
trap 'exit 130' INT TERM

wait_ready() {  # port aet [http-url]: C-ECHO (and the URL, if given) answer, while the server lives
  local port=$1 aet=$2 url=${3:-} i
  for ((i = 0; i < START_TIMEOUT * 10; i++)); do
    alive "$SERVER_PID" || { log "!! $SERVER_NAME exited during start-up"; return 1; }
    if { [[ -z "$url" ]] || curl -fsS -o /dev/null "$url" 2>/dev/null; } &&
       echoscu -aec "$aet" "$HOST" "$port" >/dev/null 2>&1; then
      return 0
    fi
    sleep 0.1
  done
  log "!! $SERVER_NAME not ready after ${START_TIMEOUT}s"
  return 1
}

# start_<server> DIR: start it on empty storage DIR (background, own session), set SERVER_PID, PORT, AEC,
# COUNT_CMD (prints the number of stored instances) and STOP_SIG, return once it answers C-ECHO.
start_pacs() {
  local dir=$1 cmd
  read -ra cmd <<< "$PACS_CMD"
  PORT=11112; AEC=$PACS_AET; STOP_SIG=INT
  setsid "${cmd[@]}" --data-dir "$dir" --dimse-port "$PORT" --http-port 8080 >>"$LOGS/$SERVER_NAME.log" 2>&1 &
  SERVER_PID=$!
  # QIDO-RS on the series; an empty answer (endpoint missing, error) records the count as unknown
  COUNT_CMD="curl -fsS 'http://$HOST:8080/dicomweb/studies/$STUDY_UID/series/$SERIES_UID/instances?limit=100000' \
    | '$PY' -c 'import json,sys; d=json.load(sys.stdin); print(len(d) if isinstance(d, list) else \"\")'"
  wait_ready "$PORT" "$AEC"
}

start_orthanc() {
  local dir=$1
  PORT=4242; AEC=ORTHANC; STOP_SIG=TERM
  launch_orthanc "$dir" "$LOGS/$SERVER_NAME.log"
  SERVER_PID=$!
  COUNT_CMD="curl -fsS http://$HOST:8042/statistics | '$PY' -c 'import json,sys; print(json.load(sys.stdin)[\"CountInstances\"])'"
  wait_ready "$PORT" "$AEC" "http://$HOST:8042/system"
}

start_storescp() {  # dcmtk's own SCP, one process per association: the practical ceiling
  local dir=$1
  PORT=11113; AEC=STORESCP; STOP_SIG=TERM
  TCP_NODELAY=1 setsid storescp --fork -od "$dir" -aet STORESCP "$PORT" >>"$LOGS/$SERVER_NAME.log" 2>&1 &
  SERVER_PID=$!
  COUNT_CMD="find '$dir' -type f | wc -l"
  wait_ready "$PORT" "$AEC"
}

wait_quiet() {  # with QUIET_WAIT=S: wait up to S s for the machine to be under QUIET_PCT % of one core
  (( QUIET_WAIT > 0 )) || return 0
  local t0=$SECONDS b
  while :; do
    b=$(box_busy_pct)
    (( b < QUIET_PCT )) && return 0
    if (( SECONDS - t0 >= QUIET_WAIT )); then log "machine still ${b}% busy after ${QUIET_WAIT}s: running anyway"; return 0; fi
  done
}

label_of() { if [[ $1 == pacs ]]; then echo "$PACS_LABEL"; else echo "$1"; fi; }

record_failure() {  # server par pass reason
  printf '{"server": "%s", "par": %s, "pass": %s, "ok": false, "error": "%s"}\n' "$1" "$2" "$3" "$4" >> "$RESULTS"
}

read -ra servers <<< "$SERVERS"
read -ra pars <<< "$PARS"
declare -A dead=()
t_start=$SECONDS
log "matrix: servers=(${servers[*]}) associations=(${pars[*]}) passes=$RUNS, budget ${MAX_SECONDS}s"
for ((pass = 1; pass <= RUNS; pass++)); do
  # rotate the server order every pass, so no server always runs right after the same one
  order=()
  for ((i = 0; i < ${#servers[@]}; i++)); do order+=("${servers[(i + pass - 1) % ${#servers[@]}]}"); done
  for par in "${pars[@]}"; do
    for s in "${order[@]}"; do
      label=$(label_of "$s")
      if (( SECONDS - t_start > MAX_SECONDS )); then
        log "!! time budget of ${MAX_SECONDS}s used up: stopping the matrix at pass $pass"
        break 3
      fi
      if [[ -n "${dead[$s]:-}" ]]; then record_failure "$label" "$par" "$pass" "skipped"; continue; fi
      dir="$WORK/$s"
      rm -rf "$dir"; mkdir -p "$dir"
      wait_quiet
      SERVER_NAME=$label
      echo "=== pass $pass, $par association(s): $label" >> "$LOGS/$label.log"
      if ! "start_$s" "$dir"; then
        tail -n 15 "$LOGS/$label.log" | sed 's/^/    | /'
        stop_server
        dead[$s]=1
        record_failure "$label" "$par" "$pass" "start failed"
        continue
      fi
      sync; sleep 0.5
      run_rc=0
      "$PY" "$B/store_run.py" --data "$DATA" --host "$HOST" --port "$PORT" --aec "$AEC" --par "$par" \
        --server-pid "$SERVER_PID" --server "$label" --pass "$pass" --timeout "$RUN_TIMEOUT" \
        --count-cmd "$COUNT_CMD" --count-wait 30 --results "$RESULTS" || run_rc=$?
      if (( run_rc == 3 )); then
        log "!! $label timed out (${RUN_TIMEOUT}s): skipping it for the rest of the matrix"
        dead[$s]=1
      fi
      stop_server
      rm -rf "$dir"
      sync
    done
  done
done
log "matrix done in $((SECONDS - t_start))s"
