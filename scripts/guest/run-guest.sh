#!/usr/bin/env bash
# Boots a Linux guest under QEMU (TCG) against a vhost-user-fs backend and runs
# check.sh in it. Prints RESULT lines (guest and host-side checks), a TIME line
# and a closing "N passed, N failed" line; exits 0 only if every check passed.
#
#   run-guest.sh [--backend-cmd 'CMD'] [--request-queues N] [--timeout SECONDS]
#                [--kernel VERSION] [--trace] [--keep]
#
# CMD is a shell command; {socket} and {dir} in it are replaced by the
# vhost-user socket path and the shared directory. The default is Debian's C
# virtiofsd (the control). --request-queues sets num-request-queues of
# vhost-user-fs-pci (default 1, all the C virtiofsd supports). --trace writes
# QEMU's vhost* trace events to qemu-trace.log in the work directory and keeps
# it; --keep keeps the work directory (always kept, minus the big files, when
# a check fails). For a decoded log of every vhost-user message, wrap the
# backend in vhost-user-trace.py (see its header).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
backend_cmd='/usr/lib/qemu/virtiofsd --socket-path={socket} -o source={dir} -o cache=auto -o xattr'
timeout=600 queues=1 kver=${DAXFS_GUEST_KERNEL:-} trace=0 keep=0
while [ $# -gt 0 ]; do
    case $1 in
        --backend-cmd) backend_cmd=$2; shift 2 ;;
        --timeout) timeout=$2; shift 2 ;;
        --request-queues) queues=$2; shift 2 ;;
        --kernel) kver=$2; shift 2 ;;
        --trace) trace=1 keep=1; shift ;;
        --keep) keep=1; shift ;;
        *) echo "usage: $0 [--backend-cmd CMD] [--request-queues N] [--timeout S] [--kernel VER] [--trace] [--keep]" >&2; exit 2 ;;
    esac
done
if [ -z "$kver" ]; then
    for v in $(ls /lib/modules 2>/dev/null | sort -rV); do
        [ -f "/boot/vmlinuz-$v" ] && { kver=$v; break; }
    done
fi
[ -n "$kver" ] && [ -f "/boot/vmlinuz-$kver" ] || { echo "run-guest: no /boot/vmlinuz-* with modules (install linux-image-cloud-amd64)" >&2; exit 2; }
command -v qemu-system-x86_64 >/dev/null || { echo "run-guest: qemu-system-x86_64 missing (install qemu-system-x86)" >&2; exit 2; }
initramfs=$("$here/build-initramfs.sh" "$kver")

