#!/bin/sh
# The guest's checks against a virtio-fs mounted with a DAX window
# (run-guest.sh --device dax --mount-opts dax=always --check check-dax.sh).
# `sh check-dax.sh DIR` runs every check in its own `sh -e` and prints
# RESULT <name> PASS|FAIL [detail], like check.sh. A check that runs longer
# than daxfs.checktimeout= seconds (kernel command line, default 300) fails:
# the guest's blocked tasks (sysrq w) are printed as HANG lines, the check's
# processes are killed and the next check runs.
# Lines the host acts on (run-guest.sh):
#   SUM <file>[@n] <sha256>          compared with what the host wrote or reads
#   READY-FOR-HOST-MMAP-CHECK <path> <offset> <string>
#       the host reads <string> at <offset> of <path> (relative to the shared
#       directory), reports RESULT host-sees-guest-mmap and creates <path>.checked
#   READY-FOR-HOST-MMAP-WRITE <path> <offset> <string>
#       the host writes <string> at <offset> of <path>
#   FIGURE <name> <value>            a measurement (not a check)
# The host creates, before boot: host-<size>.bin for sizes 0 1 6 4095 4096 4097
# 2097151 2097153 and host-64m.bin (64 MiB, larger than the 32 MiB window the
# tests use), and keeps their sha256.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin LD_LIBRARY_PATH=/lib/x86_64-linux-gnu
MB=1048576
SMALL_SIZES="0 1 6 4095 4096 4097 2097151 2097153"
eq() { [ "$1" = "$2" ] || { echo "got '$1', expected '$2'"; exit 1; }; }
size() { stat -c %s "$1"; }
console() { echo "$*" > /dev/console; }
drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches; }
now() { daxtool now; }
# patch FILE OFFSET LEN REF: writes LEN random bytes at OFFSET of FILE (no
# truncation) and the same bytes into the reference copy REF.
patch() {
    head -c "$3" /dev/urandom > /tmp/patch
    dd if=/tmp/patch of="$1" bs=1 seek="$2" conv=notrunc 2>/dev/null
    dd if=/tmp/patch of="$4" bs=1 seek="$2" conv=notrunc 2>/dev/null
}
same() { cmp "$1" "$2" || { echo "$1 differs from the reference ($(size "$1") vs $(size "$2") bytes)"; exit 1; }; }
# wait_for FILE SECONDS: polls until FILE exists (a lookup, no read).
wait_for() {
    i=0
    while [ ! -e "$1" ] && [ $i -lt $(($2 * 10)) ]; do usleep 100000; i=$((i + 1)); done
    [ -e "$1" ] || { echo "$1 did not appear within $2 s"; exit 1; }
}

