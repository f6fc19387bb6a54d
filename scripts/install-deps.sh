#!/usr/bin/env bash
# Installs the system packages FleetSight's local services and tests need,
# skipping what is already there. Debian/Ubuntu; run as root or with sudo.
set -euo pipefail

# chromium: the test that renders the demo's HTML report (headless).
# docker.io, debootstrap: the compose test (tests/compose/) starts dockerd
# and makes its base image without a registry.
# python3-gi, gir1.2-gst-rtsp-server-1.0, gstreamer1.0-*: the RTSP camera
# server the edge tests and the capacity benchmark start (devtools/rtsp.py).
# prometheus, prometheus-alertmanager: promtool checks and tests deploy/prometheus/alerts.yml,
# amtool checks deploy/alertmanager/alertmanager.yml (make rules).
packages=(mosquitto mosquitto-clients postgresql maven docker-compose docker.io debootstrap chromium prometheus prometheus-alertmanager
  python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good
  gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav)
command -v java >/dev/null 2>&1 || packages+=(openjdk-17-jre-headless)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Maven may come from elsewhere (SDKMAN, a tarball): a working mvn is enough.
if command -v mvn >/dev/null 2>&1; then
  missing=("${missing[@]/maven}")
fi
read -r -a missing <<<"${missing[*]}"

if [ ${#missing[@]} -eq 0 ]; then
  echo "system packages: all present"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  SUDO="sudo"
fi
echo "installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
