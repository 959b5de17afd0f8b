#!/usr/bin/env python3
"""A logging proxy between a vhost-user frontend (QEMU) and a backend.

    vhost-user-trace.py --socket PATH --log FILE -- BACKEND-CMD...

Starts BACKEND-CMD, in which PATH is replaced by PATH.backend, waits for
that socket, then listens on PATH. Every message either way is forwarded
unchanged (with its file descriptors) and logged, decoded. Exits with the
backend's status once the frontend has disconnected. Use it as run-guest.sh's
backend: --backend-cmd 'scripts/guest/vhost-user-trace.py --socket {socket}
--log /tmp/vu.log -- /usr/lib/qemu/virtiofsd --socket-path={socket} -o source={dir}'
"""
import array, os, select, socket, struct, subprocess, sys, time

REQ = {1: "GET_FEATURES", 2: "SET_FEATURES", 3: "SET_OWNER", 4: "RESET_OWNER", 5: "SET_MEM_TABLE",
       6: "SET_LOG_BASE", 7: "SET_LOG_FD", 8: "SET_VRING_NUM", 9: "SET_VRING_ADDR", 10: "SET_VRING_BASE",
       11: "GET_VRING_BASE", 12: "SET_VRING_KICK", 13: "SET_VRING_CALL", 14: "SET_VRING_ERR",
       15: "GET_PROTOCOL_FEATURES", 16: "SET_PROTOCOL_FEATURES", 17: "GET_QUEUE_NUM", 18: "SET_VRING_ENABLE",
       19: "SEND_RARP", 20: "NET_SET_MTU", 21: "SET_BACKEND_REQ_FD", 22: "IOTLB_MSG", 23: "SET_VRING_ENDIAN",
       24: "GET_CONFIG", 25: "SET_CONFIG", 26: "CREATE_CRYPTO_SESSION", 27: "CLOSE_CRYPTO_SESSION",
       28: "POSTCOPY_ADVISE", 29: "POSTCOPY_LISTEN", 30: "POSTCOPY_END", 31: "GET_INFLIGHT_FD",
       32: "SET_INFLIGHT_FD", 33: "GPU_SET_SOCKET", 34: "RESET_DEVICE", 35: "VRING_KICK",
       36: "GET_MAX_MEM_SLOTS", 37: "ADD_MEM_REG", 38: "REM_MEM_REG", 39: "SET_STATUS", 40: "GET_STATUS",
       41: "GET_SHARED_OBJECT", 42: "SET_DEVICE_STATE_FD", 43: "CHECK_DEVICE_STATE", 44: "GET_SHMEM_CONFIG"}
FEATURES = {28: "INDIRECT_DESC", 29: "EVENT_IDX", 30: "PROTOCOL_FEATURES", 32: "VERSION_1",
            33: "ACCESS_PLATFORM", 34: "RING_PACKED", 35: "IN_ORDER", 36: "ORDER_PLATFORM", 37: "SR_IOV",
            26: "LOG_ALL", 38: "NOTIFICATION_DATA", 40: "RING_RESET", 27: "ANY_LAYOUT", 24: "NOTIFY_ON_EMPTY", 0: "FS_NOTIFICATION"}
PROTOCOL = {0: "MQ", 1: "LOG_SHMFD", 2: "RARP", 3: "REPLY_ACK", 4: "NET_MTU", 5: "BACKEND_REQ",
            6: "CROSS_ENDIAN", 7: "CRYPTO_SESSION", 8: "PAGEFAULT", 9: "CONFIG", 10: "BACKEND_SEND_FD",
            11: "HOST_NOTIFIER", 12: "INFLIGHT_SHMFD", 13: "RESET_DEVICE", 14: "INBAND_NOTIFICATIONS",
            15: "CONFIGURE_MEM_SLOTS", 16: "STATUS", 17: "XEN_MMAP", 18: "SHARED_OBJECT", 19: "DEVICE_STATE",
            20: "SHMEM(draft)", 21: "SHMEM"}


def bits(value, names):
    return "0x%x [%s]" % (value, " ".join(names.get(b, "bit%d" % b) for b in range(64) if value >> b & 1))


def decode(req, reply, payload):
    if req in (1, 2) and len(payload) == 8:
        return bits(struct.unpack("<Q", payload)[0], FEATURES)
    if req in (15, 16) and len(payload) == 8:
        return bits(struct.unpack("<Q", payload)[0], PROTOCOL)
    if req in (8, 10, 11, 18) and len(payload) == 8:
        return "index=%d num=%d" % struct.unpack("<II", payload)
    if req == 9 and len(payload) >= 40:
        return "index=%d flags=%#x desc=%#x used=%#x avail=%#x log=%#x" % struct.unpack("<IIQQQQ", payload[:40])
    if req in (12, 13, 14) and len(payload) == 8:
        v = struct.unpack("<Q", payload)[0]
        return "index=%d%s" % (v & 0xff, " NOFD" if v & 0x100 else "")
    if req in (37, 38) and len(payload) >= 40:
        return "guest_phys=%#x size=%#x userspace=%#x mmap_offset=%#x" % struct.unpack("<QQQQ", payload[8:40])
    if req == 5 and len(payload) >= 8:
        n = struct.unpack("<I", payload[:4])[0]
        return "; ".join("guest_phys=%#x size=%#x userspace=%#x mmap_offset=%#x" % struct.unpack(
            "<QQQQ", payload[8 + 32 * i:40 + 32 * i]) for i in range(n))
    if len(payload) == 8:
        return "u64=%d" % struct.unpack("<Q", payload)[0]
    return payload[:48].hex() if payload else ""


def recv_exact(sock, n):
    data, fds = b"", []
    while len(data) < n:
        fdbuf = array.array("i")
        chunk, anc, _, _ = sock.recvmsg(n - len(data), socket.CMSG_LEN(16 * fdbuf.itemsize))
        if not chunk:
            return None, fds
        for level, kind, cdata in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fdbuf.frombytes(cdata[:len(cdata) - len(cdata) % fdbuf.itemsize])
                fds += list(fdbuf)
        data += chunk
    return data, fds


def main():
    args = sys.argv[1:]
    split = args.index("--")
    opts = dict(zip(args[:split:2], args[1:split:2]))
    path, log = opts["--socket"], open(opts["--log"], "w", buffering=1)
    backend_path = path + ".backend"
    backend = subprocess.Popen([a.replace(path, backend_path) for a in args[split + 1:]])
    for _ in range(200):
        if os.path.exists(backend_path):
            break
        time.sleep(0.05)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)
    front, _ = listener.accept()
    back = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    back.connect(backend_path)
    start, peer = time.monotonic(), {front: (back, "F->B"), back: (front, "B->F")}
    while True:
        ready, _, _ = select.select([front, back], [], [])
        for src in ready:
            dst, direction = peer[src]
            header, fds = recv_exact(src, 12)
            if header is None:
                log.write("%8.3f %s disconnected\n" % (time.monotonic() - start, direction))
                front.close(); back.close()
                sys.exit(backend.wait(timeout=30))
            req, flags, size = struct.unpack("<III", header)
            payload, more = recv_exact(src, size) if size else (b"", [])
            fds += more
            dst.sendmsg([header + payload], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else [])
            for fd in fds:
                os.close(fd)
            name = REQ.get(req, str(req)) if src is front or flags & 4 else "backend-req %d" % req
            log.write("%8.3f %s %-22s flags=%#x size=%d fds=%d %s\n" % (
                time.monotonic() - start, direction, name, flags, size, len(fds), decode(req, flags & 4, payload)))


if __name__ == "__main__":
    main()
