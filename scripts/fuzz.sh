#!/usr/bin/env bash
# Builds the fuzz package (Fuzz/, libFuzzer + AddressSanitizer, debug) and
# runs every target for N seconds (default 10) on a scratch copy of its seed
# corpus (Fuzz/Corpus/<target>/); the repository is not modified. Prints one
# line per target, "fuzz: NAME execs=N crashes=N edges=N" (execs from
# libFuzzer's final stats, edges its last "cov:"), then "N passed, N failed",
# and exits non-zero when a target failed: libFuzzer exited non-zero or left
# a crash, timeout or leak artifact (kept in the scratch directory, whose
# path is printed). Needs no network; as root, the FUSE session target
# serves a private tmpfs.
#
#   scripts/fuzz.sh [--seconds N]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

seconds=10
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) seconds="${2:?--seconds needs a number}"; shift 2 ;;
        --seconds=*) seconds="${1#--seconds=}"; shift ;;
        -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "fuzz.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
    esac
done
case "$seconds" in ''|*[!0-9]*) echo "fuzz.sh: --seconds takes a whole number, not '$seconds'" >&2; exit 2 ;; esac

targets=(fuzz-fuse-session fuzz-vhost-control fuzz-descriptor-chains fuzz-client-replies fuzz-mapping-validators fuzz-host-watch)

work=$(mktemp -d /tmp/daxfs-fuzz-XXXXXX)
keep=false
cleanup() { if $keep; then echo "fuzz: logs and artifacts kept in $work"; else rm -rf "$work"; fi; }
trap cleanup EXIT

# One product at a time: fuzz-seeds has a main of its own and is not built
# with the fuzzer (it writes Corpus/; see Fuzz/Package.swift). swiftc keeps
# only the last -sanitize= it is given, and SwiftPM passes one per
# --sanitize, so the combined flag comes last; --sanitize still instruments
# the C targets and links the runtimes.
started=$(date +%s)
for target in "${targets[@]}"; do
    if ! swift build --package-path Fuzz -j 2 --sanitize=fuzzer --sanitize=address -Xswiftc -sanitize=fuzzer,address \
            --product "$target" >>"$work/build.log" 2>&1; then
        keep=true
        grep -E 'error' "$work/build.log" | sort -u | head -20 >&2
        echo "fuzz.sh: building $target failed (see $work/build.log)" >&2
        exit 1
    fi
done
echo "fuzz: built ${#targets[@]} targets in $(( $(date +%s) - started )) s (debug, libFuzzer + AddressSanitizer)"

passed=0 failed=0
for target in "${targets[@]}"; do
    dir="$work/$target"
    mkdir -p "$dir/corpus" "$dir/artifacts" "$dir/scratch"
    cp Fuzz/Corpus/"$target"/* "$dir/corpus/"
    status=0
    # -timeout: one input may take 10 s at most (a hang is a failure);
    # -max_len: room for the largest seed and more, well under a socket buffer.
    (cd "$dir" && DAXFS_FUZZ_SCRATCH="$dir/scratch" SWIFT_BACKTRACE=enable=no ASAN_OPTIONS="allow_user_segv_handler=1" \
        "$root/Fuzz/.build/debug/$target" -max_total_time="$seconds" -print_final_stats=1 -rss_limit_mb=2048 \
        -timeout=10 -max_len=8192 -artifact_prefix="$dir/artifacts/" corpus >"$dir/log" 2>&1) || status=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$dir/log" | tail -1)
    edges=$(grep -oE 'cov: [0-9]+' "$dir/log" | tail -1 | grep -oE '[0-9]+' || true)
    artifacts=$(find "$dir/artifacts" -type f | wc -l)
    crashes=$artifacts
    if [ "$status" -ne 0 ] && [ "$crashes" -eq 0 ]; then crashes=1; fi
    echo "fuzz: $target execs=${execs:-0} crashes=$crashes edges=${edges:-0}"
    if [ "$crashes" -eq 0 ]; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
        keep=true
        echo "fuzz: $target exited $status; last lines of $dir/log:"
        grep -E 'ERROR|SUMMARY|fuzz oracle|Fatal error|deadly signal|Test unit written' "$dir/log" | head -10 | sed 's/^/    /'
    fi
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
