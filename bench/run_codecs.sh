#!/usr/bin/env bash
# Usage: bash bench/run_codecs.sh      (`make bench-codecs`; no root needed for the codec part)
#   env: COUNT=300 RUNS=3               files of the CT series per pass / passes (interleaved, tool order rotated)
#        PROCS=$(nproc)                 ours-N's process count
#        SYNTAXES=rle,jpegls,j2k,htj2k,jpeg   TOOLS=ours-1,ours-N,proto-1,dcmtk,gdcm   QUALITY=90
#        LAYOUTS=files,multiframe       300 files (peers: a process per file) / one file of their frames
#        MAX_SECONDS=0                  no new pass after this many seconds (0: no limit)
#        WADO=1                         then bench/run_wado_syntax.sh (root or passwordless sudo; skipped
#                                       with a note otherwise); its table is appended to the report
#        QUIET_WAIT=30 QUIET_PCT=30     first wait up to QUIET_WAIT s for the machine to be < QUIET_PCT % busy
#        PY=<repo>/.venv/bin/python
# Codec speed of the registry (pacs.codecs) beside dcmtk and gdcm (issue 12, "Speed"): encode and decode MB/s of
# bench/gen_data.py's 300-instance CT series (512x512 int16, Explicit VR LE) for RLE, JPEG-LS lossless, JPEG 2000
# lossless and HTJ2K lossless, and of its 8-bit copy (bench/codecs_run.py gen8, the soft-tissue window) for JPEG
# Baseline; compression ratios; every output checked. Prints a Markdown table, also written to
# bench/out/codecs-<UTC timestamp>.md (raw: .json).
set -euo pipefail
B=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$B")
# shellcheck source=bench/common.sh
source "$B/common.sh"

PY=${PY:-$ROOT/.venv/bin/python}
COUNT=${COUNT:-300}
RUNS=${RUNS:-3}
PROCS=${PROCS:-$(nproc)}
SYNTAXES=${SYNTAXES:-rle,jpegls,j2k,htj2k,jpeg}
TOOLS=${TOOLS:-ours-1,ours-N,proto-1,dcmtk,gdcm}
QUALITY=${QUALITY:-90}
LAYOUTS=${LAYOUTS:-files,multiframe}
MAX_SECONDS=${MAX_SECONDS:-0}
WADO=${WADO:-1}
QUIET_WAIT=${QUIET_WAIT:-30}
QUIET_PCT=${QUIET_PCT:-30}
OUT=$B/out
TS=$(date -u +%Y%m%dT%H%M%SZ)
CT=$OUT/data/ct300
CT8=$OUT/data/ct300-8bit
RESULTS=$OUT/codecs-$TS.json
REPORT=$OUT/codecs-$TS.md
WORK=$OUT/run-codecs
mkdir -p "$OUT"

log() { echo "[codecs $(date +%T)] $*"; }

"$PY" -c 'import numpy, pydicom, imagecodecs, pacs.codecs' 2>/dev/null ||
  { echo "bench: $PY lacks pydicom/numpy/imagecodecs/pacs (run make setup)" >&2; exit 1; }
for t in dcmcrle dcmdrle dcmcjpls dcmdjpls dcmcjpeg dcmdjpeg gdcmconv; do
  command -v "$t" >/dev/null || { echo "bench: $t missing (apt-get install dcmtk libgdcm-tools)" >&2; exit 1; }
done

# data (cached)
"$PY" "$B/gen_data.py" --out "$CT"
"$PY" "$B/codecs_run.py" gen8 --src "$CT" --out "$CT8"
wait_quiet

machine_facts
gdcm_v=$(gdcmconv --version 2>&1 | grep -o 'gdcm [0-9.]*' || echo '?')
ic_v=$("$PY" -c 'import imagecodecs; print(imagecodecs.__version__)')
HEADER=$(mktemp)
trap 'rm -f "$HEADER"' EXIT
{
  echo "# Codecs, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "- data: bench/gen_data.py ct300, first $COUNT of 300 instances, 512x512 int16 (BitsStored 12), Explicit" \
       "VR LE; JPEG Baseline on its 8-bit copy (bench/codecs_run.py gen8: HU windowed C=40 W=400 to 0..255," \
       "the same files for every tool), quality $QUALITY for every tool"
  echo "- MB/s = uncompressed pixel bytes / wall time of the directory, file in → file out (read, code, write)," \
       "median (min–max) of $RUNS interleaved passes (tool order rotated per pass and syntax); each tool" \
       "decodes its own encoded files"
  echo "- ours: \`pacs.codecs.transcode\` (git $git_rev) on pydicom data sets read from the files, saved" \
       "with save_as, in this process and in a warm pool of $PROCS processes; prototype: imagecodecs $ic_v" \
       "encoders/decoders (pylibjpeg-rle for RLE) with pydicom for the file, what a registry plugin would do"
  echo "- peers: dcmtk $dcmtk_v (dcmcrle/dcmdrle, dcmcjpls +el/dcmdjpls, dcmcjpeg +eb +q $QUALITY/dcmdjpeg)," \
       "$gdcm_v (gdcmconv --rle/--jpegls/--j2k/--jpeg --lossy -q $QUALITY, decode --raw): one process per" \
       "file (none has a directory mode), run one after the other"
  echo "- machine: $(nproc) CPU ($cpu), $mem GiB RAM, Linux $(uname -r), $fs; load before:" \
       "$(cut -d' ' -f1-3 /proc/loadavg); ${busy}% of one core busy just before"
  echo
} > "$HEADER"

log "$COUNT files x $RUNS passes; results $RESULTS"
rc=0
"$PY" "$B/codecs_run.py" bench --ct16 "$CT" --ct8 "$CT8" --work "$WORK" --results "$RESULTS" --count "$COUNT" \
  --runs "$RUNS" --procs "$PROCS" --syntaxes "$SYNTAXES" --tools "$TOOLS" --quality "$QUALITY" \
  --layouts "$LAYOUTS" --max-seconds "$MAX_SECONDS" || rc=$?
rm -rf "$WORK"
echo "- machine after: load $(cut -d' ' -f1-3 /proc/loadavg)" >> "$HEADER"
echo >> "$HEADER"

WADO_MD=""
if [[ "$WADO" == 1 ]]; then
  if [[ $(id -u) -eq 0 ]] || { command -v sudo >/dev/null && sudo -n true 2>/dev/null; }; then
    WADO_MD=$OUT/wado-syntax-$TS.md
    WADO_OUT=$WADO_MD bash "$B/run_wado_syntax.sh" || log "!! run_wado_syntax.sh exited with $?"
  else
    log "WADO-RS part skipped: needs root or passwordless sudo (ip netns)"
  fi
fi

echo
if [[ -s "$RESULTS" ]]; then
  args=("$RESULTS" --header "$HEADER" --out "$REPORT")
  [[ -z "$WADO_MD" ]] || args+=(--wado "$WADO_MD")
  "$PY" "$B/report_codecs.py" "${args[@]}"
  echo
  log "wrote $REPORT"
else
  log "!! no results"; exit 1
fi
exit "$rc"
