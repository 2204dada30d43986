#!/usr/bin/env bash
# Usage: bench/dicomweb_matrix.sh CT300_DIR MIXED_DIR STOW_DIR RESULTS.json LOG_DIR
#   Runs inside the private network namespace made by bench/run_dicomweb.sh (not meant to be run directly).
#   env: SERVERS="pacs orthanc"  PACS_CMD="<repo>/.venv/bin/pacs up"  PACS_LABEL=pacs  PACS_AET=PACS
#        PY=<repo>/.venv/bin/python  WORK=bench/out/run-dicomweb  START_TIMEOUT=60  STOP_TIMEOUT=60
#        LOAD_TIMEOUT=300  INDEX_TIMEOUT=120  N=40  N_BIG=4  N_STOW=3  CAP_SECONDS=25  BENCH_TIMEOUT=360
# Starts every server at once, fresh on empty storage (each in its own session, listening on 127.0.0.1; Orthanc
# 1.10 on every interface of the namespace, which only has loopback), loads CT300_DIR and MIXED_DIR into each
# with dcmtk storescu (TCP_NODELAY=1, 2 associations), waits until QIDO-RS shows every instance on each, then
# runs bench/dicomweb_run.py once against all of them (measurements interleaved request by request; timeouts
# run in the foreground process group, so a Ctrl-C reaches every client). Every
# server is stopped by its PID (then its process group emptied) by the EXIT trap, whatever happens.
# The start/stop helpers are adapted from bench/store_matrix.sh (Orthanc here with the DICOMweb plugin).
set -euo pipefail
B=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$B")
CT=${1:?ct300 dir}; MIXED=${2:?mixed dir}; STOW=${3:?stow dir}; RESULTS=${4:?results.json}; LOGS=${5:?log dir}
PY=${PY:-$ROOT/.venv/bin/python}
SERVERS=${SERVERS:-"pacs orthanc"}
PACS_CMD=${PACS_CMD:-"$ROOT/.venv/bin/pacs up"}
PACS_LABEL=${PACS_LABEL:-pacs}
PACS_AET=${PACS_AET:-PACS}
WORK=${WORK:-$B/out/run-dicomweb}
START_TIMEOUT=${START_TIMEOUT:-60}
STOP_TIMEOUT=${STOP_TIMEOUT:-60}
LOAD_TIMEOUT=${LOAD_TIMEOUT:-300}
INDEX_TIMEOUT=${INDEX_TIMEOUT:-120}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-360}
ORTHANC_BIN=${ORTHANC_BIN:-$(command -v Orthanc || echo /usr/sbin/Orthanc)}
HOST=127.0.0.1
mkdir -p "$WORK" "$LOGS"

log() { echo "[dicomweb $(date +%T)] $*"; }
# shellcheck source=bench/common.sh
source "$B/common.sh"


declare -A PID_OF=() SIG_OF=() URL_OF=() PORT_OF=() AEC_OF=()

stop_one() {  # name: stop exactly that server
  local name=$1
  stop_pid "$name" "${PID_OF[$name]:-}" "${SIG_OF[$name]:-TERM}"
  unset "PID_OF[$name]"
}
stop_all() { local n; for n in "${!PID_OF[@]}"; do stop_one "$n"; done; }
wipe() { local s; for s in $SERVERS; do rm -rf "${WORK:?}/$s"; done; }
trap 'stop_all; wipe' EXIT
trap 'exit 130' INT TERM

start_pacs() {  # name dir
  local name=$1 dir=$2 cmd
  read -ra cmd <<< "$PACS_CMD"
  PORT_OF[$name]=11112; AEC_OF[$name]=$PACS_AET; SIG_OF[$name]=INT
  URL_OF[$name]=http://$HOST:8080/dicomweb
  setsid "${cmd[@]}" --data-dir "$dir" --dimse-port 11112 --http-port 8080 >>"$LOGS/$name.log" 2>&1 &
  PID_OF[$name]=$!
}

