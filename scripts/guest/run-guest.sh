#!/usr/bin/env bash
# Boots a Linux guest under QEMU (TCG) against a vhost-user-fs backend and runs
# a check script in it. Prints RESULT lines (guest and host-side checks),
# FIGURE lines, a TIME line and a closing "N passed, N failed" line; exits 0
# only if every check passed.
#
#   run-guest.sh [--backend-cmd 'CMD'] [--request-queues N] [--timeout SECONDS]
#                [--qemu host|sid] [--device fs|dax] [--mount-opts OPTS]
#                [--check check.sh|check-dax.sh|check-truncate.sh|check-readonly.sh] [--check-timeout SECONDS]
#                [--kernel VERSION] [--submount] [--trace] [--keep]
#
# --submount mounts a small tmpfs at sub/ inside the shared directory before
# boot (with sub/marker in it); check.sh then checks that the guest sees it
# as a mount of its own (another st_dev: the backend announced it with
# FUSE_ATTR_SUBMOUNT).
#
# CMD is a shell command; in it {socket} and {dir} are replaced by the
# vhost-user socket path and the shared directory as the host sees them, and
# with --qemu sid {chroot} by the chroot and {chroot_socket}, {chroot_dir} by
# the same two paths as seen inside it (for a backend run with in-chroot.sh).
# The default backend is Debian's C virtiofsd (the control).
#
# --qemu host (default) runs Debian's qemu-system-x86_64 (7.2); --qemu sid runs
# QEMU >= 11.1 from the chroot scripts/guest/sid-chroot.sh prints (and makes
# when missing) as `chroot DIR qemu-system-x86_64 ...` via in-chroot.sh, whose
# /proc and /dev mounts live in a private mount namespace and vanish with QEMU.
# The work directory (kernel, initramfs, socket, console log, shared
# directory) is then DIR/tmp/daxfs-guest.XXXXXX; the backend still runs on the
# host. --device fs (default) is vhost-user-fs-pci with tag myfs; --device dax is
# QEMU's generic vhost-user-test-device-pci (virtio-id 26), which asks the
# backend for GET_SHMEM_CONFIG (the DAX window) and GET_CONFIG (the tag: start
# the backend with --tag myfs and --cache-size-mib N). --mount-opts goes to the
# guest's mount -t virtiofs -o (e.g. dax=always). --check picks the guest
# script (check.sh, or check-dax.sh with its host files and handshakes, or
# check-truncate.sh: the host-truncation experiment, whose host side is
# host-truncate.py, started on the guest's READY-FOR-HOST-TRUNCATE and printing
# FIGURE truncate_cycles_done / truncate_qemu_survived and RESULT host-truncate;
# DAXFS_TRUNCATE_CYCLES (default 100) and DAXFS_TRUNCATE_READERS, both, read,
# mmap or none (default both; see check-truncate.sh), tune it);
# --check-timeout bounds each check-dax.sh check inside the guest (default 300).
# --request-queues sets the request queues (default 1, all the C virtiofsd
# supports). --timeout bounds the whole boot (default 600 s): on expiry the
# check still running is reported, the backend's threads are dumped (gdb) and
# QEMU and the backend are killed. --trace writes QEMU's vhost* trace events to
# qemu-trace.log in the work directory and keeps it; --keep keeps the work
# directory (always kept, minus the big files, when a check fails). For a
# decoded log of every vhost-user message, wrap the backend in
# vhost-user-trace.py (see its header).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
backend_cmd='/usr/lib/qemu/virtiofsd --socket-path={socket} -o source={dir} -o cache=auto -o xattr'
timeout=600 queues=1 kver=${DAXFS_GUEST_KERNEL:-} trace=0 keep=0 submount=0
qemu_from=host device=fs mount_opts= check=check.sh check_timeout=300
usage="usage: $0 [--backend-cmd CMD] [--request-queues N] [--timeout S] [--qemu host|sid] [--device fs|dax] [--mount-opts OPTS] [--check NAME] [--check-timeout S] [--kernel VER] [--submount] [--trace] [--keep]"
while [ $# -gt 0 ]; do
    case $1 in
        --backend-cmd) backend_cmd=$2; shift 2 ;;
        --timeout) timeout=$2; shift 2 ;;
        --request-queues) queues=$2; shift 2 ;;
        --qemu) qemu_from=$2; shift 2 ;;
        --device) device=$2; shift 2 ;;
        --mount-opts) mount_opts=$2; shift 2 ;;
        --check) check=${2%.sh}.sh; shift 2 ;;
        --check-timeout) check_timeout=$2; shift 2 ;;
        --kernel) kver=$2; shift 2 ;;
        --trace) trace=1 keep=1; shift ;;
        --keep) keep=1; shift ;;
        --submount) submount=1; shift ;;
        *) echo "$usage" >&2; exit 2 ;;
    esac
