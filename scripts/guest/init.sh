#!/bin/sh
# /init of the virtio-fs test guest: load the modules, mount the virtiofs tag
# given on the kernel command line (daxfs.tag=, default myfs) at /mnt with the
# options in daxfs.mountopts= (e.g. dax=always; none by default), run the check
# script daxfs.check= names (default check.sh), print GUEST-DONE and power off.
# The check script gets the tag and options as DAXFS_TAG and DAXFS_MOUNTOPTS.
# Never returns to the kernel, so a failure here ends the VM instead of
# hanging it (panic=-1, -no-reboot).
export PATH=/bin:/sbin:/usr/bin:/usr/sbin LD_LIBRARY_PATH=/lib/x86_64-linux-gnu
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null || mdev -s
mount -t tmpfs tmpfs /tmp
exec </dev/console >/dev/console 2>&1

tag=myfs opts= check=check.sh
for word in $(cat /proc/cmdline); do
    case $word in
        daxfs.tag=*) tag=${word#daxfs.tag=} ;;
        daxfs.mountopts=*) opts=${word#daxfs.mountopts=} ;;
        daxfs.check=*) check=${word#daxfs.check=} ;;
    esac
done
export DAXFS_TAG=$tag DAXFS_MOUNTOPTS=$opts

echo "GUEST-BOOTED uptime=$(cut -d' ' -f1 /proc/uptime)"
while read -r ko; do
    insmod "/modules/$ko" || echo "RESULT modules FAIL insmod $ko"
done < /modules/order

if mount -t virtiofs ${opts:+-o "$opts"} "$tag" /mnt; then
    echo "RESULT mount PASS tag=$tag${opts:+ -o $opts}"
    sh "/$check" /mnt
    cd /
    sync
    if umount /mnt; then echo "RESULT umount PASS"; else echo "RESULT umount FAIL"; fi
else
    echo "RESULT mount FAIL mount -t virtiofs ${opts:+-o $opts }$tag /mnt failed"
    dmesg | tail -20
fi
echo "GUEST-DONE uptime=$(cut -d' ' -f1 /proc/uptime)"
poweroff -f
