#!/usr/bin/env bash
# Builds (once, cached) an uncompressed initramfs for the virtio-fs guest tests:
# static busybox, the Debian kernel's virtio-pci/virtiofs modules, fio and
# setfattr/getfattr with every library they link, init.sh, the check scripts
# (check*.sh) and daxtool (daxtool.c compiled with gcc -static; skipped with a
# warning when gcc is missing, which only check-dax.sh needs).
# Usage: build-initramfs.sh [KERNEL_VERSION]   Prints the initramfs path.
# The cache key covers the kernel version and the contents of this directory's
# scripts, so editing the guest scripts rebuilds it. DAXFS_GUEST_CACHE overrides
# the cache directory (default /tmp/daxfs-guest-cache).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
kver=${1:-$(ls /lib/modules | sort -V | tail -1)}
cache=${DAXFS_GUEST_CACHE:-/tmp/daxfs-guest-cache}
key=$( (cat "$here/build-initramfs.sh" "$here/init.sh" "$here"/check*.sh "$here/daxtool.c"; command -v gcc || true) |
    sha256sum | cut -c1-12)
out=$cache/initramfs-$kver-$key.cpio
[ -s "$out" ] && { echo "$out"; exit 0; }

for tool in busybox fio setfattr getfattr cpio ldd; do
    command -v "$tool" >/dev/null || { echo "build-initramfs: $tool is missing" >&2; exit 1; }
done
mdir=/lib/modules/$kver
[ -f "$mdir/modules.dep" ] || { echo "build-initramfs: no $mdir/modules.dep" >&2; exit 1; }
busybox_bin=$(command -v busybox)
case $(ldd "$busybox_bin" 2>&1) in *"not a dynamic"*) ;; *) false ;; esac \
    || { echo "build-initramfs: $busybox_bin is not static (install busybox-static)" >&2; exit 1; }

mkdir -p "$cache"
root=$(mktemp -d "$cache/root.XXXXXX")
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,lib/x86_64-linux-gnu,lib64,proc,sys,dev,mnt,tmp,modules}

cp "$busybox_bin" "$root/bin/busybox"
for applet in $("$root/bin/busybox" --list-full); do
    [ -e "$root/$applet" ] || ln -s /bin/busybox "$root/$applet"
done

# Binaries and every shared library they link, flattened into one directory.
for bin in fio setfattr getfattr; do
    path=$(command -v $bin)
    cp -L "$path" "$root/usr/bin/$bin"
    ldd "$path" | awk '/=> \//{print $3} /^\t\//{print $1}' | while read -r lib; do
        case $lib in
            */ld-linux*) cp -L "$lib" "$root/lib64/$(basename "$lib")" ;;
            *) cp -Ln "$lib" "$root/lib/x86_64-linux-gnu/" ;;
        esac
    done
done

# Kernel modules in dependency order (modules.dep lists a module's deps after it).
declare -A seen=()
order=()
add_module() {  # $1: path relative to $mdir
    [ -n "${seen[$1]:-}" ] && return
    seen[$1]=1
    local deps
    deps=$(awk -v m="$1:" '$1 == m { $1 = ""; print }' "$mdir/modules.dep")
    for d in $deps; do add_module "$d"; done
    order+=("$1")
}
for name in virtio_pci virtiofs; do
    rel=$(awk -F: -v n="$name" '{ b = $1; sub(/.*\//, "", b); sub(/\.ko.*/, "", b); if (b == n) { print $1; exit } }' "$mdir/modules.dep")
    if [ -z "$rel" ]; then
        grep -q "/$name.ko" "$mdir/modules.builtin" || { echo "build-initramfs: module $name not found" >&2; exit 1; }
        continue
    fi
    add_module "$rel"
done
: > "$root/modules/order"
for rel in "${order[@]}"; do
    base=$(basename "$rel")
    case $rel in
        *.ko.xz)  xz -dc "$mdir/$rel" > "$root/modules/${base%.xz}"; base=${base%.xz} ;;
        *.ko.zst) zstd -qdc "$mdir/$rel" > "$root/modules/${base%.zst}"; base=${base%.zst} ;;
        *.ko.gz)  gzip -dc "$mdir/$rel" > "$root/modules/${base%.gz}"; base=${base%.gz} ;;
        *)        cp "$mdir/$rel" "$root/modules/$base" ;;
    esac
    echo "$base" >> "$root/modules/order"
done

install -m 755 "$here/init.sh" "$root/init"
for check in "$here"/check*.sh; do install -m 755 "$check" "$root/$(basename "$check")"; done
if command -v gcc >/dev/null; then
    gcc -static -O2 -Wall -o "$root/usr/bin/daxtool" "$here/daxtool.c" \
        || { echo "build-initramfs: gcc -static daxtool.c failed (libc6-dev?)" >&2; exit 1; }
else
    echo "build-initramfs: warning: no gcc, so no daxtool (check-dax.sh needs it)" >&2
fi

tmp=$(mktemp "$cache/initramfs.XXXXXX")
trap 'rm -rf "$root" "$tmp"' EXIT
(cd "$root" && find . | LC_ALL=C sort | cpio -o -H newc --quiet) > "$tmp"
chmod 644 "$tmp"
mv "$tmp" "$out"   # atomic: concurrent builders never see a partial file
find "$cache" -maxdepth 1 -name 'initramfs-*.cpio' ! -path "$out" -mmin +60 -delete  # stale builds
echo "$out"
