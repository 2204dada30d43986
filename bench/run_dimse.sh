#!/usr/bin/env bash
# Usage: bash bench/run_dimse.sh         (`make bench-dimse`; as root, or with passwordless sudo)
#   env: PACS_CMD="<repo>/.venv/bin/pacs up"   the command that starts our PACS; the harness appends
#                                              --data-dir DIR --dimse-port 11112 --http-port 8080
#        PACS_LABEL=pacs  PACS_AET=PACS        its name in the table, its AE title
#        N=50                                  timed C-FIND queries per server and row
#        CAP_SECONDS=30                        per server and row: stop early after this much query time
#        QUIET_WAIT=60 QUIET_PCT=30            first wait up to QUIET_WAIT s for the machine to be < QUIET_PCT %
#                                              of one core busy (the other load shows in the table anyway)
#        MOVE=1 MOVE_RUNS=5                    0: skip the C-MOVE part (bench/move_run.py, when present)
#        PY=<repo>/.venv/bin/python            a Python with pydicom + pynetdicom + numpy
#        DIMSE_CLIENT=wire|event|pynetdicom    the C-FIND client (bench/dimse_run.py)
#        UPDATE=auto|always|never              apt-get update policy of bench/install.sh
# DIMSE speed against Orthanc (issue 5). C-FIND: the same data (bench/gen_data.py ct300, one 300-instance CT
# study, + bench/dicomweb_run.py gen-mixed, 5 patients x CT + MR study: 11 studies, 500 instances) loaded with
# dcmtk storescu into our `pacs up` and into Debian's Orthanc 1.10 (stock settings, TCP_NODELAY=1, the bench
# client declared as a modality so that it may query); both run at once in a private network namespace
# pacsbench-dimse-<pid> (loopback only, deleted at exit). bench/dimse_run.py then measures Study Root
# STUDY-level C-FIND latency (median, p95 over N queries: all studies, by PatientID, by StudyDate range, and
# all studies on a new association per query) with a pynetdicom SCU in-process, interleaved between the
# servers. C-MOVE: bench/move_run.py (its own servers and runs, in the same namespace) when it exists.
# Prints a Markdown table, also written to bench/out/dimse-<UTC timestamp>.md (raw: .json; logs:
# bench/out/logs-dimse-<timestamp>/).
set -euo pipefail
B=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$B")

# shellcheck source=bench/common.sh
source "$B/common.sh"
log() { echo "[dimse $(date +%T)] $*"; }

export PY=${PY:-$ROOT/.venv/bin/python}
export PACS_CMD=${PACS_CMD:-"$ROOT/.venv/bin/pacs up"}
export PACS_LABEL=${PACS_LABEL:-pacs}
export PACS_AET=${PACS_AET:-PACS}
export N=${N:-50} CAP_SECONDS=${CAP_SECONDS:-30}
export MOVE=${MOVE:-1} MOVE_RUNS=${MOVE_RUNS:-5}
export START_TIMEOUT=${START_TIMEOUT:-60} STOP_TIMEOUT=${STOP_TIMEOUT:-60}
export LOAD_TIMEOUT=${LOAD_TIMEOUT:-300} INDEX_TIMEOUT=${INDEX_TIMEOUT:-180} BENCH_TIMEOUT=${BENCH_TIMEOUT:-300}
export ORTHANC_BIN=${ORTHANC_BIN:-$(command -v Orthanc || echo /usr/sbin/Orthanc)}
export HOST=127.0.0.1

