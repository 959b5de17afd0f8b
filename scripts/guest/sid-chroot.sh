#!/usr/bin/env bash
# Prints the path of a Debian sid chroot with QEMU >= 11.1 (qemu-system-x86)
# and the Rust virtiofsd, creating it when missing with
#   debootstrap --variant=minbase --include=qemu-system-x86,virtiofsd sid DIR
# (about 3 minutes and 500 MB). DIR is DAXFS_SID_CHROOT, default
# /var/cache/daxfs/sid; DAXFS_SID_MIRROR picks the mirror (default
# http://deb.debian.org/debian). The chroot is built in DIR.partial and renamed
# into place only once its QEMU answers with a version >= 11.1, so a half-made
# chroot is never used; DIR.lock (flock) makes concurrent callers wait for one
# build. Exits non-zero with one plain line on stderr when it cannot be made.
set -euo pipefail
dir=${DAXFS_SID_CHROOT:-/var/cache/daxfs/sid}
dir=${dir%/}
mirror=${DAXFS_SID_MIRROR:-http://deb.debian.org/debian}
want_major=11 want_minor=1

fail() { echo "sid-chroot: $*" >&2; exit 1; }

# "11.1.3" from `QEMU emulator version 11.1.3 (Debian 1:11.1.3+ds-1)`, or nothing.
qemu_version() {
    [ -x "$1/usr/bin/qemu-system-x86_64" ] || return 0
    chroot "$1" qemu-system-x86_64 --version 2>/dev/null |
        sed -n 's/^QEMU emulator version \([0-9][0-9]*\.[0-9][0-9]*\(\.[0-9]*\)\?\).*/\1/p' | head -1
}
new_enough() {  # $1: version
    local major minor
    IFS=. read -r major minor _ <<< "$1"
    [ -n "$major" ] && { [ "$major" -gt $want_major ] || { [ "$major" -eq $want_major ] && [ "${minor:-0}" -ge $want_minor ]; }; }
}
usable() { local v; v=$(qemu_version "$1"); [ -n "$v" ] && new_enough "$v"; }

# Mount points at or below $1 (debootstrap mounts /proc and /sys in its target;
# a killed build can leave them behind).
mounts_under() {
    awk -v p="$1" '{ m = $5; gsub(/\\040/, " ", m); if (m == p || index(m, p "/") == 1) print m }' /proc/self/mountinfo
}
# Removes a directory tree that nothing is mounted in, never crossing into another filesystem.
remove_tree() {
    local m
    [ -e "$1" ] || return 0
    for m in $(mounts_under "$1" | sort -r); do umount -l "$m" 2>/dev/null || true; done
    [ -z "$(mounts_under "$1")" ] || fail "cannot remove $1: still mounted: $(mounts_under "$1" | tr '\n' ' ')"
    rm -rf --one-file-system "$1"
}

[ "$(id -u)" = 0 ] || fail "needs root (debootstrap and chroot)"
if usable "$dir"; then echo "$dir"; exit 0; fi

command -v flock >/dev/null || fail "flock is missing (apt-get install util-linux)"
mkdir -p "$(dirname "$dir")"
exec 9> "$dir.lock"
flock -w 1800 9 || fail "waited 30 min for $dir.lock (another build?)"
if usable "$dir"; then echo "$dir"; exit 0; fi   # someone else built it meanwhile

command -v debootstrap >/dev/null || fail "debootstrap is missing (apt-get install debootstrap)"
partial=$dir.partial log=$dir.partial.log
remove_tree "$partial"
echo "sid-chroot: building $dir with debootstrap from $mirror (a few minutes; log in $log)" >&2
if ! debootstrap --variant=minbase --include=qemu-system-x86,virtiofsd sid "$partial" "$mirror" > "$log" 2>&1; then
    tail -5 "$log" >&2
    remove_tree "$partial"
    fail "debootstrap failed (log: $log)"
fi
for m in $(mounts_under "$partial" | sort -r); do umount "$m" 2>/dev/null || umount -l "$m"; done
version=$(qemu_version "$partial")
if [ -z "$version" ] || ! new_enough "$version"; then
    remove_tree "$partial"
    fail "sid's QEMU is '${version:-missing}', need >= $want_major.$want_minor"
fi
[ -x "$partial/usr/libexec/virtiofsd" ] || echo "sid-chroot: warning: no virtiofsd in the chroot" >&2
if [ -e "$dir" ]; then   # an unusable old chroot (older QEMU, broken): replace it
    remove_tree "$dir"
fi
mv "$partial" "$dir"
rm -f "$log"
echo "sid-chroot: QEMU $version in $dir" >&2
echo "$dir"
