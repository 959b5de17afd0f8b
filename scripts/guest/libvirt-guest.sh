#!/usr/bin/env bash
# Boots the virtio-fs test guest through libvirt 9.0 with a given virtio-fs
# backend binary as the domain's <binary path='…'/>, and checks how libvirt
# runs and ends that backend. It prints RESULT lines, ARGV (how libvirt ran
# the backend), TIME lines and a closing "N passed, N failed" line, and exits
# 0 only if every check passed (2: a prerequisite is missing).
#
#   libvirt-guest.sh --binary PATH [--sandbox namespace|chroot] [--timeout SECONDS] [--kernel VERSION] [--keep]
#
# It runs a private libvirtd: `unshare -m` with private directories bound
# over /etc/libvirt, /run/libvirt, /var/lib/libvirt, /var/log/libvirt and
# /var/cache/libvirt. That way /etc is not edited and any libvirt on the host
# is not touched. Its qemu.conf runs QEMU as root with no security driver,
# cgroups, namespaces or virtlogd (stdio_handler "file"). The daemon, its
# domains and their backends are stopped on exit.
#
# Boot 1: a transient domain (virsh create) of type qemu (TCG), with direct
# kernel boot of the kernel and initramfs run-guest.sh uses, shared memfd
# memory and the filesystem with tag myfs. The guest runs check.sh and powers
# off. Then the domain must be gone (libvirt stops the backend), and the
# checks are those of run-guest.sh.
# Boot 2: the same domain again. Once the guest has mounted, `virsh destroy`;
# then the backend must be gone within 5 s and no domain may be left.
#
# The <binary path> is a wrapper in the work directory. It logs its argv,
# uid and open fds to backend-argv.log, then execs PATH with the same
# arguments (same pid, so libvirt's pid file and lock are PATH's).
# See docs/LIBVIRT-FINDINGS.md.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
binary= sandbox= timeout=600 kver=${DAXFS_GUEST_KERNEL:-} keep=0 destroy_timeout=180
usage="usage: $0 --binary PATH [--sandbox namespace|chroot] [--timeout S] [--kernel VER] [--keep]"
while [ $# -gt 0 ]; do
    case $1 in
        --binary) binary=$2; shift 2 ;;
        --sandbox) sandbox=$2; shift 2 ;;
        --timeout) timeout=$2; shift 2 ;;
        --kernel) kver=$2; shift 2 ;;
        --keep) keep=1; shift ;;
        *) echo "$usage" >&2; exit 2 ;;
    esac
done
case $sandbox in ''|namespace|chroot) ;; *) echo "libvirt-guest: --sandbox is namespace or chroot" >&2; exit 2 ;; esac
skip() { echo "libvirt-guest: SKIP $*" >&2; exit 2; }
[ "$(id -u)" = 0 ] || skip "needs root"
[ -n "$binary" ] && [ -x "$binary" ] || skip "no executable --binary '$binary'"
for tool in libvirtd virsh unshare qemu-system-x86_64; do
    command -v $tool >/dev/null || skip "$tool missing (apt-get install libvirt-daemon-system qemu-system-x86)"
done
if [ -z "$kver" ]; then
    for v in $(ls /lib/modules 2>/dev/null | sort -rV); do
        [ -f "/boot/vmlinuz-$v" ] && { kver=$v; break; }
    done
fi
[ -n "$kver" ] && [ -f "/boot/vmlinuz-$kver" ] || skip "no /boot/vmlinuz-* with modules (install linux-image-cloud-amd64)"
kernel=/boot/vmlinuz-$kver
initramfs=$("$here/build-initramfs.sh" "$kver")
qemu_bin=$(command -v qemu-system-x86_64)

work=$(mktemp -d /tmp/daxfs-libvirt.XXXXXX)
chmod 755 "$work"
priv=$work/libvirt shared=$work/shared results=$work/results
mkdir -p "$priv"/{etc,run,lib,log,cache} "$shared"
: > "$results"
result() { echo "RESULT $*" >> "$results"; }
socket=$priv/run/libvirt-sock
virsh_() { timeout 60 virsh -q -c "qemu:///system?socket=$socket" "$@"; }
name=daxfs-libvirt-$$
daemon_pid= made_run_dir= failed=0 backend_pids=()

# The mount points the private daemon binds over, on the host.
for d in /etc/libvirt /var/lib/libvirt /var/log/libvirt /var/cache/libvirt; do
    [ -d $d ] || skip "$d missing (is libvirt-daemon-system installed?)"