work=$(mktemp -d /tmp/daxfs-guest.XXXXXX)
shared=$work/shared socket=$work/vhost.sock console=$work/console.log
mkdir "$shared"
qemu_pid= backend_pid= failed=0
cleanup() {
    local status=$?
    set +e
    for pid in $qemu_pid $backend_pid; do kill -KILL "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; done
    rm -f "$shared"/*.bin
    if [ $keep = 1 ] || [ $failed = 1 ]; then echo "run-guest: logs kept in $work"; else rm -rf "$work"; fi
    exit $status
}
trap cleanup EXIT
trap 'failed=1; exit 130' INT TERM

results=$work/results
result() { echo "RESULT $*" >> "$results"; }

# Host side, before boot: a 256 MiB file for the guest to checksum, a note to read.
head -c 256M /dev/urandom > "$shared/host-big.bin"
host_big_sum=$(sha256sum "$shared/host-big.bin" | cut -d' ' -f1)
echo written-by-host > "$shared/host-note.txt"

cmd=${backend_cmd//\{socket\}/$socket}
cmd=${cmd//\{dir\}/$shared}
echo "run-guest: backend: $cmd"
bash -c "exec $cmd" > "$work/backend.log" 2>&1 &
backend_pid=$!
for _ in $(seq 100); do
    [ -S "$socket" ] && break
    kill -0 $backend_pid 2>/dev/null || break
    sleep 0.1
done
if [ ! -S "$socket" ]; then
    failed=1
    echo "RESULT backend-start FAIL no socket at $socket after 10 s"; tail -20 "$work/backend.log"
    echo "0 passed, 1 failed"; exit 1
fi

qemu_args=(-accel tcg -machine pc -m 1G -smp 2 -nodefaults -display none -no-reboot
    -kernel "/boot/vmlinuz-$kver" -initrd "$initramfs"
    -append "console=ttyS0 quiet panic=-1 daxfs.tag=myfs"
    -object memory-backend-memfd,id=mem,size=1G,share=on -numa node,memdev=mem
    -chardev "socket,id=char0,path=$socket" -device "vhost-user-fs-pci,chardev=char0,tag=myfs,num-request-queues=$queues"
    -serial "file:$console")
[ $trace = 1 ] && qemu_args+=(-trace 'vhost_user_*' -trace 'vhost_*' -D "$work/qemu-trace.log")
start=$(date +%s.%N)
qemu-system-x86_64 "${qemu_args[@]}" > "$work/qemu.log" 2>&1 < /dev/null &
qemu_pid=$!

deadline=$(( $(date +%s) + timeout )) host_file_done=0 timed_out=0
while kill -0 $qemu_pid 2>/dev/null; do
    if [ $host_file_done = 0 ] && grep -q READY-FOR-HOST-FILE "$console" 2>/dev/null; then
        echo created-while-mounted > "$shared/.host-live.tmp"
        mv "$shared/.host-live.tmp" "$shared/host-live.txt"   # appears whole
        host_file_done=1
    fi
    if [ "$(date +%s)" -ge $deadline ]; then timed_out=1; kill -KILL $qemu_pid; break; fi
    sleep 0.2
done
wait $qemu_pid 2>/dev/null && qemu_status=0 || qemu_status=$?
qemu_pid=
elapsed=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')

# The guest's own results, then the host-side checks.
tr -d '\r' < "$console" | grep '^RESULT ' >> "$results" || true
if [ $timed_out = 1 ]; then result guest-finished FAIL "timed out after $timeout s"
elif ! grep -q GUEST-DONE "$console"; then result guest-finished FAIL "qemu exited ($qemu_status) before GUEST-DONE"
else result guest-finished PASS; fi

guest_sum() { tr -d '\r' < "$console" | awk -v f="$1" '$1 == "SUM" && $2 == f { print $3 }'; }
if [ "$(guest_sum host-big.bin)" = "$host_big_sum" ]; then result host-big-sum-matches PASS
else result host-big-sum-matches FAIL "guest read '$(guest_sum host-big.bin)', host wrote $host_big_sum"; fi
sum=$(sha256sum "$shared/guest-big.bin" 2>/dev/null | cut -d' ' -f1 || true)
if [ -n "$sum" ] && [ "$(guest_sum guest-big.bin)" = "$sum" ]; then result guest-big-sum-matches PASS
else result guest-big-sum-matches FAIL "guest wrote '$(guest_sum guest-big.bin)', host read '$sum'"; fi
if [ "$(cat "$shared/guest-note.txt" 2>/dev/null)" = written-by-guest ]; then result host-sees-guest-file PASS
else result host-sees-guest-file FAIL "guest-note.txt missing or wrong"; fi

# The backend should exit by itself once the frontend has gone.
backend_status=running
for _ in $(seq 100); do kill -0 $backend_pid 2>/dev/null || break; sleep 0.1; done
if ! kill -0 $backend_pid 2>/dev/null; then
    wait $backend_pid && backend_status=0 || backend_status=$?
    backend_pid=
fi
if [ "$backend_status" = 0 ]; then result backend-exit PASS
else result backend-exit FAIL "status $backend_status 10 s after qemu exited"; fi

cat "$results"
passed=$(grep -c ' PASS' "$results" || true)
failures=$(grep -c ' FAIL' "$results" || true)
echo "TIME boot-to-poweroff $elapsed s"
if [ "$failures" != 0 ] || [ "$passed" = 0 ]; then
    failed=1
    echo "--- console (last 60 lines) ---"; tr -d '\r' < "$console" | tail -60
    echo "--- backend log (last 20 lines) ---"; tail -20 "$work/backend.log"
    echo "--- qemu log ---"; tail -20 "$work/qemu.log"
fi
echo "$passed passed, $failures failed"
[ $failed = 0 ]
