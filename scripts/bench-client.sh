#!/bin/sh
# Runs `daxfs client ... bench` — the same client binary and flags each time —
# against four vhost-user-fs backends serving the same kind of scratch
# directory, one after another, and prints a combined table with ratios to
# Debian's C virtiofsd:
#   daxfs-dax     daxfs serve --cache-size-mib 1024 (DAX window offered)
#   daxfs-nodax   daxfs serve (no window)
#   virtiofsd     /usr/lib/qemu/virtiofsd (default thread pool)
#   virtiofsd-tp0 /usr/lib/qemu/virtiofsd --thread-pool-size=0
# Each backend serves one client connection and exits. The backend's CPU time
# comes from /proc/PID/stat (the bench gets --backend-pid; virtiofsd runs with
# -o sandbox=chroot so that PID is the process doing the work). Before each
# backend the script waits (up to 120 s) for the machine to be idle, since
# polling latencies need the two cores to themselves.
#
# Usage: scripts/bench-client.sh [--quick] [--no-build] [--json] [-- BENCH-ARGS...]
#   --quick     pass --quick to the bench (128 MiB data file, 0.5 s per workload)
#   --no-build  use the existing release binary
#   --json      print one combined JSON object as the last line
# Environment: DAXFS_BIN (binary to use), VIRTIOFSD (default /usr/lib/qemu/virtiofsd),
# DAXFS_SCRATCH (SwiftPM scratch path, default .build-client).
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SCRATCH=${DAXFS_SCRATCH:-.build-client}
VIRTIOFSD=${VIRTIOFSD:-/usr/lib/qemu/virtiofsd}
QUICK=""
BUILD=1
JSON=0
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=--quick ;;
        --no-build) BUILD=0 ;;
        --json) JSON=1 ;;
        --) shift; break ;;
        -h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench-client.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

if [ -z "${DAXFS_BIN:-}" ]; then
    if [ "$BUILD" = 1 ]; then
        echo "building daxfs (release)" >&2
        (cd "$ROOT" && swift build -c release --scratch-path "$SCRATCH" >&2)
    fi
    DAXFS_BIN="$ROOT/$SCRATCH/release/daxfs"
fi
[ -x "$DAXFS_BIN" ] || { echo "bench-client.sh: no daxfs binary at $DAXFS_BIN" >&2; exit 1; }

WORK=$(mktemp -d /tmp/daxfs-bench-client-XXXXXX)
BACKEND=""
cleanup() {
    if [ -n "$BACKEND" ] && kill -0 "$BACKEND" 2>/dev/null; then kill "$BACKEND" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Waits until the machine is at least 90 % idle over one second (at most 120 s).
wait_idle() {
    tries=0
    while [ $tries -lt 120 ]; do
        set -- $(head -1 /proc/stat)
        total1=$(( $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 )); idle1=$(( $5 + $6 ))
        sleep 1
        set -- $(head -1 /proc/stat)
        total2=$(( $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 )); idle2=$(( $5 + $6 ))
        busy=$(( 100 - 100 * (idle2 - idle1) / (total2 - total1 + 1) ))
        [ $busy -le 10 ] && return 0
        [ $tries = 0 ] && echo "  waiting for the machine to be idle (busy $busy %)" >&2
        tries=$((tries + 1))
    done
    echo "  warning: the machine stayed busy ($busy %); figures are disturbed" >&2
}

run_config() {
    name=$1; shift
    share="$WORK/$name-share"; sock="$WORK/$name.sock"
    mkdir -p "$share"
    wait_idle
    echo "== $name: $*" >&2
    case "$1" in
        daxfs) shift; "$DAXFS_BIN" serve --socket-path "$sock" --shared-dir "$share" --log-level warning "$@" 2>"$WORK/$name.log" & ;;
        virtiofsd) shift; "$VIRTIOFSD" --socket-path="$sock" -o source="$share" -o cache=auto -o sandbox=chroot "$@" 2>"$WORK/$name.log" & ;;
    esac
    BACKEND=$!
    i=0
    while [ ! -S "$sock" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
    [ -S "$sock" ] || { echo "bench-client.sh: $name did not create $sock:" >&2; cat "$WORK/$name.log" >&2; exit 1; }
    if ! "$DAXFS_BIN" client --socket-path "$sock" bench --json --backend-pid "$BACKEND" $QUICK $CLIENT_ARGS >"$WORK/$name.out" 2>"$WORK/$name.err" </dev/null; then
        echo "bench-client.sh: the bench against $name failed:" >&2
        cat "$WORK/$name.err" "$WORK/$name.log" >&2
        exit 1
    fi
    tail -n 1 "$WORK/$name.out" >"$WORK/$name.json"
    i=0
    while kill -0 "$BACKEND" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
    kill "$BACKEND" 2>/dev/null || true
    wait "$BACKEND" 2>/dev/null || true
    BACKEND=""
}

