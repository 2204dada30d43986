#!/usr/bin/env bash
# Usage: tools/install_debs.sh PACKAGE...   (as root; `make` runs it through sudo when needed)
# Installs the Debian packages not yet installed, quietly; nothing when all are there.
# A service package (orthanc) must not leave a system daemon behind: while installing, policy-rc.d
# refuses every service start (exit 101; an existing policy-rc.d is put back afterwards), an Orthanc that
# appeared anyway is stopped by its PID, and the service is disabled at boot. The tests start their own
# Orthanc on free ports.
set -euo pipefail
missing=()
for p in "$@"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
done
(( ${#missing[@]} )) || exit 0
echo "installing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
orthanc_pids() { { pgrep -x Orthanc || true; } | sort; }
before=$(orthanc_pids)
policy=/usr/sbin/policy-rc.d
backup=""
if [[ -e "$policy" ]]; then backup=$(mktemp /usr/sbin/policy-rc.d.pacs.XXXXXX); cp -p "$policy" "$backup"; fi
restore() { if [[ -n "$backup" ]]; then mv -f "$backup" "$policy"; else rm -f "$policy"; fi; }
trap restore EXIT
printf '#!/bin/sh\n# temporary, from tools/install_debs.sh: no service starts during install\nexit 101\n' > "$policy"
chmod 755 "$policy"
apt-get -o DPkg::Lock::Timeout=300 update -q >/dev/null
apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends "${missing[@]}" >/dev/null
restore
trap - EXIT
for pid in $(comm -13 <(echo "$before") <(orthanc_pids)); do
  kill -TERM "$pid" 2>/dev/null || true
done
if [[ " ${missing[*]} " == *" orthanc "* ]] && command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then
  systemctl disable --now orthanc >/dev/null 2>&1 || true
fi