# ------------------------------------------------------------------ inside the namespace: servers, load, measure
if [[ ${1:-} == --inside ]]; then
  CT=$2; MIXED=$3; RESULTS=$4; LOGS=$5
  WORK=${WORK:-$B/out/run-dimse}
  mkdir -p "$WORK"
  declare -A PID_OF=() SIG_OF=()
  stop_one() { stop_pid "$1" "${PID_OF[$1]:-}" "${SIG_OF[$1]:-TERM}"; unset "PID_OF[$1]"; }
  stop_all() { local n; for n in "${!PID_OF[@]}"; do stop_one "$n"; done; }
  trap 'stop_all; rm -rf "${WORK:?}"/pacs "${WORK:?}"/orthanc' EXIT
  trap 'exit 130' INT TERM

  read -ra cmd <<< "$PACS_CMD"
  rm -rf "${WORK:?}"/pacs "${WORK:?}"/orthanc; mkdir -p "$WORK/pacs" "$WORK/orthanc"
  setsid "${cmd[@]}" --data-dir "$WORK/pacs" --dimse-port 11112 --http-port 8080 >>"$LOGS/$PACS_LABEL.log" 2>&1 &
  PID_OF[$PACS_LABEL]=$!; SIG_OF[$PACS_LABEL]=INT
  launch_orthanc "$WORK/orthanc" "$LOGS/orthanc.log"
  PID_OF[orthanc]=$!; SIG_OF[orthanc]=TERM
  declare -A PORT_OF=([$PACS_LABEL]=11112 [orthanc]=4242) AEC_OF=([$PACS_LABEL]=$PACS_AET [orthanc]=ORTHANC)

  for name in "$PACS_LABEL" orthanc; do
    ok=0
    for ((i = 0; i < START_TIMEOUT * 10; i++)); do
      alive "${PID_OF[$name]}" || break
      if echoscu -aec "${AEC_OF[$name]}" "$HOST" "${PORT_OF[$name]}" >/dev/null 2>&1; then ok=1; break; fi
      sleep 0.1
    done
    if [[ $ok != 1 ]]; then log "!! $name did not start"; tail -n 15 "$LOGS/$name.log" | sed 's/^/    | /'; exit 1; fi
  done
  # Orthanc answers C-FIND only to known modalities: declare the bench client (stock settings otherwise).
  curl -fsS -o /dev/null -X PUT "http://$HOST:8042/modalities/BENCHSCU" \
    -d '{"AET": "BENCHSCU", "Host": "127.0.0.1", "Port": 104}'

  t0=$SECONDS
  for name in "$PACS_LABEL" orthanc; do  # dcmtk storescu, 2 associations, files split round-robin
    lst=$(mktemp "$WORK/load.XXXXXX")
    find "$CT" "$MIXED" -name '*.dcm' | sort > "$lst"
    split -n r/2 -d "$lst" "$lst.part."
    pids=()
    for part in "$lst".part.*; do
      TCP_NODELAY=1 timeout --foreground "$LOAD_TIMEOUT" xargs -a "$part" storescu -q -aec "${AEC_OF[$name]}" \
        "$HOST" "${PORT_OF[$name]}" >>"$LOGS/$name.load.log" 2>&1 &
      pids+=($!)
    done
    rc=0; for p in "${pids[@]}"; do wait "$p" || rc=$?; done
    rm -f "$lst" "$lst".part.*
    [[ $rc == 0 ]] || { log "!! storescu into $name failed (see $LOGS/$name.load.log)"; exit 1; }
  done
  "$PY" "$B/dimse_run.py" wait --server "$PACS_LABEL=$HOST:11112:$PACS_AET" --server "orthanc=$HOST:4242:ORTHANC" \
    --data "$CT" --data "$MIXED" --timeout "$INDEX_TIMEOUT"
  sync; sleep 1
  log "both servers loaded and indexed in $((SECONDS - t0))s; measuring C-FIND"
  timeout --foreground -k 10 "$BENCH_TIMEOUT" "$PY" "$B/dimse_run.py" bench \
    --server "$PACS_LABEL=$HOST:11112:$PACS_AET@${PID_OF[$PACS_LABEL]}" \
    --server "orthanc=$HOST:4242:ORTHANC@${PID_OF[orthanc]}" \
    --data "$CT" --data "$MIXED" --results "$RESULTS" --n "$N" --cap-seconds "$CAP_SECONDS"
  for name in "$PACS_LABEL" orthanc; do
    echo "$name $(session_rss_mib "${PID_OF[$name]}")" >> "$LOGS/rss.txt"
  done
  stop_all

  # ---- C-MOVE hook: bench/move_run.py (issue 5's C-MOVE throughput, written separately) starts its own
  # servers (Orthanc on 4242/8042 again: ours are stopped first), moves the ct300 series to dcmtk storescp
  # and writes move-<UTC>.md/.jsonl into $LOGS/move, which report_dimse.py appends to the report.
  if [[ $MOVE == 1 && -f "$B/move_run.py" ]]; then
    log "C-MOVE: bench/move_run.py --runs $MOVE_RUNS"
    mkdir -p "$LOGS/move"
    timeout --foreground -k 10 "${MOVE_TIMEOUT:-900}" "$PY" "$B/move_run.py" --data "$CT" --runs "$MOVE_RUNS" \
      --out "$LOGS/move" || { rc_m=$?; log "!! move_run.py exited with status $rc_m (its output is in $LOGS/move)"; }
  fi
  exit 0
