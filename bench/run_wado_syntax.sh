#!/usr/bin/env bash
# Usage: bash bench/run_wado_syntax.sh   (part of `make bench-codecs`; as root, or with passwordless sudo)
#   env: PACS_CMD="<repo>/.venv/bin/pacs up"   PACS_LABEL=pacs  PACS_AET=PACS   (as bench/run_dicomweb.sh)
#        RUNS=3                      passes; each starts both servers fresh on empty storage and loads the data
#        SYNTAXES=jpegls,htj2k       the syntaxes asked (not the stored one: the data is Explicit VR LE)
#        CAP_SECONDS=60              per server and frame row: stop early after this long
#        QUIET_WAIT=30 QUIET_PCT=30  first wait up to QUIET_WAIT s for a quieter machine
#        WADO_OUT=bench/out/wado-syntax-<UTC>.md   where the table goes
#        PY=<repo>/.venv/bin/python  UPDATE=auto|always|never (bench/install.sh)
# WADO-RS in a transfer syntax that is not stored (issue 12, "Speed"): our `pacs up` beside Debian's Orthanc 1.10 +
# orthanc-dicomweb, both loaded with dcmtk storescu (TCP_NODELAY=1) with bench/gen_data.py's ct300 series (series
# retrieve) and its 50-instance stow50 series (--seed 2: the 50 single frames), both running at once in a private
# network namespace pacsbench-wts-<pid> (loopback only, deleted at exit); bench/wado_syntax_run.py measures the
# first (transcoding) and second (cached) requests. An answer that is not what was asked (e.g. 406 while our
# on-the-fly transcoding is not merged) is recorded with its status and the server's reason.
set -euo pipefail
B=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$B")
# shellcheck source=bench/common.sh
source "$B/common.sh"
if [[ "${1:-}" != --inside ]]; then
  need_root "$B/run_wado_syntax.sh" "$@"
fi

export PY=${PY:-$ROOT/.venv/bin/python}
export PACS_CMD=${PACS_CMD:-"$ROOT/.venv/bin/pacs up"}
export PACS_LABEL=${PACS_LABEL:-pacs}
export PACS_AET=${PACS_AET:-PACS}
export RUNS=${RUNS:-3} SYNTAXES=${SYNTAXES:-jpegls,htj2k} CAP_SECONDS=${CAP_SECONDS:-60}
export START_TIMEOUT=${START_TIMEOUT:-60} STOP_TIMEOUT=${STOP_TIMEOUT:-60} LOAD_TIMEOUT=${LOAD_TIMEOUT:-300}
export INDEX_TIMEOUT=${INDEX_TIMEOUT:-120}
QUIET_WAIT=${QUIET_WAIT:-30}
QUIET_PCT=${QUIET_PCT:-30}
OUT=$B/out
export CT=$OUT/data/ct300 FRAMES=$OUT/data/stow50
HOST=127.0.0.1
log() { echo "[wado-ts $(date +%T)] $*"; }

