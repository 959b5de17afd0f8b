#!/usr/bin/env bash
# The cost of daxfs-virtiofsd's hardening: the same `daxfs client ... bench`
# against daxfs-virtiofsd in the namespace sandbox with the seccomp filter
# (the default) and with --sandbox none --seccomp none, alternating for N
# rounds, each after the machine has been idle; prints per-row medians and
# the ratio sandboxed / unsandboxed.
#   scripts/bench-sandbox.sh [--rounds N] [--no-build] [--no-idle-wait]   (release binaries in .build-client)
# --no-idle-wait measures at once even when the machine is busy (the two
# configurations still alternate, so their ratio stays meaningful).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=3 build=1 idle=1
while [ $# -gt 0 ]; do
    case $1 in
        --rounds) rounds=$2; shift 2 ;;
        --no-build) build=0; shift ;;
        --no-idle-wait) idle=0; shift ;;
        *) echo "usage: $0 [--rounds N] [--no-build] [--no-idle-wait]" >&2; exit 2 ;;
    esac
done
scratch=.build-client
[ $build = 1 ] && swift build -c release --scratch-path "$scratch" >&2
daxfs=$PWD/$scratch/release/daxfs virtiofsd=$PWD/$scratch/release/daxfs-virtiofsd
work=$(mktemp -d /tmp/daxfs-bench-sandbox-XXXXXX)
backend=
trap '[ -n "$backend" ] && kill $backend 2>/dev/null; rm -rf "$work"' EXIT

wait_idle() {  # at most 120 s for one second at <= 10 % busy
    [ $idle = 1 ] || return 0
    for _ in $(seq 120); do
        read -r _ a b c d e f g h _ < /proc/stat; t1=$((a+b+c+d+e+f+g+h)) i1=$((d+e))
        sleep 1
        read -r _ a b c d e f g h _ < /proc/stat; t2=$((a+b+c+d+e+f+g+h)) i2=$((d+e))
        [ $((100 - 100 * (i2 - i1) / (t2 - t1 + 1))) -le 10 ] && return 0
    done
    echo "  warning: the machine stayed busy" >&2
}

run() {  # name round args...
    local name=$1 round=$2; shift 2
    mkdir -p "$work/$name-$round"
    wait_idle
    "$virtiofsd" --socket-path="$work/$name-$round.sock" --shared-dir="$work/$name-$round" --log-level=error "$@" &
    backend=$!
    for _ in $(seq 100); do [ -S "$work/$name-$round.sock" ] && break; sleep 0.1; done
    "$daxfs" client --socket-path "$work/$name-$round.sock" bench --quick --json < /dev/null | tail -n 1 > "$work/$name-$round.json"
    wait $backend 2>/dev/null || true
    backend=
}

for round in $(seq "$rounds"); do
    echo "== round $round" >&2
    run sandboxed "$round" --sandbox=namespace --seccomp=kill
    run plain "$round" --sandbox=none --seccomp=none
done

python3 - "$work" "$rounds" <<'PY'
import json, statistics, sys
work, rounds = sys.argv[1], int(sys.argv[2])
def load(name):
    return [json.load(open(f"{work}/{name}-{r}.json"))["figures"] for r in range(1, rounds + 1)]
s, p = load("sandboxed"), load("plain")
keys = [k for k in s[0] if k.endswith("_ops") or k.endswith("_mbps")]
print(f"{'row':32} {'sandboxed':>12} {'plain':>12} {'ratio':>7}   (medians of {rounds} rounds)")
for k in keys:
    a = statistics.median(x[k] for x in s if k in x); b = statistics.median(x[k] for x in p if k in x)
    print(f"{k:32} {a:12.1f} {b:12.1f} {a / b if b else 0:7.3f}")
PY
