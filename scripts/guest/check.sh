#!/bin/sh
# The guest's checks against a mounted virtio-fs. `sh check.sh DIR` runs every
# check and prints one line per check: RESULT <name> PASS|FAIL [detail].
# Lines the host acts on: SUM <file> <sha256> (compared on the host) and
# READY-FOR-HOST-FILE (the host then creates host-live.txt in the shared dir).
# Each check runs in its own `sh -e`, so the first failing command fails it.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin LD_LIBRARY_PATH=/lib/x86_64-linux-gnu
MB=1048576
eq() { [ "$1" = "$2" ] || { echo "got '$1', expected '$2'"; exit 1; }; }
gone() { if [ -e "$1" ] || [ -L "$1" ]; then echo "$1 still exists"; exit 1; fi; }
size() { stat -c %s "$1"; }

t_create()   { : > f; [ -f f ]; eq "$(size f)" 0; }
t_write_read() { printf 'hello, virtio-fs\n' > f; eq "$(cat f)" "hello, virtio-fs"; }
t_append()   { printf 'more\n' >> f; eq "$(cat f)" "$(printf 'hello, virtio-fs\nmore')"; eq "$(size f)" 22; }
t_truncate() {
    truncate -s 5 f; eq "$(size f)" 5; eq "$(cat f)" hello
    truncate -s 3000000 f; eq "$(size f)" 3000000; eq "$(tail -c 4 f | od -An -tx1 | tr -d ' ')" 00000000
    truncate -s 5 f; eq "$(cat f)" hello
}
t_overwrite() { printf 'J' | dd of=f bs=1 seek=0 conv=notrunc 2>/dev/null; eq "$(cat f)" Jello; }
t_rename()   { mv f g; gone f; eq "$(cat g)" Jello; echo x > h; mv h g; eq "$(cat g)" x; }
t_unlink()   { rm g; gone g; }
t_mkdir()    { mkdir d; [ -d d ]; mkdir -p d/e/f; [ -d d/e/f ]; echo in > d/e/f/file; eq "$(cat d/e/f/file)" in; }
t_readdir()  {
    mkdir many; i=0; while [ $i -lt 300 ]; do : > many/file-$i; i=$((i + 1)); done
    eq "$(ls many | wc -l)" 300; eq "$(ls -a many | wc -l)" 302
}
t_rmdir()    {
    if rmdir d 2>/dev/null; then echo "rmdir of a non-empty directory succeeded"; exit 1; fi
    rm d/e/f/file; rmdir d/e/f d/e d; gone d; rm -r many; gone many
}
t_symlink()  { echo target-data > target; ln -s target link; eq "$(readlink link)" target; eq "$(cat link)" target-data; [ -L link ]; rm link; gone link; }
t_hardlink() { ln target hard; eq "$(stat -c %h target)" 2; rm hard; eq "$(stat -c %h target)" 1; }
t_chmod()    { chmod 640 target; eq "$(stat -c %a target)" 640; chmod 755 target; eq "$(stat -c %a target)" 755; }
t_xattr()    {
    setfattr -n user.daxfs -v hello target
    eq "$(getfattr --only-values -n user.daxfs target)" hello
    getfattr -d target | grep -q '^user.daxfs="hello"'
    setfattr -x user.daxfs target
    if getfattr -n user.daxfs target >/dev/null 2>&1; then echo "xattr still there after remove"; exit 1; fi
}
t_host_file_before_boot() { eq "$(cat ../host-note.txt)" "written-by-host"; }
# Only with run-guest.sh --submount: sub/ is a tmpfs mount on the host.
t_submount() {
    eq "$(cat ../sub/marker)" in-submount
    [ "$(stat -c %d ../sub)" != "$(stat -c %d ..)" ] || { echo "sub/ has the share's st_dev $(stat -c %d ..): not announced as a submount"; exit 1; }
}
t_guest_file_for_host() { printf 'written-by-guest\n' > ../guest-note.txt; }
t_big_guest_write() {
    dd if=/dev/urandom of=../guest-big.bin bs=$MB count=256 2>/dev/null
    sync; echo 3 > /proc/sys/vm/drop_caches
    eq "$(size ../guest-big.bin)" $((256 * MB))
    echo "SUM guest-big.bin $(sha256sum ../guest-big.bin | cut -d' ' -f1)" > /dev/console
}
t_big_host_read() {
    eq "$(size ../host-big.bin)" $((256 * MB))
    echo "SUM host-big.bin $(sha256sum ../host-big.bin | cut -d' ' -f1)" > /dev/console
}
t_host_file_live() {
    gone ../host-live.txt
    echo READY-FOR-HOST-FILE > /dev/console
    i=0
    while [ ! -e ../host-live.txt ] && [ $i -lt 600 ]; do usleep 100000; i=$((i + 1)); done
    [ -e ../host-live.txt ] || { echo "host-live.txt did not appear within 60 s"; exit 1; }
    eq "$(cat ../host-live.txt)" "created-while-mounted"
}
t_fio() {
    fio --name=randrw --filename=fio.dat --size=32M --rw=randrw --bs=4k --ioengine=psync \
        --verify=crc32c --verify_fatal=1 --verify_state_save=0 --output=/tmp/fio.out ||
        { tail -20 /tmp/fio.out; exit 1; }
    if grep -q "verify: bad" /tmp/fio.out; then tail -20 /tmp/fio.out; exit 1; fi
    rm fio.dat
}

if [ "$1" = --one ]; then
    set -e
    cd "$2/t"
    "t_$3"
    exit 0
fi

root=${1:-/mnt}
rm -rf "$root/t"; mkdir "$root/t" || { echo "RESULT setup FAIL cannot mkdir $root/t"; exit 0; }
for name in create write_read append truncate overwrite rename unlink mkdir readdir rmdir \
            symlink hardlink chmod xattr host_file_before_boot guest_file_for_host \
            big_guest_write big_host_read host_file_live fio $([ -e "$root/sub/marker" ] && echo submount); do
    start=$(cut -d' ' -f1 /proc/uptime)
    echo "RUN $name"
    out=$(sh /check.sh --one "$root" "$name" 2>&1) && verdict=PASS || verdict=FAIL
    took=$(awk -v s="$start" '{ printf "%.1f", $1 - s }' /proc/uptime)
    if [ $verdict = PASS ]; then
        echo "RESULT $name PASS ${took}s"
    else
        echo "RESULT $name FAIL ${took}s: $(echo "$out" | tail -5 | tr '\n' ' ')"
    fi
done
rm -rf "$root/t"
