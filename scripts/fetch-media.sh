#!/usr/bin/env bash
# Sample media for tests, the demo and benchmarks, from Debian packages
# (opencv-doc: Apache-2.0/BSD-3 sample data; darknet: public domain test
# images). Fetched once at set-up time with apt, never at run time.
set -euo pipefail
dest="${1:-$(dirname "$0")/../.services/media}"
mkdir -p "$dest"
dest=$(cd "$dest" && pwd)  # absolute: the copy below runs from a temporary folder
need=(vtest.avi basketball1.png messi5.jpg person.jpg horses.jpg)
missing=0
for f in "${need[@]}"; do [ -s "$dest/$f" ] || missing=1; done
[ "$missing" -eq 0 ] && exit 0

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
chmod 777 "$work"  # apt's sandbox user writes the downloads
apt-get download opencv-doc darknet >/dev/null 2>&1 || { apt-get update -qq && apt-get download opencv-doc darknet >/dev/null; }
for deb in *.deb; do dpkg -x "$deb" x; done
cp x/usr/share/doc/opencv-doc/examples/data/{vtest.avi,basketball1.png,messi5.jpg} "$dest/"
cp x/usr/share/darknet/data/{person.jpg,horses.jpg} "$dest/"
echo "sample media in $dest: ${need[*]}"