done
if [ ! -d /run/libvirt ]; then mkdir /run/libvirt; made_run_dir=1; fi

# A pid that has exited (a zombie counts as gone: its parent is PID 1, which may be slow to reap).
pid_alive() { [ -e "/proc/$1" ] && [ "$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null)" != Z ]; }
cleanup() {
    local status=$? pid i
    set +e
    [ $status = 0 ] || failed=1
    if [ -n "$daemon_pid" ] && kill -0 "$daemon_pid" 2>/dev/null; then
        for dom in $(virsh_ list --name 2>/dev/null); do
            echo "libvirt-guest: destroying leftover domain $dom"; virsh_ destroy "$dom" >/dev/null 2>&1
        done
        kill -TERM "$daemon_pid"
        for i in $(seq 100); do kill -0 "$daemon_pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$daemon_pid" 2>/dev/null
        wait "$daemon_pid" 2>/dev/null
    fi
    # Anything of ours that libvirt did not end (reported as failures above).
    for pid in "${backend_pids[@]}" $(cat "$priv"/run/qemu/*.pid 2>/dev/null); do
        [ "$pid" -gt 1 ] 2>/dev/null || continue
        if pid_alive "$pid" && grep -qF "$work" /proc/$pid/cmdline /proc/$pid/environ 2>/dev/null; then
            echo "libvirt-guest: killing leftover pid $pid: $(tr '\0' ' ' < /proc/$pid/cmdline | cut -c1-120)"
            kill -KILL "$pid"
        fi
    done
    [ -n "$made_run_dir" ] && rmdir /run/libvirt 2>/dev/null
    find "$shared" -type f -size +1M -delete 2>/dev/null
    if [ $keep = 1 ] || [ $failed = 1 ]; then echo "libvirt-guest: logs kept in $work"; else rm -rf --one-file-system "$work"; fi
    exit $status
}
trap cleanup EXIT
trap 'failed=1; exit 130' INT TERM

# --- the private libvirtd ---
cat > "$priv/etc/libvirtd.conf" <<EOF
unix_sock_group = "root"
unix_sock_rw_perms = "0700"
auth_unix_rw = "none"
auth_unix_ro = "none"
log_outputs = "3:file:/var/log/libvirt/libvirtd.log"
EOF
cat > "$priv/etc/qemu.conf" <<EOF
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
cgroup_controllers = [ ]
namespaces = [ ]
stdio_handler = "file"
EOF
: > "$priv/etc/libvirt.conf"
cat > "$priv/start.sh" <<EOF
#!/bin/bash
set -e
mount --bind '$priv/etc' /etc/libvirt
mount --bind '$priv/run' /run/libvirt
mount --bind '$priv/lib' /var/lib/libvirt
mount --bind '$priv/log' /var/log/libvirt
mount --bind '$priv/cache' /var/cache/libvirt
# libvirt starts the backend with its own environment. A daxfs-virtiofsd
# built with AddressSanitizer (the suite's ASan step) must not run the leak
# check at exit: the sandbox takes away the /proc and ptrace it needs.
export ASAN_OPTIONS="\${ASAN_OPTIONS:+\$ASAN_OPTIONS:}detect_leaks=0"
# -t: it exits by itself if it is ever left idle (no client, no domain).
exec libvirtd -t 900 -f /etc/libvirt/libvirtd.conf -p /run/libvirt/libvirtd.pid
EOF
setsid unshare -m --propagation private bash "$priv/start.sh" > "$work/libvirtd.out" 2>&1 < /dev/null &
daemon_pid=$!
for _ in $(seq 300); do
    [ -S "$socket" ] && virsh_ version >/dev/null 2>&1 && break
    kill -0 $daemon_pid 2>/dev/null || break
    sleep 0.1
done
if ! virsh_ version > "$work/version.txt" 2>&1; then
    failed=1; echo "RESULT libvirtd-start FAIL no private libvirtd answered on $socket in 30 s"
    cat "$work/libvirtd.out" "$work/version.txt"; tail -20 "$priv/log/libvirtd.log" 2>/dev/null
    echo "0 passed, 1 failed"; exit 1
fi
echo "libvirt-guest: $(tr '\n' ' ' < "$work/version.txt")"

# --- the backend wrapper and the domain ---
wrapper=$work/backend-wrapper.sh
cat > "$wrapper" <<EOF
#!/bin/sh
{
    echo "ARGV \$0 \$*"
    echo "pid \$\$ ppid \$PPID uid \$(id -u) gid \$(id -g)"
} >> '$work/backend-argv.log'
ls -l /proc/\$\$/fd >> '$work/backend-argv.log' 2>&1
exec '$binary' "\$@"
EOF
chmod 755 "$wrapper"

domain_xml() {  # $1: console file
    local sandbox_xml=
    [ -n "$sandbox" ] && sandbox_xml="<sandbox mode='$sandbox'/>"
    cat <<EOF
<domain type='qemu'>
  <name>$name</name>
  <memory unit='MiB'>1024</memory>
  <vcpu>2</vcpu>
  <memoryBacking><source type='memfd'/><access mode='shared'/></memoryBacking>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>$kernel</kernel>
    <initrd>$initramfs</initrd>
    <cmdline>console=ttyS0 quiet panic=-1 daxfs.tag=myfs daxfs.check=check.sh daxfs.checktimeout=300</cmdline>
  </os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>$qemu_bin</emulator>
    <filesystem type='mount' accessmode='passthrough'>
      <driver type='virtiofs' queue='1024'/>
      <binary path='$wrapper' xattr='on'>$sandbox_xml</binary>
      <source dir='$shared'/>
      <target dir='myfs'/>
    </filesystem>
    <serial type='file'><source path='$1'/><target port='0'/></serial>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
</domain>
EOF
}
domain_running() { virsh_ list --name 2>/dev/null | grep -qx "$name"; }
backend_pid() { cat "$priv"/run/qemu/*-"$name"-fs0-fs.pid 2>/dev/null | head -1; }
pid_gone_within() {  # pid seconds
    local i
    for i in $(seq $(( $2 * 10 ))); do pid_alive "$1" || return 0; sleep 0.1; done
    ! pid_alive "$1"
}
start_domain() {  # $1: console file, $2: label
    local bpid
    domain_xml "$1" > "$work/domain-$2.xml"
    rm -f "$1"
    if ! virsh_ create "$work/domain-$2.xml" > "$work/create-$2.out" 2>&1; then
        result "$2-start" FAIL "virsh create: $(tr '\n' ' ' < "$work/create-$2.out")"
        return 1
    fi
    bpid=$(backend_pid)
    if [ -z "$bpid" ]; then result "$2-start" FAIL "no backend pid file in $priv/run/qemu"; return 1; fi
    result "$2-start" PASS "backend pid $bpid"
    echo "$bpid"
}

# --- boot 1: the battery, ended by the guest's poweroff ---
declare -A host_sum=()
head -c 256M /dev/urandom > "$shared/host-big.bin"
host_sum[host-big.bin]=$(sha256sum "$shared/host-big.bin" | cut -d' ' -f1)
echo written-by-host > "$shared/host-note.txt"

console=$work/console.log
start=$(date +%s.%N)
if bpid=$(start_domain "$console" boot); then
    backend_pids+=("$bpid")
    deadline=$(( $(date +%s) + timeout )) timed_out=0 handled=
    while domain_running; do
        if [ -z "$handled" ] && grep -q '^READY-FOR-HOST-FILE' "$console" 2>/dev/null; then
            echo created-while-mounted > "$shared/.host-live.tmp"
            mv "$shared/.host-live.tmp" "$shared/host-live.txt"
            handled=1
        fi
        if [ "$(date +%s)" -ge $deadline ]; then timed_out=1; virsh_ destroy "$name" >/dev/null 2>&1; break; fi
        sleep 0.2
    done
    elapsed=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
    tr -d '\r' < "$console" | grep '^RESULT ' >> "$results" || true
    running=$(tr -d '\r' < "$console" | awk '$1 == "RUN" { r = $2 } $1 == "RESULT" && $2 == r { r = "" } END { print r }')
    if [ $timed_out = 1 ]; then
        result guest-finished FAIL "timed out after $timeout s${running:+, during check $running}"
    elif ! grep -q GUEST-DONE "$console"; then result guest-finished FAIL "domain ended before GUEST-DONE${running:+, during check $running}"
    else result guest-finished PASS; fi
    # libvirt's QEMU log says why QEMU ended: the guest's poweroff is reason=shutdown.
    qlog=$priv/log/qemu/$name.log
    # QEMU runs with -no-shutdown: on the guest's poweroff it stops and libvirt
    # sends it SIGTERM ("terminating on signal 15 from pid N (libvirtd)").
    # A signal from anyone else says reason=shutdown too, so it fails here.
    if grep -q 'shutting down, reason=shutdown' "$qlog" 2>/dev/null &&
        ! grep 'terminating on signal' "$qlog" | grep -qv '(libvirtd)$'; then
        result qemu-exit PASS "guest powered off"
    else
        result qemu-exit FAIL "$(grep -E 'terminating on signal|shutting down' "$qlog" 2>/dev/null | tr '\n' ' ')$([ $timed_out = 1 ] && echo ' (destroyed at the timeout)')"
    fi
    # libvirt stopped the backend when the domain ended.
    if pid_gone_within "$bpid" 10; then result backend-exit PASS "pid $bpid gone after the domain ended"
    else result backend-exit FAIL "pid $bpid still running 10 s after the domain ended"; fi

    guest_sum() { tr -d '\r' < "$console" | awk -v f="$1" '$1 == "SUM" && $2 == f { print $3 }'; }
    if [ "$(guest_sum host-big.bin)" = "${host_sum[host-big.bin]}" ]; then result host-big-sum-matches PASS
    else result host-big-sum-matches FAIL "guest read '$(guest_sum host-big.bin)', host wrote ${host_sum[host-big.bin]}"; fi
    sum=$(sha256sum "$shared/guest-big.bin" 2>/dev/null | cut -d' ' -f1 || true)
    if [ -n "$sum" ] && [ "$(guest_sum guest-big.bin)" = "$sum" ]; then result guest-big-sum-matches PASS
    else result guest-big-sum-matches FAIL "guest wrote '$(guest_sum guest-big.bin)', host read '$sum'"; fi
    if [ "$(cat "$shared/guest-note.txt" 2>/dev/null)" = written-by-guest ]; then result host-sees-guest-file PASS
    else result host-sees-guest-file FAIL "guest-note.txt missing or wrong"; fi
    echo "TIME libvirt-create-to-shutoff $elapsed s"
fi
find "$shared" -type f -size +1M -delete

# --- boot 2: virsh destroy while the guest uses the share ---
console2=$work/console-destroy.log
if bpid=$(start_domain "$console2" destroy); then
    backend_pids+=("$bpid")
    for _ in $(seq $(( destroy_timeout * 5 ))); do
        grep -q '^RESULT mount ' "$console2" 2>/dev/null && break
        domain_running || break
        sleep 0.2
    done
    if grep -q '^RESULT mount PASS' "$console2" 2>/dev/null; then result destroy-guest-mounted PASS
    else result destroy-guest-mounted FAIL "no RESULT mount PASS on the console within $destroy_timeout s"; fi
    t0=$(date +%s.%N)
    if virsh_ destroy "$name" > "$work/destroy.out" 2>&1; then result destroy PASS
    else result destroy FAIL "$(tr '\n' ' ' < "$work/destroy.out")"; fi
    took=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
    echo "TIME virsh-destroy $took s"
    if pid_gone_within "$bpid" 5; then result destroy-backend-gone PASS "pid $bpid gone; virsh destroy took $took s"
    else result destroy-backend-gone FAIL "pid $bpid still running 5 s after virsh destroy returned ($took s)"; fi
    left=$(virsh_ list --all --name 2>&1 | grep . || true)
    if [ -z "$left" ]; then result destroy-no-domain-left PASS
    else result destroy-no-domain-left FAIL "virsh list --all: $left"; fi
    if [ -z "$(ls "$priv"/run/qemu/*-fs.pid 2>/dev/null)" ]; then result destroy-pidfile-removed PASS
    else result destroy-pidfile-removed FAIL "$(ls "$priv"/run/qemu/*-fs.pid)"; fi
fi

grep '^ARGV ' "$work/backend-argv.log" 2>/dev/null | sort -u || true
cat "$results"
passed=$(grep -c ' PASS' "$results" || true)
failures=$(grep -c ' FAIL' "$results" || true)
if [ "$failures" != 0 ] || [ "$passed" = 0 ]; then
    failed=1
    echo "--- console, boot 1 (last 60 lines) ---"; tr -d '\r' < "$console" 2>/dev/null | tail -60
    echo "--- console, boot 2 (last 20 lines) ---"; tr -d '\r' < "$console2" 2>/dev/null | tail -20
    echo "--- backend wrapper log ---"; tail -40 "$work/backend-argv.log" 2>/dev/null
    for f in "$priv"/log/qemu/*; do [ -f "$f" ] && { echo "--- $f (last 30 lines) ---"; tail -30 "$f"; }; done
    echo "--- libvirtd.log (last 30 lines) ---"; tail -30 "$priv/log/libvirtd.log" 2>/dev/null
    echo "--- libvirtd stdout/stderr ---"; tail -20 "$work/libvirtd.out"
fi
echo "$passed passed, $failures failed"
[ $failed = 0 ]
