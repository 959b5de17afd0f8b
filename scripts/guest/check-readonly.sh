#!/bin/sh
# Runs in the guest (busybox sh) against a share the backend serves with
# --readonly: reading works, and every kind of change fails with EROFS
# (busybox prints "Read-only file system"). The host side checks afterwards
# that the share is unchanged. Prints one line per check:
# RESULT <name> PASS|FAIL [detail].
root=${1:-/mnt}
cd "$root" || { echo "RESULT setup FAIL cannot cd $root"; exit 0; }
result() { echo "RESULT $1 $2${3:+ $3}"; }
# expect_erofs NAME COMMAND...: the command must fail with EROFS.
expect_erofs() {
    name=$1; shift
    if out=$("$@" 2>&1); then result "$name" FAIL "succeeded on a read-only share"
    elif echo "$out" | grep -q "Read-only file system"; then result "$name" PASS
    else result "$name" FAIL "$(echo "$out" | tail -1)"; fi
}
if [ "$(cat host-note.txt 2>/dev/null)" = written-by-host ]; then result ro_read PASS
else result ro_read FAIL "host-note.txt: $(cat host-note.txt 2>&1)"; fi
if [ "$(ls | grep -c host-note.txt)" = 1 ]; then result ro_readdir PASS; else result ro_readdir FAIL "$(ls)"; fi
expect_erofs ro_create sh -c 'echo x > new-file'
expect_erofs ro_append sh -c 'echo x >> host-note.txt'
expect_erofs ro_truncate truncate -s 0 host-note.txt
expect_erofs ro_mkdir mkdir new-dir
expect_erofs ro_unlink rm host-note.txt
expect_erofs ro_rename mv host-note.txt moved.txt
expect_erofs ro_chmod chmod 600 host-note.txt
expect_erofs ro_symlink ln -s host-note.txt link
expect_erofs ro_hardlink ln host-note.txt hard
expect_erofs ro_setxattr setfattr -n user.daxfs -v x host-note.txt
expect_erofs ro_touch touch host-note.txt
