#!/usr/bin/env bash
# Shared by the bench scripts (sourced, not run): process checks, stopping a server we started, the
# private network namespace's clean-up, and how busy the machine is. Callers define log() and, for
# netns_cleanup, NS.

alive() {  # running and not a zombie
  local st
  st=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  st=${st##*) }
  [[ "${st:0:1}" != Z ]]
}

group_left() {  # live processes in process group $1
  local p out=""
  for p in $(pgrep -g "$1" 2>/dev/null || true); do
    if alive "$p"; then out+="$p "; fi
  done
  echo "$out"
}

stop_pid() {  # name pid signal: stop exactly that server (its PID, then what is left in its process group)
  local name=$1 pid=$2 sig=$3 i left=""
  [[ -n "$pid" ]] || return 0
  kill "-$sig" "$pid" 2>/dev/null || true
  for ((i = 0; i < STOP_TIMEOUT * 10; i++)); do alive "$pid" || break; sleep 0.1; done
  if alive "$pid"; then
    log "!! $name (PID $pid) still running ${STOP_TIMEOUT}s after SIG$sig: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
  # live (non-zombie) processes left in the server's own process group (setsid): 5 s to finish, then stopped
  for ((i = 0; i <= 50; i++)); do
    left=$(group_left "$pid")
    [[ -n "$left" ]] || break
    sleep 0.1
  done
  if [[ -n "$left" ]]; then
    log "!! $name left processes in its group: $left; stopping them"
    # shellcheck disable=SC2086
    kill -TERM $left 2>/dev/null || true
    sleep 1
    # shellcheck disable=SC2086
    kill -KILL $left 2>/dev/null || true
  fi
}

netns_cleanup() {  # stop whatever still runs in the namespace $NS, then delete it
  local pids
  if ip netns list 2>/dev/null | grep -qw "$NS"; then
    pids=$(ip netns pids "$NS" 2>/dev/null | tr '\n' ' ' || true)
    if [[ -n "${pids// /}" ]]; then
      log "stopping processes left in $NS: $pids"
      # shellcheck disable=SC2086
      kill -TERM $pids 2>/dev/null || true
      sleep 2
      # shellcheck disable=SC2086
      kill -KILL $pids 2>/dev/null || true
    fi
    ip netns del "$NS" 2>/dev/null || true
  fi
}

netns_up() {  # make the private namespace $NS (loopback only), deleted at exit; note an Orthanc already running
  trap netns_cleanup EXIT
  trap 'exit 130' INT TERM
  ip netns add "$NS"
  ip netns exec "$NS" ip link set lo up
  local others
  others=$(pgrep -x Orthanc | tr '\n' ' ' || true)
  [[ -z "$others" ]] || log "note: Orthanc already running outside the benchmark (PIDs $others): it may load the CPU"
}

wait_quiet() {  # wait up to $QUIET_WAIT s for the machine to be under $QUIET_PCT % of one core busy; sets $busy
  local t_q=$SECONDS
  while :; do
    busy=$(box_busy_pct 2)
    (( busy < QUIET_PCT || SECONDS - t_q >= QUIET_WAIT )) && break
  done
  log "machine ${busy}% of one core busy before the run (waited $((SECONDS - t_q))s)"
}

box_busy_pct() {  # [seconds=1]: % of one core the whole machine is busy, averaged over that time
  local s=${1:-1} a b
  a=$(awk '/^cpu /{print $2+$3+$4+$7+$8+$9}' /proc/stat); sleep "$s"
  b=$(awk '/^cpu /{print $2+$3+$4+$7+$8+$9}' /proc/stat)
  echo $(( (b - a) * 100 / $(getconf CLK_TCK) / s ))
}

wait_ready() {  # name: C-ECHO and the DICOMweb root answer while the server lives (PID_OF, URL_OF, AEC_OF,
  # PORT_OF, HOST and START_TIMEOUT of the calling script)
  local name=$1 i
  for ((i = 0; i < START_TIMEOUT * 10; i++)); do
    alive "${PID_OF[$name]}" || { log "!! $name exited during start-up"; return 1; }
    if curl -fsS -o /dev/null -H 'Accept: application/dicom+json' "${URL_OF[$name]}/studies" 2>/dev/null &&
       echoscu -aec "${AEC_OF[$name]}" "$HOST" "${PORT_OF[$name]}" >/dev/null 2>&1; then
      return 0
    fi
    sleep 0.1
  done
  log "!! $name not ready after ${START_TIMEOUT}s"
  return 1
}

need_root() {  # script args...: re-run the script as root with sudo when possible, else explain and fail
  [[ $(id -u) -ne 0 ]] || return 0
  if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    exec sudo -E bash "$@"
  fi
  echo "bench: needs root (ip netns, apt-get); run as root or with passwordless sudo" >&2
  exit 1
}

launch_orthanc() {  # dir log [dicomweb-plugin]: Debian Orthanc 1.10 on DICOM 4242 / HTTP 8042, in the background
  local dir=$1 logfile=$2 plugin=${3:-} plugins="[]" dicomweb=""
  if [[ -n "$plugin" ]]; then
    plugins="[ \"$plugin\" ]"
    dicomweb="\"DicomWeb\": { \"Enable\": true, \"Root\": \"/dicom-web/\", \"EnableWado\": true, \"Host\": \"$HOST\", \"Ssl\": false },"
  fi
  mkdir -p "$dir/db"
  cat > "$dir/orthanc.json" <<JSON
{
  "Name": "bench-orthanc",
  "StorageDirectory": "$dir/db",
  "IndexDirectory": "$dir/db",
  "Plugins": $plugins,
  $dicomweb
  "HttpServerEnabled": true,
  "HttpPort": 8042,
  "RemoteAccessAllowed": false,
  "AuthenticationEnabled": false,
  "DicomServerEnabled": true,
  "DicomAet": "ORTHANC",
  "DicomPort": 4242,
  "DicomCheckCalledAet": false,
  "DicomAlwaysAllowStore": true,
  "DicomAlwaysAllowEcho": true,
  "SaveJobs": false,
  "WebDavEnabled": false,
  "OrthancExplorerEnabled": false
}
JSON
  # TCP_NODELAY=1: Debian's Orthanc (dcmtk inside) leaves Nagle on otherwise (~40 ms per C-STORE)
  TCP_NODELAY=1 setsid "$ORTHANC_BIN" "$dir/orthanc.json" >>"$logfile" 2>&1 &
}

machine_facts() {  # sets dcmtk_v orthanc_v git_rev fs cpu mem for a report header ($ROOT: the repo, $OUT: results)
  dcmtk_v=$({ storescu --version 2>&1 || true; } | head -1 | grep -o 'v[0-9][0-9.]*' || echo '?')
  orthanc_v="$(Orthanc --version 2>/dev/null | head -1), Debian $(dpkg-query -W -f='${Version}' orthanc 2>/dev/null)"
  git_rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')
  [[ -z "$(git -C "$ROOT" status --porcelain 2>/dev/null | head -1)" ]] || git_rev+=" + uncommitted changes"
  fs="$(df -T "$OUT" | awk 'NR==2 {print $2 " on " $1}')"
  cpu=$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)
  mem=$(free -g | awk '/^Mem/ {print $2}')
}

session_rss_mib() {  # session-leader pid: the RSS of the session's live processes, MiB
  local rss=0 p
  for p in $(ps -o pid= -s "$1" 2>/dev/null || true); do
    rss=$((rss + $(ps -o rss= -p "$p" 2>/dev/null || echo 0)))
  done
  echo $((rss / 1024))
}
