#!/usr/bin/env bash
# Usage: bench/install.sh        (as root; env: UPDATE=auto|always|never)
# Idempotent install of what the ingest benchmark runs: Debian packages dcmtk (storescu, storescp, echoscu),
# orthanc (the peer), curl and iproute2 (ip netns). Installed packages are left alone; `apt-get update` runs
# only when something is missing (UPDATE=always forces it, UPDATE=never skips it).
# The orthanc package's postinst would start the system service: while installing, /usr/sbin/policy-rc.d
# refuses every service start (exit 101; an existing policy-rc.d is put back afterwards), any Orthanc process
# that still appeared during the install is stopped by its PID, and the service is disabled at boot. The
# benchmark starts its own Orthanc, in a private network namespace.
set -euo pipefail
PKGS=(dcmtk orthanc curl iproute2 procps)
UPDATE=${UPDATE:-auto}
export DEBIAN_FRONTEND=noninteractive

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
done
if (( ${#missing[@]} == 0 )) && [[ "$UPDATE" != always ]]; then
  echo "[install] packages present: ${PKGS[*]}"
  exit 0
fi
[[ $(id -u) -eq 0 ]] || { echo "[install] missing packages (${missing[*]}): run as root" >&2; exit 1; }

orthanc_pids() { { pgrep -x Orthanc || true; } | sort; }
before=$(orthanc_pids)
policy=/usr/sbin/policy-rc.d
backup=""
restore_policy() {
  if [[ -n "$backup" ]]; then mv -f "$backup" "$policy"; backup=""; else rm -f "$policy"; fi
}
if [[ -e "$policy" ]]; then
  backup=$(mktemp /usr/sbin/policy-rc.d.bench.XXXXXX)
  cp -p "$policy" "$backup"
fi
trap restore_policy EXIT
printf '#!/bin/sh\n# temporary, from bench/install.sh: refuse service starts during install\nexit 101\n' > "$policy"
chmod 755 "$policy"

if [[ "$UPDATE" == always || ( "$UPDATE" == auto && ${#missing[@]} -gt 0 ) ]]; then
  echo "[install] apt-get update"
  apt-get -o DPkg::Lock::Timeout=300 update -qq
fi
if (( ${#missing[@]} > 0 )); then
  echo "[install] apt-get install ${missing[*]}"
  apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
restore_policy
trap - EXIT

# an Orthanc started by the install after all (e.g. by systemd directly): stop exactly those PIDs
for pid in $(comm -13 <(echo "$before") <(orthanc_pids)); do
  echo "[install] stopping Orthanc PID $pid started by the package install"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
done
if command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then
  systemctl disable --now orthanc >/dev/null 2>&1 || true
fi
for t in storescu storescp echoscu curl ip; do
  command -v "$t" >/dev/null || { echo "[install] $t still missing" >&2; exit 1; }
done
[[ -x /usr/sbin/Orthanc ]] || command -v Orthanc >/dev/null || { echo "[install] Orthanc missing" >&2; exit 1; }
echo "[install] done"