done
case $qemu_from in host|sid) ;; *) echo "run-guest: --qemu is host or sid" >&2; exit 2 ;; esac
case $device in fs|dax) ;; *) echo "run-guest: --device is fs or dax" >&2; exit 2 ;; esac
case $check in check.sh|check-dax.sh|check-truncate.sh|check-readonly.sh) ;; *) echo "run-guest: --check is check.sh, check-dax.sh, check-truncate.sh or check-readonly.sh" >&2; exit 2 ;; esac
case $mount_opts in *[[:space:]]*) echo "run-guest: --mount-opts must not contain spaces" >&2; exit 2 ;; esac
if [ -z "$kver" ]; then
    for v in $(ls /lib/modules 2>/dev/null | sort -rV); do
        [ -f "/boot/vmlinuz-$v" ] && { kver=$v; break; }
    done
fi
[ -n "$kver" ] && [ -f "/boot/vmlinuz-$kver" ] || { echo "run-guest: no /boot/vmlinuz-* with modules (install linux-image-cloud-amd64)" >&2; exit 2; }
chroot_dir=
if [ $qemu_from = sid ]; then
    chroot_dir=$("$here/sid-chroot.sh") || { echo "run-guest: no QEMU 11.1 chroot (see above)" >&2; exit 2; }
else
    command -v qemu-system-x86_64 >/dev/null || { echo "run-guest: qemu-system-x86_64 missing (install qemu-system-x86)" >&2; exit 2; }
fi
initramfs=$("$here/build-initramfs.sh" "$kver")

work=$(mktemp -d "$chroot_dir/tmp/daxfs-guest.XXXXXX")
shared=$work/shared socket=$work/vhost.sock console=$work/console.log
mkdir "$shared"
# What QEMU sees: the same paths, relative to the chroot with --qemu sid.
kernel=/boot/vmlinuz-$kver
if [ $qemu_from = sid ]; then
    ln "$kernel" "$work/vmlinuz" 2>/dev/null || cp "$kernel" "$work/vmlinuz"
    ln "$initramfs" "$work/initramfs.cpio" 2>/dev/null || cp "$initramfs" "$work/initramfs.cpio"
    kernel=$work/vmlinuz initramfs=$work/initramfs.cpio
fi
in_qemu() { echo "${1#"$chroot_dir"}"; }
qemu_pid= backend_pid= truncate_pid= failed=0
kill_group() {  # $1: pid that leads its own process group (setsid)
    kill -KILL -- "-$1" 2>/dev/null; kill -KILL "$1" 2>/dev/null; wait "$1" 2>/dev/null || true
}
cleanup() {
    local status=$? m
    set +e
    [ $status = 0 ] || failed=1   # keep the logs of a run that ended early
    [ -n "$truncate_pid" ] && { kill "$truncate_pid" 2>/dev/null; wait "$truncate_pid" 2>/dev/null; }
    for pid in $qemu_pid $backend_pid; do kill_group "$pid"; done
    find "$shared" -type f -size +1M -delete 2>/dev/null
    rm -f "$work/vmlinuz" "$work/initramfs.cpio"
    # Nothing of ours is mounted on the host (in-chroot.sh uses a private
    # namespace); should anything be, it must not survive the work directory.
    for m in $(awk -v p="$work" 'index($5, p) == 1 { print $5 }' /proc/self/mountinfo | sort -r); do
        echo "run-guest: unmounting leftover $m"; umount -l "$m"
    done
    if [ $keep = 1 ] || [ $failed = 1 ]; then echo "run-guest: logs kept in $work"; else rm -rf --one-file-system "$work"; fi
    exit $status
}
trap cleanup EXIT
trap 'failed=1; exit 130' INT TERM

results=$work/results
result() { echo "RESULT $*" >> "$results"; }
: > "$results"

# Host side, before boot: files for the guest to read, with their sha256.
declare -A host_sum=()
host_file() {  # name size: random content
    head -c "$2" /dev/urandom > "$shared/$1"
    host_sum[$1]=$(sha256sum "$shared/$1" | cut -d' ' -f1)
}
if [ "$check" = check.sh ]; then
    host_file host-big.bin 256M
    echo written-by-host > "$shared/host-note.txt"
    if [ $submount = 1 ]; then
        # Unmounted by cleanup (every mount under the work directory).
        mkdir "$shared/sub" && mount -t tmpfs -o size=4m daxfs-submount "$shared/sub"
        echo in-submount > "$shared/sub/marker"
    fi
