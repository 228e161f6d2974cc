#!/bin/sh
# Make a minimal Debian rootfs tar with mmdebstrap (Debian package mmdebstrap), for use as a base:
#   examples/debian-python/make-rootfs.sh /tmp/debian-rootfs.tar
#   builder import /tmp/debian-rootfs.tar debian:bookworm-local
# SOURCE_DATE_EPOCH makes mmdebstrap's output reproducible for a fixed package set.
set -eu
out=${1:?usage: $0 OUTPUT.tar}
suite=${SUITE:-bookworm}
command -v mmdebstrap >/dev/null || { echo "mmdebstrap missing: apt-get install mmdebstrap" >&2; exit 1; }
exec mmdebstrap --variant=minbase --include=ca-certificates --format=tar "$suite" "$out"
