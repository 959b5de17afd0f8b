#!/usr/bin/env python3
"""The host's side of check-truncate.sh (run-guest.sh --check check-truncate.sh).

  host-truncate.py create FILE SIZE
      writes FILE: every 4 KiB block b holds 512 copies of the 8 bytes
      {u32 b, u32 0x434e5254 ("TRNC")}, little-endian (daxtool trunc-* read it)
  host-truncate.py run FILE SIZE --qemu-pid PID --done DONE --figures OUT
                   [--cycles 100] [--max-shrunk BYTES] [--log LOG]
      CYCLES times: ftruncate FILE (the same inode) to a random size in
      [0, max-shrunk], sleep 20-50 ms, pwrite the pattern back up to SIZE,
      sleep 20-50 ms; stops early when QEMU (PID) has died. Then creates DONE
      (the guest readers stop on it) and writes FIGURE lines and one RESULT
      line to OUT: truncate_cycles_done, truncate_qemu_survived yes|no and,
      when QEMU died, the phase and size of the cycle it died in and when
      (QEMU is looked at every millisecond).
"""
import argparse
import os
import random
import struct
import sys
import time

BLOCK = 4096
MAGIC = 0x434E5254


def pattern(size):
    blocks = (size + BLOCK - 1) // BLOCK
    data = b"".join(struct.pack("<II", b, MAGIC) * (BLOCK // 8) for b in range(blocks))
    return data[:size]


def alive(pid):
    """True while PID runs (a zombie, not yet reaped by run-guest.sh, is dead)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        return False


def sleep_watching(pid, seconds):
    """Sleeps SECONDS, looking at PID every millisecond: False once it died."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if not alive(pid):
            return False
        time.sleep(0.001)
    return alive(pid)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["create", "run"])
    p.add_argument("file")
    p.add_argument("size", type=int)
    p.add_argument("--qemu-pid", type=int)
    p.add_argument("--done")
    p.add_argument("--figures")
    p.add_argument("--cycles", type=int, default=100)
    p.add_argument("--max-shrunk", type=int, default=4 << 20)
    p.add_argument("--log")
    a = p.parse_args()
    full = pattern(a.size)
    if a.mode == "create":
        with open(a.file + ".tmp", "wb") as f:
            f.write(full)
        os.rename(a.file + ".tmp", a.file)
        return 0

    log = open(a.log, "a") if a.log else open(os.devnull, "w")
    fd = os.open(a.file, os.O_RDWR)
    ino = os.fstat(fd).st_ino
    done = 0
    died = None   # (cycle, phase, size, seconds since the truncation)
    start = time.monotonic()
    for cycle in range(1, a.cycles + 1):
        if not alive(a.qemu_pid):
            died = (cycle, "before truncating", None, None)
            break
        size = random.randint(0, a.max_shrunk)
        t0 = time.monotonic()
        os.ftruncate(fd, size)
        print(f"cycle {cycle} ftruncate to {size} at {time.time():.6f} (wall clock)", file=log, flush=True)
        if not sleep_watching(a.qemu_pid, random.uniform(0.020, 0.050)):
            died = (cycle, "while shrunk", size, time.monotonic() - t0)
            print(f"cycle {cycle} QEMU seen dead at {time.time():.6f}", file=log, flush=True)
            break
        os.pwrite(fd, full[size:], size)
        t1 = time.monotonic()
        ok = sleep_watching(a.qemu_pid, random.uniform(0.020, 0.050))
        print(f"cycle {cycle} size {size} shrunk_for {t1 - t0:.3f}s at {t0 - start:.3f}s", file=log, flush=True)
        if not ok:
            died = (cycle, "after restoring", size, time.monotonic() - t0)
            break
        done = cycle
    st = os.fstat(fd)
    os.close(fd)
    same_inode = os.stat(a.file).st_ino == ino
    with open(a.done, "w"):
        pass
    survived = died is None and alive(a.qemu_pid)
    with open(a.figures, "w") as out:
        print(f"FIGURE truncate_cycles_done {done}", file=out)
        print(f"FIGURE truncate_qemu_survived {'yes' if survived else 'no'}", file=out)
        print(f"FIGURE truncate_host_seconds {time.monotonic() - start:.1f}", file=out)
        if died:
            cycle, phase, size, after = died
            detail = f"cycle {cycle} {phase}" + (f" (size {size}, dead {after * 1000:.0f} ms after the ftruncate)" if size is not None else "")
            print(f"FIGURE truncate_qemu_died_in {detail.replace(' ', '_')}", file=out)
            print(f"RESULT host-truncate FAIL QEMU died in {detail}; {done} of {a.cycles} cycles done", file=out)
        elif not same_inode or st.st_size != a.size:
            print(f"RESULT host-truncate FAIL file replaced or not restored (size {st.st_size})", file=out)
        else:
            print(f"RESULT host-truncate PASS {done} cycles, QEMU alive", file=out)
        print(f"cycles done {done}, died {died}", file=log, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
