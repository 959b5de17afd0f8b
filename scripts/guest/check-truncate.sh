#!/bin/sh
# The guest's side of the host-truncation experiment (a measurement, not a
# pass/fail test):
#   run-guest.sh --device dax --mount-opts dax=always --check check-truncate.sh
# The host writes trunc.bin (8 MiB; every 4 KiB block encodes its index, see
# host-truncate.py) before boot. Two readers start on it through DAX: a
# read(2) loop (daxtool trunc-read) and a MAP_SHARED reader catching SIGBUS
# (daxtool trunc-mmap), both reading random blocks. Once both have read,
# this prints
#   READY-FOR-HOST-TRUNCATE trunc.bin
# on which the host truncates trunc.bin (same inode) to a random size below
# 4 MiB and restores it, 100 times, then creates trunc.done. The readers stop
# on trunc.done and print FIGURE truncate_{read,mmap}_<class> lines (PROGRESS
# lines every 0.2 s meanwhile, so a VM that dies still leaves counts); then
# the whole file is read once more (FIGURE truncate_final_*) and one RESULT
# line says whether the readers ran to the end.
# trunc.mode (written by the host, from run-guest.sh's DAXFS_TRUNCATE_READERS)
# picks the readers: both (default), read, mmap, or none — then the file is
# only read whole once before READY (every DAX range set up) and nothing
# touches it while the host truncates: whether the window shows the file
# again once it is restored, without the race.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin LD_LIBRARY_PATH=/lib/x86_64-linux-gnu
root=${1:-/mnt}
limit=300
for word in $(cat /proc/cmdline); do
    case $word in daxfs.checktimeout=*) limit=${word#daxfs.checktimeout=} ;; esac
done
echo "RUN truncate-readers"
fail() { echo "RESULT truncate-readers FAIL $*"; exit 0; }
cd "$root" || fail "no $root"
size=$(stat -c %s trunc.bin) || fail "no trunc.bin"
[ "$size" = 8388608 ] || fail "trunc.bin is $size bytes, not 8 MiB"
echo "trunc.bin: $(daxtool statx trunc.bin)"
readers=$(cat trunc.mode 2>/dev/null || echo both)
case $readers in both|read|mmap|none) ;; *) fail "trunc.mode says '$readers', not both, read, mmap or none" ;; esac
echo "readers: $readers"
rm -f /tmp/read.ready /tmp/mmap.ready
reader= mapper=
case $readers in both|read) daxtool trunc-read trunc.bin trunc.done "$limit" /tmp/read.ready > /dev/console 2>&1 & reader=$! ;;
                 *) : > /tmp/read.ready ;; esac
case $readers in both|mmap) daxtool trunc-mmap trunc.bin trunc.done "$limit" /tmp/mmap.ready > /dev/console 2>&1 & mapper=$! ;;
                 *) : > /tmp/mmap.ready ;; esac
[ "$readers" = none ] && daxtool trunc-verify trunc.bin | sed 's/^FIGURE truncate_final_/FIGURE truncate_before_/'
i=0
while [ ! -e /tmp/read.ready ] || [ ! -e /tmp/mmap.ready ]; do
    [ $i -lt 300 ] || { kill $reader $mapper 2>/dev/null; fail "the readers did not start within 30 s"; }
    usleep 100000; i=$((i + 1))
done
start=$(cut -d' ' -f1 /proc/uptime)
echo "READY-FOR-HOST-TRUNCATE trunc.bin"
rs=0 ms=0
if [ -n "$reader" ]; then wait $reader; rs=$?; fi
if [ -n "$mapper" ]; then wait $mapper; ms=$?; fi
if [ "$readers" = none ]; then
    i=0   # nothing polls for trunc.done meanwhile
    while [ ! -e trunc.done ] && [ $i -lt $((limit * 10)) ]; do usleep 100000; i=$((i + 1)); done
fi
took=$(awk -v s="$start" '{ printf "%.1f", $1 - s }' /proc/uptime)
echo "trunc.bin after: $(stat -c %s trunc.bin) bytes"
daxtool trunc-verify trunc.bin
if [ $rs = 0 ] && [ $ms = 0 ] && [ -e trunc.done ]; then
    echo "RESULT truncate-readers PASS ${took}s: readers ($readers) ran until trunc.done"
else
    echo "RESULT truncate-readers FAIL ${took}s: trunc-read exit $rs, trunc-mmap exit $ms$([ -e trunc.done ] || echo ', no trunc.done')"
fi
exit 0
