#!/usr/bin/env bash
# Makes the secrets docker-compose.yml reads from ./secrets (git-ignored):
# database, bridge, operator (MQTT admin) and Grafana passwords, one password per camera, and the
# broker's password file (hashes only). Existing passwords are kept.
#   bash scripts/compose-secrets.sh [CAMERA_ID ...]   (default: the simulated cameras)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v mosquitto_passwd >/dev/null || { echo "needs mosquitto_passwd (Debian package mosquitto)" >&2; exit 1; }
umask 077
mkdir -p secrets/cameras
gen() { [ -s "$1" ] || head -c 24 /dev/urandom | base64 | tr -d '/+=\n' > "$1"; }
gen secrets/postgres.password
gen secrets/mqtt-bridge.password
gen secrets/mqtt-admin.password
gen secrets/grafana-admin.password
cameras=("$@")
[ ${#cameras[@]} -gt 0 ] || cameras=(sim-cam-1 sim-cam-2 sim-cam-3)
passwd=secrets/mosquitto-passwd
rm -f "$passwd"
mosquitto_passwd -c -b "$passwd" fleetsight-bridge "$(cat secrets/mqtt-bridge.password)"
mosquitto_passwd -b "$passwd" fleetsight-admin "$(cat secrets/mqtt-admin.password)"
for camera in "${cameras[@]}"; do
  gen "secrets/cameras/$camera.password"
  mosquitto_passwd -b "$passwd" "$camera" "$(cat "secrets/cameras/$camera.password")"
done
# Read inside the containers by their own non-root users (compose bind-mounts
# each file as it is): readable files, kept from other host users by the
# folder, which only its owner may enter.
chmod 700 secrets
chmod 755 secrets/cameras
chmod 644 secrets/*.password secrets/cameras/*.password "$passwd"
echo "secrets in ./secrets for: fleetsight-bridge fleetsight-admin ${cameras[*]}"