CLIENT_ARGS="$*"
run_config daxfs-dax daxfs --cache-size-mib 1024
run_config daxfs-nodax daxfs
if [ -x "$VIRTIOFSD" ]; then
    run_config virtiofsd virtiofsd
    run_config virtiofsd-tp0 virtiofsd --thread-pool-size=0
else
    echo "bench-client.sh: no C virtiofsd at $VIRTIOFSD (install qemu-system-x86); comparing daxfs only" >&2
fi

python3 - "$WORK" "$JSON" <<'EOF'
import json, os, sys
work, want_json = sys.argv[1], sys.argv[2] == "1"
configs = [c for c in ["daxfs-dax", "daxfs-nodax", "virtiofsd", "virtiofsd-tp0"] if os.path.exists(f"{work}/{c}.json")]
data = {c: json.load(open(f"{work}/{c}.json")) for c in configs}
base = "virtiofsd" if "virtiofsd" in data else None
rows = [
    ("GETATTR qd1 ops/s", "getattr_qd1_ops", True), ("GETATTR qd16 ops/s", "getattr_qd16_ops", True),
    ("LOOKUP qd1 ops/s", "lookup_qd1_ops", True), ("LOOKUP qd16 ops/s", "lookup_qd16_ops", True),
    ("READ 4K random ops/s", "read4k_ops", True), ("READ 1M seq MB/s", "read1m_mbps", True),
    ("create+unlink /s", "create_unlink_ops", True), ("DAX rand 4K ops/s", "dax_rand4k_ops", True),
    ("window 100 % rand 4K ops/s", "window100_rand4k_ops", True), ("window 50 % rand 4K ops/s", "window50_rand4k_ops", True),
    ("window 25 % rand 4K ops/s", "window25_rand4k_ops", True),
    ("SETUPMAPPING p50 µs", "setupmapping_p50_us", False), ("SETUPMAPPING p99 µs", "setupmapping_p99_us", False),
    ("REMOVEMAPPING p50 µs", "removemapping_p50_us", False),
]
for key in ["getattr_qd1", "getattr_qd16", "read4k", "create_unlink", "dax_rand4k"]:
    rows.append((f"  {key} client CPU µs/op", f"{key}_client_cpu_us_per_op", False))
    rows.append((f"  {key} backend CPU µs/op", f"{key}_backend_cpu_us_per_op", False))

def fmt(v):
    if v is None: return "-"
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.2f}"

head = f"{'':30}" + "".join(f"{c:>15}" for c in configs) + (f"{'dax/C':>8}{'nodax/C':>9}" if base else "")
print(head)
for label, key, higher in rows:
    values = [data[c]["figures"].get(key) for c in configs]
    if all(v is None for v in values): continue
    line = f"{label:30}" + "".join(f"{fmt(v):>15}" for v in values)
    if base:
        b = data[base]["figures"].get(key)
        for c, w in (("daxfs-dax", 8), ("daxfs-nodax", 9)):
            v = data.get(c, {}).get("figures", {}).get(key)
            line += f"{(f'{v / b:.2f}×' if v and b else '-'):>{w}}"
    print(line)

# Targets of issue 5.
f = lambda c, k: data.get(c, {}).get("figures", {}).get(k)
checks = []
cs = [c for c in ("virtiofsd", "virtiofsd-tp0") if c in data]
for key, goal in (("getattr_qd1_ops", 3.0), ("getattr_qd16_ops", 1.5)):
    if cs and f("daxfs-dax", key):
        best = max(f(c, key) for c in cs)
        r = f("daxfs-dax", key) / best
        checks.append((f"{key}: daxfs-dax vs best C virtiofsd ≥ {goal}×", f"{r:.2f}×", r >= goal))
r = data.get("daxfs-dax", {}).get("ratios", {}).get("dax_rand4k_vs_nondax")
if r is not None: checks.append(("dax_rand4k_vs_nondax ≥ 8×", f"{r:.2f}×", r >= 8))
p = f("daxfs-dax", "setupmapping_p50_us")
if p is not None: checks.append(("SETUPMAPPING median ≤ 20 µs", f"{p:.2f} µs", p <= 20))
print()
for what, value, ok in checks: print(f"{'met ' if ok else 'MISS'}  {what}: {value}")
if want_json:
    ratios = {}
    for c in ("daxfs-dax", "daxfs-nodax"):
        for key in ("getattr_qd1_ops", "getattr_qd16_ops", "lookup_qd1_ops", "lookup_qd16_ops", "read4k_ops", "read1m_mbps", "create_unlink_ops"):
            if base and f(c, key) and f(base, key):
                ratios[f"{c.replace('-', '_')}_{key}_vs_virtiofsd"] = round(f(c, key) / f(base, key), 3)
    out = {"suite": "client-compare", "figures": {c.replace("-", "_"): data[c]["figures"] for c in configs},
           "ratios": ratios, "params": data[configs[0]].get("params", {})}
    print(json.dumps(out, separators=(",", ":")))
EOF
