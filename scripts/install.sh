#!/usr/bin/env bash
# Installs daxfs for VM platforms: builds the release binaries, puts
# daxfs-virtiofsd at /usr/local/libexec (what libvirt's <binary path=.../>
# names) and daxfs at /usr/local/bin, and the vhost-user descriptor that
# lets QEMU and libvirt find the backend at
# /usr/share/qemu/vhost-user/60-daxfs-virtiofsd.json (after Debian's
# 50-qemu-virtiofsd.json, so it is not the default unless asked for by path).
#   scripts/install.sh [--prefix DIR] [--descriptors DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
prefix=/usr/local descriptors=/usr/share/qemu/vhost-user
while [ $# -gt 0 ]; do
    case $1 in
        --prefix) prefix=$2; shift 2 ;;
        --descriptors) descriptors=$2; shift 2 ;;
        *) echo "usage: $0 [--prefix DIR] [--descriptors DIR]" >&2; exit 2 ;;
    esac
done
swift build -c release --product daxfs
swift build -c release --product daxfs-virtiofsd
install -D -m 0755 .build/release/daxfs "$prefix/bin/daxfs"
install -D -m 0755 .build/release/daxfs-virtiofsd "$prefix/libexec/daxfs-virtiofsd"
sed "s|/usr/local/libexec/daxfs-virtiofsd|$prefix/libexec/daxfs-virtiofsd|" contrib/vhost-user/60-daxfs-virtiofsd.json |
    install -D -m 0644 /dev/stdin "$descriptors/60-daxfs-virtiofsd.json"
echo "installed $prefix/bin/daxfs, $prefix/libexec/daxfs-virtiofsd and $descriptors/60-daxfs-virtiofsd.json"
"$prefix/libexec/daxfs-virtiofsd" --print-capabilities