t_window() {
    line=$(dmesg | grep -i 'Cache len' | tail -1)
    [ -n "$line" ] || { echo "no 'Cache len' in dmesg: $(dmesg | grep -i virtiofs | tail -3 | tr '\n' ' ')"; exit 1; }
    echo "$line" | sed 's/.*Cache len/Cache len/'
    case ${DAXFS_MOUNTOPTS:-} in
        *dax*) grep ' /mnt virtiofs ' /proc/mounts | grep -q dax ||
                   { echo "/proc/mounts has no dax: $(grep ' /mnt ' /proc/mounts)"; exit 1; } ;;
    esac
}
t_statx_dax() {
    printf 'dax?\n' > statx.txt
    out=$(daxtool statx statx.txt); echo "guest file: $out"
    case $out in dax=1*) ;; *) echo "STATX_ATTR_DAX not set on a new file: $out"; exit 1 ;; esac
    out=$(daxtool statx ../host-64m.bin); echo "host file: $out"
    case $out in dax=1*) ;; *) echo "STATX_ATTR_DAX not set on host-64m.bin: $out"; exit 1 ;; esac
}
t_small_reads() {
    bad=
    for s in $SMALL_SIZES; do
        f=../host-$s.bin
        got=$(size "$f") || { bad="$bad $s:stat"; continue; }
        [ "$got" = "$s" ] || { bad="$bad $s:size=$got"; continue; }
        if sum=$(sha256sum "$f" 2>/tmp/err); then
            console "SUM host-$s.bin $(echo "$sum" | cut -d' ' -f1)"
        else
            bad="$bad $s:$(tr '\n' ' ' < /tmp/err)"
        fi
    done
    [ -z "$bad" ] || { echo "failed:$bad"; exit 1; }
}
t_big_read_twice() {
    eq "$(size ../host-64m.bin)" $((64 * MB))
    a=$(sha256sum ../host-64m.bin | cut -d' ' -f1); console "SUM host-64m.bin@1 $a"
    b=$(sha256sum ../host-64m.bin | cut -d' ' -f1); console "SUM host-64m.bin@2 $b"
    eq "$b" "$a"
}
t_overwrite_in_size() {
    head -c $((5 * MB + 5)) /dev/urandom > /tmp/ref
    cp /tmp/ref ow.bin
    drop_caches
    same ow.bin /tmp/ref
    patch ow.bin 0 1 /tmp/ref
    patch ow.bin 4095 2 /tmp/ref
    patch ow.bin 8000 12000 /tmp/ref
    patch ow.bin $((2 * MB - 3)) 7 /tmp/ref          # across the first 2 MiB range boundary
    patch ow.bin $((4 * MB - 1)) 3 /tmp/ref
    patch ow.bin $((5 * MB - 2)) 7 /tmp/ref          # up to the last byte
    eq "$(size ow.bin)" $((5 * MB + 5))
    same ow.bin /tmp/ref
    drop_caches
    same ow.bin /tmp/ref
    rm -f ow.bin /tmp/ref
}
t_extending_writes() {
    : > ext.bin; : > /tmp/ref
    for n in 1 4095 1 4096 2093056 5 3000000; do   # crosses 4 KiB and 2 MiB boundaries
        head -c $n /dev/urandom > /tmp/patch
        cat /tmp/patch >> ext.bin; cat /tmp/patch >> /tmp/ref
    done
    patch ext.bin $((6 * MB)) 100 /tmp/ref           # past EOF: a hole, then data
    truncate -s $((7 * MB + 1)) ext.bin; truncate -s $((7 * MB + 1)) /tmp/ref
    patch ext.bin $((7 * MB - 10)) 20 /tmp/ref       # in size after the truncate, then past it
    eq "$(size ext.bin)" "$(size /tmp/ref)"
    same ext.bin /tmp/ref
    drop_caches
    same ext.bin /tmp/ref
    rm -f ext.bin /tmp/ref
}
t_write_32m_fsync() {
    head -c $((32 * MB)) /dev/urandom > /tmp/g32
    dd if=/tmp/g32 of=../guest-32m.bin bs=$MB conv=fsync 2>/dev/null
    drop_caches
    eq "$(size ../guest-32m.bin)" $((32 * MB))
    same ../guest-32m.bin /tmp/g32
    console "SUM guest-32m.bin $(sha256sum ../guest-32m.bin | cut -d' ' -f1)"
    rm -f /tmp/g32
}
t_mmap_write_for_host() {
    dd if=/dev/zero of=mm-guest.bin bs=4096 count=2 2>/dev/null
    daxtool mmap-write mm-guest.bin 4100 GUEST-MMAP-MARK      # no msync: DAX stores reach the host file
    eq "$(daxtool mmap-read mm-guest.bin 4100 15)" GUEST-MMAP-MARK
    console "READY-FOR-HOST-MMAP-CHECK t/mm-guest.bin 4100 GUEST-MMAP-MARK"
    wait_for mm-guest.bin.checked 60
    echo "host checked (see host-sees-guest-mmap)"
}
t_host_write_in_mapping() {
    dd if=/dev/zero of=mm-host.bin bs=4096 count=2 2>/dev/null
    daxtool mmap-poll mm-host.bin 100 HOST-MMAP-MARK 60 "READY-FOR-HOST-MMAP-WRITE t/mm-host.bin 100 HOST-MMAP-MARK"
}
fio_run() {  # fio arguments...
    fio --output=/tmp/fio.out --verify_fatal=1 --verify_state_save=0 "$@" ||
        { tail -20 /tmp/fio.out; exit 1; }
    if grep -q "verify: bad" /tmp/fio.out; then tail -20 /tmp/fio.out; exit 1; fi
    grep -E '^ *(read|write):' /tmp/fio.out | tr -s ' ' | head -2
}
t_fio_psync() {
    fio_run --name=randrw --filename=fio.dat --size=32M --rw=randrw --bs=4k --ioengine=psync --verify=crc32c
    rm -f fio.dat
}
t_fio_mmap() {
    fio_run --name=mmap --filename=fio-mmap.dat --size=16M --rw=randrw --bs=4k --ioengine=mmap --verify=crc32c
    rm -f fio-mmap.dat
}
t_fio_2jobs() {
    # two processes, 64 MiB in all (twice the window): SETUPMAPPING and reclaim run side by side
    fio_run --name=twojobs --directory=. --numjobs=2 --size=32M --rw=randrw --bs=64k --ioengine=psync \
        --verify=crc32c
    rm -f twojobs.*
}
# read_time FILE: seconds for the second of two `cat FILE > /dev/null`.
read_time() {
    cat "$1" > /dev/null || return 1
    a=$(now); cat "$1" > /dev/null || return 1; b=$(now)
    awk -v a="$a" -v b="$b" 'BEGIN { printf "%.3f", b - a }'
}
t_figure_dax_read() {
    s=$(read_time ../host-64m.bin); console "FIGURE dax_read_64m_s $s"; echo "${s}s"
}
t_umount_dax() {
    cd /
    umount /mnt
    if grep -q ' /mnt ' /proc/mounts; then echo "/mnt still mounted"; exit 1; fi
}
t_mount_nodax() {
    mount -t virtiofs -o dax=never "${DAXFS_TAG:-myfs}" /mnt
    grep ' /mnt virtiofs ' /proc/mounts | tr -s ' ' | cut -d' ' -f4
    eq "$(daxtool statx /mnt/host-64m.bin | cut -d' ' -f1)" dax=0
}
t_figure_nodax_read() {
    s=$(read_time ../host-64m.bin); console "FIGURE nodax_read_64m_s $s"; echo "${s}s"
}
t_dmesg_clean() {
    if dmesg | grep -E 'BUG:|WARNING:|Oops|blocked for more than|virtio_fs.*(error|fail)|fuse.*(error|fail)' > /tmp/dm; then
        echo "kernel log: $(head -5 /tmp/dm | tr '\n' ' ')"; exit 1
    fi
}