fi

# ------------------------------------------------------------------------------------ outside: set-up, report
need_root "$B/run_dimse.sh" "$@"
QUIET_WAIT=${QUIET_WAIT:-60}
QUIET_PCT=${QUIET_PCT:-30}
OUT=$B/out
TS=$(date -u +%Y%m%dT%H%M%SZ)
CT=$OUT/data/ct300
MIXED=$OUT/data/mixed
RESULTS=$OUT/dimse-$TS.json
LOGS=$OUT/logs-dimse-$TS
REPORT=$OUT/dimse-$TS.md
NS=pacsbench-dimse-$$
mkdir -p "$OUT" "$LOGS"

"$PY" -c 'import numpy, pydicom, pynetdicom' 2>/dev/null || { echo "bench: $PY lacks pydicom/pynetdicom/numpy (run the set-up)" >&2; exit 1; }

# 1. tools (dcmtk, orthanc), 2. data (cached)
bash "$B/install.sh"
"$PY" "$B/gen_data.py" --out "$CT"
"$PY" "$B/dicomweb_run.py" gen-mixed --out "$MIXED"
cat "$CT"/*.dcm "$MIXED"/*.dcm > /dev/null  # into the page cache

# 3. private network namespace, deleted at exit (after whatever still runs in it is stopped)
netns_up
wait_quiet

# 4. report header
HEADER=$LOGS/header.md
machine_facts
{
  echo "# DIMSE, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "- data: bench/gen_data.py ct300 (one study, 300 CT instances 512x512) + bench/dicomweb_run.py gen-mixed" \
       "(5 patients x CT + MR study x 2 series x 10 instances 128x128): 11 studies, 500 instances, loaded into" \
       "both servers with dcmtk storescu $dcmtk_v (2 associations, TCP_NODELAY=1), then waited until a" \
       "C-FIND listed every instance on each"
  echo "- C-FIND: Study Root, STUDY level, worklist return keys (names, IDs, dates, accession, description," \
       "ModalitiesInStudy, study-related series/instance counts); client: ${DIMSE_CLIENT:-wire} SCU in the" \
       "bench process (wire: bench/dimse_wire.py, PDUs written and read by hand on a blocking socket), one" \
       "association per server kept open, latency = C-FIND-RQ sent -> final response received (every match" \
       "received; decoded and checked after the clock stops); one warm-up query per server and row, then" \
       "$N queries each, interleaved (A B, B A, ...). Both servers run at once, on $fs, in a private network" \
       "namespace (loopback only)"
  echo "- $PACS_LABEL: \`$PACS_CMD\` (git $git_rev), embedded (SQLite catalog)"
  echo "- orthanc: $orthanc_v, stock settings (SQLite index), TCP_NODELAY=1, the client declared as a modality"
  echo "- machine: $(nproc) CPU ($cpu), $mem GiB RAM, Linux $(uname -r); load before:" \
       "$(cut -d' ' -f1-3 /proc/loadavg); ${busy}% of one core busy just before (bench/common.sh box_busy_pct)"
  echo
} > "$HEADER"

# 5. servers, load, measure: inside the namespace (hard time bound)
log "namespace $NS; results $RESULTS"
rc=0
timeout --foreground -s INT -k 60 $((BENCH_TIMEOUT + LOAD_TIMEOUT + INDEX_TIMEOUT + 1200)) \
  ip netns exec "$NS" bash "$B/run_dimse.sh" --inside "$CT" "$MIXED" "$RESULTS" "$LOGS" || rc=$?
case $rc in
  0) ;;
  130) log "!! interrupted" ;;
  124) log "!! hit the hard time limit" ;;
  *) log "!! the measuring step exited with status $rc (logs: $LOGS)" ;;
esac

# 6. report
echo
if [[ -s "$RESULTS" ]]; then
  "$PY" "$B/report_dimse.py" "$RESULTS" --header "$HEADER" --rss "$LOGS/rss.txt" --move "$LOGS/move" \
    --out "$REPORT"
  echo
  log "wrote $REPORT"
else
  log "!! no results"; exit 1
fi
exit "$rc"
