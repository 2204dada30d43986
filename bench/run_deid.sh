#!/usr/bin/env bash
# Usage: bash bench/run_deid.sh        (`make bench-deid`; no root needed)
#   env: RUNS=3                        timed passes per tool after one warm-up (best of RUNS reported)
#        TOOLS=ours,dicognito,deid     which de-identifiers (one process each)
#        EXPORT=1                      then the export job on `pacs up` (0 skips it); PACS_CMD, PACS_AET
#        KEEP=0                        1 keeps the last run's output files under bench/out/run-deid/
#        TARGET=3                      ours ÷ the faster peer that meets issue 13's target
#        QUIET_WAIT=30 QUIET_PCT=30    first wait up to QUIET_WAIT s for the machine to be < QUIET_PCT % busy
#        PY=<repo>/.venv/bin/python
# De-identification speed (issue 13, "Speed"): instances/s of pacs.deid (basic profile + Retain Longitudinal
# Temporal Information with Modified Dates + UID remapping) beside dicognito and deid on the same 300-instance
# CT series with a realistic header (bench/gen_data.py + bench/deid_run.py gen), then the export job's
# end-to-end figure on `pacs up`. Prints a Markdown table, also written to bench/out/deid-<UTC timestamp>.md
# (raw: .json).
set -euo pipefail
B=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$B")
# shellcheck source=bench/common.sh
source "$B/common.sh"

PY=${PY:-$ROOT/.venv/bin/python}
RUNS=${RUNS:-3}
TOOLS=${TOOLS:-ours,dicognito,deid}
EXPORT=${EXPORT:-1}
KEEP=${KEEP:-0}
TARGET=${TARGET:-3}
PACS_CMD=${PACS_CMD:-$ROOT/.venv/bin/pacs up}
PACS_AET=${PACS_AET:-PACS}
QUIET_WAIT=${QUIET_WAIT:-30}
QUIET_PCT=${QUIET_PCT:-30}
OUT=$B/out
TS=$(date -u +%Y%m%dT%H%M%SZ)
CT=$OUT/data/ct300
DATA=$OUT/data/ct300-deid
RESULTS=$OUT/deid-$TS.json
REPORT=$OUT/deid-$TS.md
WORK=$OUT/run-deid
mkdir -p "$OUT"

log() { echo "[deid $(date +%T)] $*"; }

"$PY" -c 'import numpy, pydicom, dicognito, deid, pacs.deid' 2>/dev/null ||
  { echo "bench: $PY lacks pydicom/numpy/dicognito/deid/pacs (run make setup)" >&2; exit 1; }
if [[ "$EXPORT" == 1 ]] && ! command -v storescu >/dev/null; then
  echo "bench: storescu missing (apt-get install dcmtk), or EXPORT=0" >&2; exit 1
fi

# data (cached): the ingest benchmark's series, then its realistic-header copy
"$PY" "$B/gen_data.py" --out "$CT"
"$PY" "$B/deid_run.py" gen --src "$CT" --out "$DATA"
wait_quiet

machine_facts
HEADER=$(mktemp)
trap 'rm -f "$HEADER"' EXIT
{
  echo "# De-identification, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "- data: bench/gen_data.py ct300 (300 × 512² int16 CT, one study/series) with a real CT's header added" \
       "by \`bench/deid_run.py gen\` (patient, staff, institution, device, request, references between slices," \
       "nested sequences, two private blocks), $(du -sm "$DATA" | cut -f1) MB"
  echo "- ours: \`pacs.deid\` at git $git_rev, \`Deidentifier(DeidSettings(profile=Profile.parse('basic'," \
       "['retain-longitudinal-modified-dates']), key=…)).part10(bytes)\`; dicognito: \`Anonymizer(seed=…)\`" \
       "+ \`remove_private_tags\`; deid: \`replace_identifiers\` with a recipe generated from PS3.15 Table E.1-1"
  echo "- machine: $(nproc) CPU ($cpu), $mem GiB RAM, Linux $(uname -r), $fs; load before:" \
       "$(cut -d' ' -f1-3 /proc/loadavg); ${busy}% of one core busy just before"
  echo
} > "$HEADER"

rm -rf "$WORK"
mkdir -p "$WORK"
rc=0
log "$TOOLS: warm-up + $RUNS passes each; results $RESULTS"
args=(--data "$DATA" --work "$WORK" --results "$RESULTS" --runs "$RUNS" --py "$PY")
keep=(); [[ "$KEEP" != 1 ]] || keep=(--keep)
"$PY" "$B/deid_run.py" bench "${args[@]}" --tools "$TOOLS" "${keep[@]}" || rc=$?
if [[ "$EXPORT" == 1 ]]; then
  log "export job on pacs up ($PACS_CMD)"
  "$PY" "$B/deid_run.py" export "${args[@]}" --pacs-cmd "$PACS_CMD" --aet "$PACS_AET" ||
    { log "!! export step failed (see $RESULTS, $WORK/export/pacs.log)"; rc=1; }
fi
echo "- machine after: load $(cut -d' ' -f1-3 /proc/loadavg)" >> "$HEADER"
echo >> "$HEADER"

echo
if [[ -s "$RESULTS" ]]; then
  "$PY" "$B/report_deid.py" "$RESULTS" --header "$HEADER" --out "$REPORT" --target "$TARGET" || rc=1
  echo
  log "wrote $REPORT"
else
  log "!! no results"; exit 1
fi
[[ "$KEEP" == 1 ]] || rm -rf "$WORK/export/data"
exit "$rc"