elif [ "$check" = check-readonly.sh ]; then
    echo written-by-host > "$shared/host-note.txt"
    host_tree_before=$(cd "$shared" && find . -printf '%p %s %m %T@\n' | sort)
elif [ "$check" = check-truncate.sh ]; then
    trunc_size=$((8 << 20))
    python3 "$here/host-truncate.py" create "$shared/trunc.bin" $trunc_size
    echo "${DAXFS_TRUNCATE_READERS:-both}" > "$shared/trunc.mode"
else
    for s in 0 1 6 4095 4096 4097 2097151 2097153; do host_file "host-$s.bin" "$s"; done
    host_file host-64m.bin 64M
fi

subst() {
    local c=$1
    c=${c//\{socket\}/$socket}
    c=${c//\{dir\}/$shared}
    c=${c//\{chroot\}/$chroot_dir}
    c=${c//\{chroot_socket\}/$(in_qemu "$socket")}
    c=${c//\{chroot_dir\}/$(in_qemu "$shared")}
    echo "$c"
}
cmd=$(subst "$backend_cmd")
echo "run-guest: backend: $cmd"
setsid bash -c "exec $cmd" > "$work/backend.log" 2>&1 &
backend_pid=$!
echo $backend_pid > "$work/backend.pid"   # for debugging a run in progress (gdb -p, kill -STOP)
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

append="console=ttyS0 quiet panic=-1 daxfs.tag=myfs daxfs.check=$check daxfs.checktimeout=$check_timeout"
[ -n "$mount_opts" ] && append+=" daxfs.mountopts=$mount_opts"
if [ $device = fs ]; then
    device_arg="vhost-user-fs-pci,chardev=char0,tag=myfs,num-request-queues=$queues"
else
    device_arg="vhost-user-test-device-pci,chardev=char0,virtio-id=26,num_vqs=$((queues + 1)),config_size=40"
fi
qemu_args=(-accel tcg -machine pc -m 1G -smp 2 -nodefaults -display none -no-reboot
    -kernel "$(in_qemu "$kernel")" -initrd "$(in_qemu "$initramfs")" -append "$append"
    -object memory-backend-memfd,id=mem,size=1G,share=on -numa node,memdev=mem
    -chardev "socket,id=char0,path=$(in_qemu "$socket")" -device "$device_arg"
    -serial "file:$(in_qemu "$console")")
[ $trace = 1 ] && qemu_args+=(-trace 'vhost_user_*' -trace 'vhost_*' -D "$(in_qemu "$work/qemu-trace.log")")
if [ $qemu_from = sid ]; then qemu=("$here/in-chroot.sh" "$chroot_dir" qemu-system-x86_64)
else qemu=(qemu-system-x86_64); fi
echo "run-guest: qemu ($qemu_from, device $device${mount_opts:+, -o $mount_opts}, $check): ${qemu[*]} ${qemu_args[*]}" > "$work/qemu.cmd"
start=$(date +%s.%N)
setsid "${qemu[@]}" "${qemu_args[@]}" > "$work/qemu.log" 2>&1 < /dev/null &
qemu_pid=$!
echo $qemu_pid > "$work/qemu.pid"

# A path the guest names, inside the shared directory.
shared_path() {
    case $1 in /*|*..*) return 1 ;; esac
    echo "$shared/$1"
}
# The host's side of the guest's handshakes (each marker acted on once).
declare -A handled=()
handshakes() {
    local line marker path off str f got
    while read -r marker path off str; do
        [ -n "${handled["$marker $path"]:-}" ] && continue
        handled["$marker $path"]=1
        case $marker in
            READY-FOR-HOST-FILE)
                echo created-while-mounted > "$shared/.host-live.tmp"
                mv "$shared/.host-live.tmp" "$shared/host-live.txt" ;;   # appears whole
            READY-FOR-HOST-MMAP-CHECK)
                f=$(shared_path "$path") || continue
                got=$(dd if="$f" bs=1 skip="$off" count=${#str} 2>/dev/null | tr -c '[:print:]' '.')
                if [ "$got" = "$str" ]; then result host-sees-guest-mmap PASS
                else result host-sees-guest-mmap FAIL "host read '$got' at $off of $path, guest stored '$str'"; fi
                : > "$f.checked" ;;
            READY-FOR-HOST-MMAP-WRITE)
                f=$(shared_path "$path") || continue
                printf '%s' "$str" | dd of="$f" bs=1 seek="$off" conv=notrunc 2>/dev/null ;;
            READY-FOR-HOST-TRUNCATE)   # in the background: the loop goes on watching QEMU
                [ "$check" = check-truncate.sh ] || continue
                f=$(shared_path "$path") || continue
                python3 "$here/host-truncate.py" run "$f" "$trunc_size" --qemu-pid "$qemu_pid" --done "${f%.bin}.done" \
                    --cycles "${DAXFS_TRUNCATE_CYCLES:-100}" --max-shrunk $((4 << 20)) --figures "$work/host-figures" --log "$work/truncate.log" \
                    > "$work/truncate.out" 2>&1 &
                truncate_pid=$! ;;
        esac
    done < <(tr -d '\r' 2>/dev/null < "$console" | grep -E '^READY-FOR-HOST-[A-Z-]+( |$)')
}
# Where everything stands, for a hang: the backend's threads (gdb), QEMU's and
# the backend's kernel-side waits.
dump_hang() {
    local pid t
    {
        for pid in $backend_pid $qemu_pid; do
            echo "== pid $pid: $(tr '\0' ' ' < /proc/$pid/cmdline 2>/dev/null | cut -c1-200)"
            for t in /proc/$pid/task/*; do
                echo "  tid ${t##*/} $(cat $t/comm 2>/dev/null) state=$(awk '{print $3}' $t/stat 2>/dev/null) wchan=$(cat $t/wchan 2>/dev/null) syscall=$(cut -d' ' -f1 $t/syscall 2>/dev/null)"
            done
        done
        if [ -n "$backend_pid" ] && command -v gdb >/dev/null; then
            echo "== gdb backtraces of the backend ($backend_pid)"
            timeout 120 gdb -p "$backend_pid" -batch -nx -ex 'set pagination off' -ex 'thread apply all bt 25' 2>&1 |
                grep -E '^(Thread|#)' | cut -c1-240
        fi
    } > "$work/hang.txt" 2>&1 || true
}

deadline=$(( $(date +%s) + timeout )) timed_out=0
while kill -0 $qemu_pid 2>/dev/null; do
    handshakes
    if [ "$(date +%s)" -ge $deadline ]; then timed_out=1; dump_hang; kill_group $qemu_pid; break; fi
    sleep 0.2
done
qemu_status=killed
[ $timed_out = 1 ] || { wait $qemu_pid 2>/dev/null && qemu_status=0 || qemu_status=$?; }
qemu_pid=
# The truncation loop stops by itself once QEMU has gone (within a cycle).
if [ -n "$truncate_pid" ]; then wait "$truncate_pid" 2>/dev/null || true; truncate_pid=; fi
elapsed=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')

# The guest's own results, then the host-side checks.
tr -d '\r' < "$console" | grep '^RESULT ' >> "$results" || true
running=$(tr -d '\r' < "$console" | awk '$1 == "RUN" { r = $2 } $1 == "RESULT" && $2 == r { r = "" } END { print r }')
if [ $timed_out = 1 ]; then
    result guest-finished FAIL "timed out after $timeout s${running:+, during check $running}"
    [ -n "$running" ] && result "$running" FAIL "hung: no result before the $timeout s timeout (see hang.txt)"
elif ! grep -q GUEST-DONE "$console"; then result guest-finished FAIL "qemu exited ($qemu_status) before GUEST-DONE${running:+, during check $running}"
else result guest-finished PASS; fi
if [ $timed_out = 1 ]; then result qemu-exit FAIL "killed at the timeout"
elif [ "$qemu_status" = 0 ]; then result qemu-exit PASS
else
    why=$qemu_status; [ "$qemu_status" -gt 128 ] && why="$qemu_status (signal $(kill -l $((qemu_status - 128)) 2>/dev/null))"
    result qemu-exit FAIL "status $why: $(tail -2 "$work/qemu.log" | tr '\n' ' ')"
fi

guest_sum() { tr -d '\r' < "$console" | awk -v f="$1" '$1 == "SUM" && $2 == f { print $3 }'; }
if [ "$check" = check.sh ]; then
    if [ "$(guest_sum host-big.bin)" = "${host_sum[host-big.bin]}" ]; then result host-big-sum-matches PASS
    else result host-big-sum-matches FAIL "guest read '$(guest_sum host-big.bin)', host wrote ${host_sum[host-big.bin]}"; fi
    sum=$(sha256sum "$shared/guest-big.bin" 2>/dev/null | cut -d' ' -f1 || true)
    if [ -n "$sum" ] && [ "$(guest_sum guest-big.bin)" = "$sum" ]; then result guest-big-sum-matches PASS
    else result guest-big-sum-matches FAIL "guest wrote '$(guest_sum guest-big.bin)', host read '$sum'"; fi
    if [ "$(cat "$shared/guest-note.txt" 2>/dev/null)" = written-by-guest ]; then result host-sees-guest-file PASS
    else result host-sees-guest-file FAIL "guest-note.txt missing or wrong"; fi
elif [ "$check" = check-readonly.sh ]; then
    if [ "$(cd "$shared" && find . -printf '%p %s %m %T@\n' | sort)" = "$host_tree_before" ]; then result ro-share-unchanged PASS
    else result ro-share-unchanged FAIL "the share changed: $(cd "$shared" && find . | tr '\n' ' ')"; fi
elif [ "$check" = check-truncate.sh ]; then
    if [ -s "$work/host-figures" ]; then grep '^RESULT ' "$work/host-figures" >> "$results"
    else result host-truncate FAIL "no host loop (no READY-FOR-HOST-TRUNCATE?): $(tail -2 "$work/truncate.out" 2>/dev/null | tr '\n' ' ')"; fi
else
    # host-sum-<size>: every SUM the guest printed for host-<size>.bin (or @n) is the host's.
    for f in $(printf '%s\n' "${!host_sum[@]}" | sort -V); do
        label=${f#host-}; label=${label%.bin}
        sums=$(tr -d '\r' < "$console" | awk -v f="$f" '$1 == "SUM" && ($2 == f || index($2, f "@") == 1) { print $3 }')
        want=1; [ "$f" = host-64m.bin ] && want=2
        n=$(echo "$sums" | grep -c . || true)
        wrong=$(echo "$sums" | grep -v -x -c "${host_sum[$f]}" || true)
        if [ "$n" -ge $want ] && [ "$wrong" = 0 ]; then result "host-sum-$label" PASS "$n read(s)"
        elif [ "$n" = 0 ]; then result "host-sum-$label" FAIL "guest printed no SUM for $f"
        else result "host-sum-$label" FAIL "$wrong of $n guest reads of $f differ from the host's ${host_sum[$f]:0:16}… (need $want)"; fi
    done
    sum=$(sha256sum "$shared/guest-32m.bin" 2>/dev/null | cut -d' ' -f1 || true)
    if [ -n "$sum" ] && [ "$(guest_sum guest-32m.bin)" = "$sum" ]; then result guest-32m-sum-matches PASS
    else result guest-32m-sum-matches FAIL "guest wrote '$(guest_sum guest-32m.bin)', host read '$sum'"; fi
    grep -q '^RESULT host-sees-guest-mmap ' "$results" ||
        result host-sees-guest-mmap FAIL "the guest never asked (READY-FOR-HOST-MMAP-CHECK)"
fi

# The backend should exit by itself once the frontend has gone.
backend_status=running
for _ in $(seq 100); do kill -0 $backend_pid 2>/dev/null || break; sleep 0.1; done
if ! kill -0 $backend_pid 2>/dev/null; then
    wait $backend_pid && backend_status=0 || backend_status=$?
    backend_pid=
elif [ $timed_out = 0 ]; then
    dump_hang
fi
if [ "$backend_status" = 0 ]; then result backend-exit PASS
else result backend-exit FAIL "status $backend_status 10 s after qemu exited"; fi

cat "$results"
tr -d '\r' < "$console" | grep '^FIGURE ' || true
[ -s "$work/host-figures" ] && grep '^FIGURE ' "$work/host-figures"
# check-truncate.sh's readers: their last counts (all there is when the VM died).
[ "$check" = check-truncate.sh ] && tr -d '\r' < "$console" | awk '$1 == "PROGRESS" { last[$2] = $0 } END { for (r in last) print last[r] }' | sort
passed=$(grep -c ' PASS' "$results" || true)
failures=$(grep -c ' FAIL' "$results" || true)
echo "TIME boot-to-poweroff $elapsed s"
if [ "$failures" != 0 ] || [ "$passed" = 0 ]; then
    failed=1
    echo "--- qemu command ---"; cat "$work/qemu.cmd"
    echo "--- console (last 60 lines) ---"; tr -d '\r' < "$console" | tail -60
    echo "--- backend log (last 20 lines) ---"; tail -20 "$work/backend.log"
    echo "--- qemu log ---"; tail -20 "$work/qemu.log"
    if [ -s "$work/hang.txt" ]; then echo "--- threads at the hang (hang.txt, first 80 lines) ---"; head -80 "$work/hang.txt"; fi
fi
echo "$passed passed, $failures failed"
[ $failed = 0 ]
