#!/usr/bin/env bash
# Usage: bash bench/run_dicomweb.sh      (`make bench-dicomweb`; as root, or with passwordless sudo)
#   env: PACS_CMD="<repo>/.venv/bin/pacs up"   the command that starts our PACS; the harness appends
#                                              --data-dir DIR --dimse-port 11112 --http-port 8080
#        PACS_LABEL=pacs  PACS_AET=PACS        its name in the table, its AE title
#        SERVERS="pacs orthanc"                which servers (the first is "ours" in the ratio column)
#        N=40 N_BIG=4 N_STOW=3                 requests per small measurement / series retrieves / STOW POSTs
#        CAP_SECONDS=25                        per server and measurement: stop early after this much time
#        BENCH_TIMEOUT=360                     hard limit of the measuring step
#        QUIET_WAIT=60 QUIET_PCT=30            first wait up to QUIET_WAIT s for the machine to be < QUIET_PCT %
#                                              of one core busy (the other load shows in the table anyway)
#        PY=<repo>/.venv/bin/python            a Python with pydicom + numpy
#        UPDATE=auto|always|never              apt-get update policy of bench/install.sh
# DICOMweb speed against Orthanc (issue 4): the same data (bench/gen_data.py ct300: one 300-instance CT series,
# 158 MB; plus bench/dicomweb_run.py gen-mixed: 5 patients x CT + MR study x 2 series x 10 small instances)
# loaded with dcmtk storescu into our `pacs up` and into Debian's Orthanc 1.10 + orthanc-dicomweb (both
# TCP_NODELAY=1), then QIDO, metadata, frame, thumbnail latencies (median, p95) and series retrieve / STOW-RS
# (50 CT instances in one request, bench/gen_data.py --seed 2) throughputs, interleaved request by request
# between the servers over keep-alive connections. Everything runs in a private network namespace
# pacsbench-dw-<pid> (loopback only), deleted at exit. Prints a Markdown table, also written to
# bench/out/dicomweb-<UTC timestamp>.md (raw: .json; logs: bench/out/logs-dicomweb-<timestamp>/).
# A measurement a server answers with an error shows as n/a for it; the run goes on.
set -euo pipefail
B=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$B")

# shellcheck source=bench/common.sh
source "$B/common.sh"
need_root "$B/run_dicomweb.sh" "$@"

export PY=${PY:-$ROOT/.venv/bin/python}
export PACS_CMD=${PACS_CMD:-"$ROOT/.venv/bin/pacs up"}
export PACS_LABEL=${PACS_LABEL:-pacs}
export SERVERS=${SERVERS:-"pacs orthanc"}
export N=${N:-40} N_BIG=${N_BIG:-4} N_STOW=${N_STOW:-3} CAP_SECONDS=${CAP_SECONDS:-25}
export BENCH_TIMEOUT=${BENCH_TIMEOUT:-360}
QUIET_WAIT=${QUIET_WAIT:-60}
QUIET_PCT=${QUIET_PCT:-30}
OUT=$B/out
TS=$(date -u +%Y%m%dT%H%M%SZ)
CT=$OUT/data/ct300
MIXED=$OUT/data/mixed
STOW=$OUT/data/stow50
RESULTS=$OUT/dicomweb-$TS.json
LOGS=$OUT/logs-dicomweb-$TS
REPORT=$OUT/dicomweb-$TS.md
NS=pacsbench-dw-$$
mkdir -p "$OUT" "$LOGS"

log() { echo "[dicomweb $(date +%T)] $*"; }

"$PY" -c 'import numpy, pydicom' 2>/dev/null || { echo "bench: $PY lacks pydicom/numpy (run the set-up)" >&2; exit 1; }

