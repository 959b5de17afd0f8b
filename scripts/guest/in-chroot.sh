#!/bin/sh
# Runs a command in a chroot with /proc and /dev mounted, as
#   in-chroot.sh DIR COMMAND [ARGS...]     (COMMAND and paths as seen inside DIR)
# The mounts are made in a private mount namespace (unshare), so they are never
# visible on the host and vanish with the process, even when it is killed with
# SIGKILL: nothing to undo. Every step execs, so the caller's PID is COMMAND's.
# Used by run-guest.sh --qemu sid (QEMU 11.1 from scripts/guest/sid-chroot.sh)
# and for the Rust virtiofsd control.
set -eu
[ $# -ge 2 ] || { echo "usage: $0 DIR COMMAND [ARGS...]" >&2; exit 2; }
[ -d "$1" ] || { echo "in-chroot: no directory $1" >&2; exit 2; }
exec unshare --mount --propagation private -- /bin/sh -c '
    dir=$1; shift
    mount -t proc proc "$dir/proc" && mount --rbind /dev "$dir/dev" && exec chroot "$dir" "$@"' in-chroot "$@"
