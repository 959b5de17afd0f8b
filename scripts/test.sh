#!/usr/bin/env bash
# The test command (README, "Two commands"; .ci/run runs exactly this):
# installs what the tests need when run as root on Debian, then runs the
# whole suite, the concurrency tests again under the thread sanitizer, the
# whole suite again under the address sanitizer (with leak checks), and
# every fuzz target briefly.
# Without root or apt-get nothing is installed: tests whose prerequisites
# are missing print why they skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # fio: I/O verification on mounts and in the guest; fuse3: fusermount for
    # cleanup; python3: helper processes in the mount tests; attr: setfattr
    # and getfattr for the xattr checks (host and guest); cpio: the guest's
    # initramfs; qemu-system-x86 (with the C virtiofsd), linux-image-cloud-amd64
    # and busybox-static: the real Linux guest of the vhost-user tests;
    # debootstrap: the Debian sid chroot with QEMU 11.1 and the Rust virtiofsd
    # (scripts/guest/sid-chroot.sh, cached in /var/cache/daxfs/sid); gcc and
    # libc6-dev: the guest's static test helper; gdb: backtraces of hung tests;
    # libvirt-daemon-system (libvirtd, virsh): the libvirt guest tests
    # (scripts/guest/libvirt-guest.sh runs a private libvirtd of its own).
    apt-get install -y -qq fio fuse3 python3 attr cpio qemu-system-x86 linux-image-cloud-amd64 busybox-static \
        debootstrap gcc libc6-dev gdb libvirt-daemon-system >/dev/null
    modprobe fuse 2>/dev/null || true
fi

swift --version
swift test
# The concurrent DAX model test and the node-descriptor race test again, under the thread sanitizer.
swift test --sanitize=thread --scratch-path .build-tsan --filter 'fourThreadsMatchTheirModels|concurrentUseWhileDescriptorsCloseAndReopen'
# The whole suite again under AddressSanitizer, the `daxfs` processes it
# starts included; LeakSanitizer checks every one at exit (scripts/lsan.supp
# lists the toolchain's false reports). The model test runs 5,000 operations
# instead of 20,000 to stay within its 120 s.
ASAN_OPTIONS=detect_leaks=1 LSAN_OPTIONS=suppressions="$PWD/scripts/lsan.supp" MODEL_OPS=5000 \
    swift test --sanitize=address --scratch-path .build-asan
# Every fuzz target for 10 s on its seeds (Fuzz/README.md).
bash scripts/fuzz.sh --seconds 10
