#!/usr/bin/env bash
# Makes the secrets docker-compose.yml reads from ./secrets (git-ignored):
# database, bridge, operator (MQTT admin) and Grafana passwords, one password per camera, and the
# broker's password file (hashes only). Existing passwords are kept.
#   bash scripts/compose-secrets.sh [CAMERA_ID ...]   (default: the simulated cameras)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v mosquitto_passwd >/dev/null || { echo "needs mosquitto_passwd (Debian package mosquitto)" >&2; exit 1; }
umask 077
mkdir -p secrets/cameras secrets/webhooks  # webhooks: the notifier's signing secrets, one file each (yours)
gen() { [ -s "$1" ] || head -c 24 /dev/urandom | base64 | tr -d '/+=\n' > "$1"; }
gen secrets/postgres.password
gen secrets/mqtt-bridge.password
gen secrets/mqtt-admin.password
gen secrets/grafana-admin.password
cameras=("$@")
[ ${#cameras[@]} -gt 0 ] || cameras=(sim-cam-1 sim-cam-2 sim-cam-3)
passwd=secrets/mosquitto-passwd
# Built aside, then written over the old file in place: compose mounts this
# one file, and a new file (a new inode) would never reach a running broker.
fresh=secrets/.mosquitto-passwd.new
rm -f "$fresh"
mosquitto_passwd -c -b "$fresh" fleetsight-bridge "$(cat secrets/mqtt-bridge.password)"
mosquitto_passwd -b "$fresh" fleetsight-admin "$(cat secrets/mqtt-admin.password)"
for camera in "${cameras[@]}"; do
  gen "secrets/cameras/$camera.password"
done
# Every camera that has a password gets its login back: adding one later
# (`compose-secrets.sh NEW_ID`, then `docker compose kill -s HUP mosquitto`)
# must not drop the others.
for file in secrets/cameras/*.password; do
  camera=$(basename "$file" .password)
  mosquitto_passwd -b "$fresh" "$camera" "$(cat "$file")"
done
cat "$fresh" > "$passwd"
rm -f "$fresh"
# Read inside the containers by their own non-root users (compose bind-mounts
# each file as it is): readable files, kept from other host users by the
# folder, which only its owner may enter.
chmod 700 secrets
chmod 755 secrets/cameras
chmod 644 secrets/*.password secrets/cameras/*.password "$passwd"
echo "secrets in ./secrets for: fleetsight-bridge fleetsight-admin $(cd secrets/cameras && ls | sed 's/\.password$//' | tr '\n' ' ')"