start_orthanc() {  # name dir: Debian Orthanc 1.10 + orthanc-dicomweb, stock settings otherwise
  local name=$1 dir=$2 plugin=""
  for d in /usr/share/orthanc/plugins /usr/lib/orthanc /usr/local/share/orthanc/plugins; do
    [[ -e "$d/libOrthancDicomWeb.so" ]] && plugin=$d/libOrthancDicomWeb.so && break
  done
  [[ -n "$plugin" ]] || { log "!! libOrthancDicomWeb.so not found (package orthanc-dicomweb)"; return 1; }
  PORT_OF[$name]=4242; AEC_OF[$name]=ORTHANC; SIG_OF[$name]=TERM
  URL_OF[$name]=http://$HOST:8042/dicom-web
  launch_orthanc "$dir" "$LOGS/$name.log" "$plugin"
  PID_OF[$name]=$!
}

label_of() { if [[ $1 == pacs ]]; then echo "$PACS_LABEL"; else echo "$1"; fi; }

load() {  # name: storescu, 2 associations, files split round-robin
  local name=$1 lst part rc=0 pids=()
  lst=$(mktemp "$WORK/load.XXXXXX")
  find "$CT" "$MIXED" -name '*.dcm' | sort > "$lst"
  split -n r/2 -d "$lst" "$lst.part."
  for part in "$lst".part.*; do
    TCP_NODELAY=1 timeout --foreground "$LOAD_TIMEOUT" xargs -a "$part" storescu -q -aec "${AEC_OF[$name]}" "$HOST" \
      "${PORT_OF[$name]}" >>"$LOGS/$name.load.log" 2>&1 &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || rc=$?; done
  rm -f "$lst" "$lst".part.*
  return "$rc"
}

read -ra servers <<< "$SERVERS"
args=()
t0=$SECONDS
for s in "${servers[@]}"; do
  name=$(label_of "$s")
  rm -rf "${WORK:?}/$s"; mkdir -p "$WORK/$s"
  echo "=== $(date -u +%FT%TZ) start" >> "$LOGS/$name.log"
  "start_$s" "$name" "$WORK/$s"
done
for s in "${servers[@]}"; do
  name=$(label_of "$s")
  wait_ready "$name" || { tail -n 15 "$LOGS/$name.log" | sed 's/^/    | /'; exit 1; }
  log "$name ready (PID ${PID_OF[$name]}), loading $(find "$CT" "$MIXED" -name '*.dcm' | wc -l) instances"
  t=$SECONDS
  load "$name" || { log "!! storescu into $name failed (see $LOGS/$name.load.log)"; exit 1; }
  log "$name loaded in $((SECONDS - t))s"
  args+=(--server "$name=${URL_OF[$name]}@${PID_OF[$name]}")
done
wait_args=()
for ((i = 0; i < ${#args[@]}; i += 2)); do wait_args+=(--server "${args[i + 1]%@*}"); done
"$PY" "$B/dicomweb_run.py" wait "${wait_args[@]}" --data "$CT" --data "$MIXED" --timeout "$INDEX_TIMEOUT"
sync; sleep 1
log "servers loaded in $((SECONDS - t0))s; measuring"
timeout --foreground -k 10 "$BENCH_TIMEOUT" "$PY" "$B/dicomweb_run.py" bench "${args[@]}" --ct300 "$CT" --mixed "$MIXED" \
  --stow "$STOW" --results "$RESULTS" --n "${N:-40}" --n-big "${N_BIG:-4}" --n-stow "${N_STOW:-3}" \
  --cap-seconds "${CAP_SECONDS:-25}"
for s in "${servers[@]}"; do
  name=$(label_of "$s")
  echo "$name $(session_rss_mib "${PID_OF[$name]}")" >> "$LOGS/rss.txt"
done
stop_all
wipe
log "done in $((SECONDS - t0))s"