# The check's processes, as "pid comm state": $1 and its descendants (fio's
# job processes call setsid, so a process group is not enough), and anything
# else in its session.
check_procs() {   # (cat: awk would stop at a process that has just gone)
    cat /proc/[0-9]*/stat 2>/dev/null | awk -v r="$1" '{ gsub(/[()]/, "", $2); pid[NR] = $1; ppid[$1] = $4; sid[$1] = $6; line[$1] = $1 " " $2 " " $3 }
        END { for (i = 1; i <= NR; i++) { p = pid[i]; q = p; n = 0
                  while (q != "" && q != r && q > 1 && n++ < 64) q = ppid[q]
                  if (q == r || sid[p] == r) print line[p] } }'
}
# The watchdog of one check: after LIMIT seconds, stop the check's processes,
# print what they wait for (kernel stacks, sysrq w, new kernel messages) as
# HANG lines on the console, and kill them all.
watch_check() {  # pid name limit dmesg-lines-before
    sleep "$3"
    kill -0 "$1" 2>/dev/null || exit 0
    : > /tmp/timed-out
    for _ in 1 2; do kill -STOP $(check_procs "$1" | cut -d' ' -f1) 2>/dev/null; done
    check_procs "$1" | cut -d' ' -f1 > /tmp/timed-out
    echo w > /proc/sysrq-trigger
    {
        check_procs "$1" | while read -r p comm state; do
            echo "pid $p $comm state $state wchan $(cat /proc/$p/wchan 2>/dev/null)"
            sed 's/^/    /' /proc/$p/stack 2>/dev/null | head -20
        done
        dmesg | tail -n +$(($4 + 1)) | grep -v 'drop_caches' | tail -n 60
    } | sed "s/^/HANG $2: /" > /dev/console
    kill -9 $(cat /tmp/timed-out) 2>/dev/null
}

if [ "$1" = --watch ]; then
    shift; watch_check "$@"; exit 0
fi
if [ "$1" = --one ]; then
    set -e
    cd "$2/t" 2>/dev/null || cd /   # after a failed remount: the check fails on its own paths
    "t_$3"
    exit 0
fi

root=${1:-/mnt}
limit=300
for word in $(cat /proc/cmdline); do
    case $word in daxfs.checktimeout=*) limit=${word#daxfs.checktimeout=} ;; esac
done
rm -rf "$root/t"; mkdir "$root/t" || { echo "RESULT setup FAIL cannot mkdir $root/t"; exit 0; }
for name in window statx_dax small_reads big_read_twice overwrite_in_size extending_writes \
            write_32m_fsync mmap_write_for_host host_write_in_mapping fio_psync fio_mmap fio_2jobs \
            figure_dax_read umount_dax mount_nodax figure_nodax_read dmesg_clean; do
    start=$(cut -d' ' -f1 /proc/uptime)
    echo "RUN $name"
    rm -f /tmp/timed-out
    # Its own session, so a timeout can kill every process the check started.
    setsid sh /check-dax.sh --one "$root" "$name" > /tmp/out 2>&1 &
    pid=$!
    setsid sh /check-dax.sh --watch $pid "$name" "$limit" "$(dmesg | wc -l)" &
    watcher=$!
    wait $pid && verdict=PASS || verdict=FAIL
    if [ -e /tmp/timed-out ]; then wait $watcher; else kill -9 -$watcher 2>/dev/null; fi
    took=$(awk -v s="$start" '{ printf "%.1f", $1 - s }' /proc/uptime)
    out=$(tail -5 /tmp/out | tr '\n' ' ')
    if [ -e /tmp/timed-out ]; then
        i=0 left=x   # a killed process can take a while to let go of /mnt (or never: state D)
        while [ -n "$left" ] && [ $i -lt 100 ]; do
            left=
            for p in $(cat /tmp/timed-out); do
                kill -9 $p 2>/dev/null
                st=$(awk '$3 != "Z" { gsub(/[()]/, "", $2); print $2 "/" $3 }' /proc/$p/stat 2>/dev/null)
                [ -n "$st" ] && left="$left $p:$st"
            done
            [ -n "$left" ] && usleep 200000; i=$((i + 1))
        done
        echo "RESULT $name FAIL ${took}s: timed out after $limit s (killed; HANG lines above)${left:+; still alive after 20 s: $left}: $out"
    else
        echo "RESULT $name $verdict ${took}s${out:+: $out}"
    fi
done
grep -q ' /mnt ' /proc/mounts && rm -rf "$root/t"
exit 0
