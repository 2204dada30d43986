#!/usr/bin/env bash
# Usage: bash bench/run_store.sh        (what `make bench` runs; as root, or with passwordless sudo)
#   env: PACS_CMD="<repo>/.venv/bin/pacs up"   the command that starts our PACS; the harness appends
#                                              --data-dir DIR --dimse-port P --http-port H, calls AE PACS_AET
#        PACS_LABEL=pacs  PACS_AET=PACS        its name in the table, its AE title
#        SERVERS="pacs orthanc storescp"       which servers to measure;  PARS="1 4"  association counts
#        RUNS=3                                runs per server and association count (interleaved passes)
#        RUN_TIMEOUT=60 START_TIMEOUT=60 STOP_TIMEOUT=60   seconds, per run / server start / server stop
#        MAX_SECONDS=420                       no new run starts after this many seconds of the matrix
#        PY=<repo>/.venv/bin/python            a Python with pydicom + numpy (+ pynetdicom for the stand-in)
#        QUIET_WAIT=0 QUIET_PCT=15             before each run wait up to QUIET_WAIT s for other load < QUIET_PCT %
#        UPDATE=auto|always|never              apt-get update policy of bench/install.sh
# C-STORE ingest benchmark: dcmtk storescu sends a synthetic CT series (300 x 512x512 int16, Explicit VR Little
# Endian, 158 MB) over 1 and over 4 parallel associations to our PACS, to Orthanc (Debian package, tuned:
# TCP_NODELAY=1) and to dcmtk storescp (TCP_NODELAY=1, the practical ceiling). Runs are interleaved; every run
# starts its server fresh on empty storage. Prints a Markdown table (median and range of instances/s, MB/s,
# server RSS and CPU) and writes it to bench/out/store-<UTC timestamp>.md (raw runs: .jsonl, logs: logs-*/).
# Steps: install dcmtk + orthanc if missing (bench/install.sh), generate or reuse the data
# (bench/gen_data.py -> bench/out/data/ct300), make a private network namespace pacsbench-<pid> with only
# loopback up (Orthanc 1.10 cannot bind to loopback only), run bench/store_matrix.sh in it (servers and
# clients alike), report (bench/report_store.py), delete the namespace. Exit status 1 if a server had no
# successful run at some association count.
# Stand-in for our PACS while `pacs up` is not ready (same command line, a minimal pynetdicom SCP):
#   PACS_CMD="$PWD/.venv/bin/python bench/standin_pacs.py up" PACS_LABEL=stand-in bash bench/run_store.sh
set -euo pipefail
B=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$B")

# shellcheck source=bench/common.sh
source "$B/common.sh"
need_root "$B/run_store.sh" "$@"

export PY=${PY:-$ROOT/.venv/bin/python}
export PACS_CMD=${PACS_CMD:-"$ROOT/.venv/bin/pacs up"}
export PACS_LABEL=${PACS_LABEL:-pacs}
export SERVERS=${SERVERS:-"pacs orthanc storescp"}
export PARS=${PARS:-"1 4"}
export RUNS=${RUNS:-3}
export MAX_SECONDS=${MAX_SECONDS:-420}
OUT=$B/out
TS=$(date -u +%Y%m%dT%H%M%SZ)
DATA=$OUT/data/ct300
RESULTS=$OUT/store-$TS.jsonl
LOGS=$OUT/logs-$TS
REPORT=$OUT/store-$TS.md
NS=pacsbench-$$
mkdir -p "$OUT" "$LOGS"

log() { echo "[bench $(date +%T)] $*"; }

"$PY" -c 'import numpy, pydicom' 2>/dev/null || { echo "bench: $PY lacks pydicom/numpy (run the set-up)" >&2; exit 1; }

# 1. tools
bash "$B/install.sh"
# 2. data (cached)
"$PY" "$B/gen_data.py" --out "$DATA"
cat "$DATA"/*.dcm > /dev/null  # into the page cache: the clients read from memory in every run

# 3. private network namespace, deleted at exit (after whatever still runs in it is stopped)
netns_up

# 4. report header
HEADER=$LOGS/header.md
machine_facts
{
  echo "# C-STORE ingest, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  read -r n_inst mbytes seed < <("$PY" -c 'import json, sys; m = json.load(open(sys.argv[1]))
print(m["instances"], round(m["bytes"] / 1e6, 1), m["params"]["seed"])' "$DATA/manifest.json")
  echo "- data: $n_inst CT instances 512x512 int16, Explicit VR Little Endian, $mbytes MB, one study /" \
       "one series (bench/gen_data.py, seed $seed)"
  echo "- client: dcmtk storescu $dcmtk_v, one process per association, files split round-robin," \
       "TCP_NODELAY=1; time from the first client start to the last client exit"
  echo "- every run starts its server fresh on empty storage ($fs), in a private network namespace" \
       "(loopback only), and checks the stored instance count afterwards"
  for s in $SERVERS; do
    case $s in
      pacs) echo "- $PACS_LABEL: \`$PACS_CMD\` (git $git_rev)" ;;
      orthanc) echo "- orthanc: $orthanc_v; TCP_NODELAY=1, SQLite index, storage fsync on (default), no plugins" ;;
      storescp) echo "- storescp: dcmtk storescp $dcmtk_v --fork, TCP_NODELAY=1 (files only, no index: the ceiling)" ;;
    esac
  done
  echo "- machine: $(nproc) CPU ($cpu), $mem GiB RAM, Linux $(uname -r); load before: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "- $RUNS interleaved passes x associations ($PARS) x servers (order rotates per pass). RSS: the server's" \
       "process tree (sum), peak during a run. Other load: CPU used by neither the server nor the clients"
  echo
} > "$HEADER"

# 5. the matrix, inside the namespace (hard time bound on top of its own budget)
log "namespace $NS; results $RESULTS"
rc=0
timeout --foreground -s INT -k 60 $((MAX_SECONDS + 300)) \
  ip netns exec "$NS" bash "$B/store_matrix.sh" "$DATA" "$RESULTS" "$LOGS" || rc=$?
case $rc in
  0) ;;
  130) log "!! interrupted: reporting the runs done so far" ;;
  124) log "!! the matrix hit the hard time limit" ;;
  *) log "!! matrix exited with status $rc" ;;
esac

# 6. report
echo
if [[ -s "$RESULTS" ]]; then
  "$PY" "$B/report_store.py" "$RESULTS" --header "$HEADER" --out "$REPORT"
  echo
  log "wrote $REPORT"
else
  log "!! no results"; exit 1
fi
"$PY" - "$RESULTS" "$SERVERS" "$PARS" "$PACS_LABEL" <<'EOF' || exit 1
import json, sys
runs = [json.loads(x) for x in open(sys.argv[1]) if x.strip()]
label = {"pacs": sys.argv[4]}
missing = [(label.get(s, s), p) for s in sys.argv[2].split() for p in map(int, sys.argv[3].split())
           if not any(r["ok"] and r["server"] == label.get(s, s) and r["par"] == p for r in runs)]
if missing:
    print("bench: no successful run for " + ", ".join(f"{s} x{p}" for s, p in missing), file=sys.stderr)
    sys.exit(1)
EOF
exit "$rc"