if [[ "${1:-}" == --inside ]]; then
  # ---- inside the namespace: RUNS passes of start, load, wait, measure, stop
  LOGS=$2
  WORK=$OUT/run-wado-syntax
  ORTHANC_BIN=${ORTHANC_BIN:-$(command -v Orthanc || echo /usr/sbin/Orthanc)}
  mkdir -p "$WORK"
  declare -A PID_OF=() SIG_OF=() URL_OF=() PORT_OF=() AEC_OF=()
  stop_all() { local n; for n in "${!PID_OF[@]}"; do stop_pid "$n" "${PID_OF[$n]}" "${SIG_OF[$n]}"; unset "PID_OF[$n]"; done; }
  trap 'stop_all; rm -rf "${WORK:?}"' EXIT
  trap 'exit 130' INT TERM
  load() {  # name: storescu, 2 associations
    local name=$1 lst part rc=0 pids=()
    lst=$(mktemp "$WORK/load.XXXXXX")
    find "$CT" "$FRAMES" -name '*.dcm' | sort > "$lst"
    split -n r/2 -d "$lst" "$lst.part."
    for part in "$lst".part.*; do
      TCP_NODELAY=1 timeout --foreground "$LOAD_TIMEOUT" xargs -a "$part" storescu -q -aec "${AEC_OF[$name]}" \
        "$HOST" "${PORT_OF[$name]}" >>"$LOGS/$name.load.log" 2>&1 &
      pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p" || rc=$?; done
    rm -f "$lst" "$lst".part.*
    return "$rc"
  }
  plugin=""
  for d in /usr/share/orthanc/plugins /usr/lib/orthanc /usr/local/share/orthanc/plugins; do
    [[ -e "$d/libOrthancDicomWeb.so" ]] && plugin=$d/libOrthancDicomWeb.so && break
  done
  [[ -n "$plugin" ]] || { log "!! libOrthancDicomWeb.so not found (package orthanc-dicomweb)"; exit 1; }
  read -ra cmd <<< "$PACS_CMD"
  for ((pass = 0; pass < RUNS; pass++)); do
    rm -rf "${WORK:?}/pacs" "${WORK:?}/orthanc"; mkdir -p "$WORK/pacs" "$WORK/orthanc"
    echo "=== $(date -u +%FT%TZ) pass $pass" | tee -a "$LOGS/$PACS_LABEL.log" >> "$LOGS/orthanc.log"
    PORT_OF[$PACS_LABEL]=11112; AEC_OF[$PACS_LABEL]=$PACS_AET; SIG_OF[$PACS_LABEL]=INT
    URL_OF[$PACS_LABEL]=http://$HOST:8080/dicomweb
    setsid "${cmd[@]}" --data-dir "$WORK/pacs" --dimse-port 11112 --http-port 8080 >>"$LOGS/$PACS_LABEL.log" 2>&1 &
    PID_OF[$PACS_LABEL]=$!
    PORT_OF[orthanc]=4242; AEC_OF[orthanc]=ORTHANC; SIG_OF[orthanc]=TERM
    URL_OF[orthanc]=http://$HOST:8042/dicom-web
    launch_orthanc "$WORK/orthanc" "$LOGS/orthanc.log" "$plugin"
    PID_OF[orthanc]=$!
    args=(); wargs=()
    for name in "$PACS_LABEL" orthanc; do
      wait_ready "$name" || { tail -n 15 "$LOGS/$name.log" | sed 's/^/    | /'; exit 1; }
      t=$SECONDS
      load "$name" || { log "!! storescu into $name failed (see $LOGS/$name.load.log)"; exit 1; }
      log "pass $pass: $name loaded in $((SECONDS - t))s"
      args+=(--server "$name=${URL_OF[$name]}@${PID_OF[$name]}"); wargs+=(--server "$name=${URL_OF[$name]}")
    done
    "$PY" "$B/dicomweb_run.py" wait "${wargs[@]}" --data "$CT" --data "$FRAMES" --timeout "$INDEX_TIMEOUT"
    sync; sleep 1
    timeout --foreground -k 10 900 "$PY" "$B/wado_syntax_run.py" bench "${args[@]}" --ct300 "$CT" \
      --frames "$FRAMES" --results "$LOGS/pass-$pass.json" --pass "$pass" --syntaxes "$SYNTAXES" \
      --cap-seconds "$CAP_SECONDS" || log "!! pass $pass: wado_syntax_run.py exited with $?"
    stop_all
  done
  exit 0
fi

TS=$(date -u +%Y%m%dT%H%M%SZ)
LOGS=$OUT/logs-wado-syntax-$TS
REPORT=${WADO_OUT:-$OUT/wado-syntax-$TS.md}
NS=pacsbench-wts-$$
mkdir -p "$LOGS"
bash "$B/install.sh"
dpkg-query -W -f='${Status}' orthanc-dicomweb 2>/dev/null | grep -q '^install ok installed$' ||
  { log "orthanc-dicomweb missing: run bash bench/run_dicomweb.sh once (it installs it)"; exit 1; }
"$PY" "$B/gen_data.py" --out "$CT"
"$PY" "$B/gen_data.py" --out "$FRAMES" --instances 50 --seed 2
netns_up
wait_quiet
machine_facts
HEADER=$LOGS/header.md
{
  echo "- WADO-RS: $(date -u '+%Y-%m-%d %H:%M UTC'); \`$PACS_CMD\` (git $git_rev) vs $orthanc_v +" \
       "orthanc-dicomweb $(dpkg-query -W -f='${Version}' orthanc-dicomweb) (stock settings), both at once in a" \
       "private namespace, loaded with dcmtk storescu; client: http.client, keep-alive; load before:" \
       "$(cut -d' ' -f1-3 /proc/loadavg), ${busy}% of one core busy"
  echo
} > "$HEADER"
log "namespace $NS, $RUNS passes, logs $LOGS"
rc=0
timeout --foreground -s INT -k 60 $((RUNS * 900 + 300)) ip netns exec "$NS" bash "$B/run_wado_syntax.sh" --inside "$LOGS" || rc=$?
[[ $rc -eq 0 ]] || log "!! the in-namespace part exited with $rc"
shopt -s nullglob
res=("$LOGS"/pass-*.json)
if (( ${#res[@]} )); then
  "$PY" "$B/wado_syntax_run.py" report "${res[@]}" --header "$HEADER" --out "$REPORT"
  log "wrote $REPORT"
else
  log "!! no results"; exit 1
fi
exit "$rc"