# 1. tools: dcmtk, orthanc (bench/install.sh), and the DICOMweb plugin (no service start while installing)
bash "$B/install.sh"
if ! dpkg-query -W -f='${Status}' orthanc-dicomweb 2>/dev/null | grep -q '^install ok installed$'; then
  policy=/usr/sbin/policy-rc.d
  [[ ! -e $policy ]] || { echo "bench: $policy exists; install orthanc-dicomweb by hand" >&2; exit 1; }
  trap 'rm -f "$policy"' EXIT
  printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod 755 "$policy"
  log "apt-get install orthanc-dicomweb"
  apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends orthanc-dicomweb >/dev/null ||
    { apt-get -o DPkg::Lock::Timeout=300 update -qq &&
      apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends orthanc-dicomweb >/dev/null; }
  rm -f "$policy"; trap - EXIT
fi

# 2. data (cached)
"$PY" "$B/gen_data.py" --out "$CT"
"$PY" "$B/dicomweb_run.py" gen-mixed --out "$MIXED"
"$PY" "$B/gen_data.py" --out "$STOW" --instances 50 --seed 2
cat "$CT"/*.dcm "$MIXED"/*.dcm "$STOW"/*.dcm > /dev/null  # into the page cache

# 3. private network namespace, deleted at exit (after whatever still runs in it is stopped)
netns_up
wait_quiet

# 4. report header
HEADER=$LOGS/header.md
machine_facts
dw_v=$(dpkg-query -W -f='${Version}' orthanc-dicomweb 2>/dev/null || echo '?')
{
  echo "# DICOMweb, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "- data: bench/gen_data.py ct300 (300 CT instances 512x512 int16, Explicit VR LE, one series," \
       "$("$PY" -c 'import json,sys; print(round(json.load(open(sys.argv[1]))["bytes"] / 1e6, 1))' "$CT/manifest.json") MB)" \
       "+ bench/dicomweb_run.py gen-mixed (5 patients x CT + MR study x 2 series x 10 instances 128x128):" \
       "11 studies, 500 instances, loaded with dcmtk storescu $dcmtk_v (2 associations, TCP_NODELAY=1)," \
       "then waited until QIDO-RS listed every instance"
  echo "- STOW-RS: 50 CT instances 512x512 (gen_data.py --seed 2, 26 MB) in one multipart POST, fresh" \
       "series and SOP Instance UIDs for every request (bodies built before the timing)"
  echo "- client: Python http.client, one keep-alive connection per server, one warm-up request per server" \
       "and measurement, then requests interleaved between the servers (A B, B A, ...); a gzip answer is" \
       "decompressed inside the timing. Both servers run at the same time, on $fs, in a private network" \
       "namespace (loopback only)"
  for s in $SERVERS; do
    case $s in
      pacs) echo "- $PACS_LABEL: \`$PACS_CMD\` (git $git_rev), DICOMweb root /dicomweb" ;;
      orthanc) echo "- orthanc: $orthanc_v + orthanc-dicomweb $dw_v (stock settings), TCP_NODELAY=1," \
                    "DICOMweb root /dicom-web" ;;
    esac
  done
  echo "- machine: $(nproc) CPU ($cpu), $mem GiB RAM, Linux $(uname -r); load before:" \
       "$(cut -d' ' -f1-3 /proc/loadavg); ${busy}% of one core busy just before"
  echo
} > "$HEADER"

# 5. servers, load, measure: inside the namespace (hard time bound)
log "namespace $NS; results $RESULTS"
rc=0
timeout --foreground -s INT -k 60 $((BENCH_TIMEOUT + 600)) \
  ip netns exec "$NS" bash "$B/dicomweb_matrix.sh" "$CT" "$MIXED" "$STOW" "$RESULTS" "$LOGS" || rc=$?
case $rc in
  0) ;;
  130) log "!! interrupted" ;;
  124) log "!! hit the hard time limit" ;;
  *) log "!! dicomweb_matrix.sh exited with status $rc (logs: $LOGS)" ;;
esac

# 6. report
echo
if [[ -s "$RESULTS" ]]; then
  "$PY" "$B/report_dicomweb.py" "$RESULTS" --header "$HEADER" --rss "$LOGS/rss.txt" --out "$REPORT"
  echo
  log "wrote $REPORT"
else
  log "!! no results"; exit 1
fi
exit "$rc"
