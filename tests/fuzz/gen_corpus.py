#!/usr/bin/env python3
"""gen_corpus.py - write the seed corpus of every fuzzer (tests/fuzz/corpus/<target>/):
small, real-looking inputs built by the protocols' own rules (agent_proto.h,
dist/proto.h, store.h, cpio.h, the ivshmem-server protocol, QMP, the
provider's ivf_proto.h).  The
ivshmem seeds need a real ivcd's region: pass its binary as --ivcd (else
those seeds are kept as they are).  Run from anywhere; rewrites the files.
Usage: gen_corpus.py [--ivcd BUILD/src/ivcd/ivcd]"""
import array, hashlib, json, mmap, os, socket, struct, subprocess, sys, tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "corpus")


def write(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# ---- agent protocol (little-endian) ----
MAGIC = 0x56414731
T = dict(HELLO=1, EXEC=2, STARTED=3, EXEC_FAILED=4, STDIN=5, STDOUT=6, STDERR=7, SIGNAL=8,
         EXIT=9, PUT_FILE=10, PUT_DONE=11, GET_FILE=12, FILE_DATA=13, FILE_END=14,
         SHUTDOWN=15, PING=16, PONG=17)


def frame(t, session, payload=b""):
    return struct.pack("<IIII", MAGIC, T[t], session, len(payload)) + payload


def u32(v):
    return struct.pack("<I", v & 0xffffffff)


def s(x):
    x = x.encode() if isinstance(x, str) else x
    return u32(len(x)) + x


def exec_payload(argv, env=(), cwd="", flags=0):
    return u32(flags) + u32(len(argv)) + u32(len(env)) + b"".join(s(a) for a in argv) + \
        b"".join(s(e) for e in env) + s(cwd)


def agent_side():
    ping0 = frame("PING", 0, struct.pack("<Q", 0))
    seeds = {
        "ping": ping0 + frame("PING", 0, struct.pack("<Q", 0x1234)),
        "exec": ping0 + frame("EXEC", 1, exec_payload(["sh", "-c", "echo hi"], ["A=1"], "/tmp")),
        "exec_stdin": frame("EXEC", 2, exec_payload(["cat"], [], "", 1)) +
        frame("STDIN", 2, b"hello\n") + frame("STDIN", 2) + frame("SIGNAL", 2, u32(15)),
        "exec_bad": frame("EXEC", 3, u32(0) + u32(1000) + u32(0)) +
        frame("EXEC", 4, exec_payload(["x"], ["NOEQUALS"])) + frame("EXEC", 0, exec_payload(["x"])),
        "put": frame("PUT_FILE", 5, u32(0o644) + s("/tmp/f") + b"data"),
        "put_more": frame("PUT_FILE", 6, u32(0o600 | (1 << 31)) + s("/tmp/g")) +
        frame("FILE_DATA", 6, b"a" * 100) + frame("FILE_DATA", 6, b"b" * 50) +
        frame("FILE_END", 6, u32(0)),
        "get": frame("GET_FILE", 7, s("/etc/hostname")) + frame("GET_FILE", 8, s("a\0b")),
        "shutdown": frame("SHUTDOWN", 0, u32(1)) + frame("SHUTDOWN", 0, u32(9)),
        "unknown": frame("PONG", 0, b"12345678") + struct.pack("<IIII", MAGIC, 99, 0, 3) + b"abc",
        "garbage": b"\x00garbage" + ping0 + b"\x31\x47\x41" + ping0,
    }
    for name, data in seeds.items():
        write("agent", name, bytes([0]) + data)          # a TCP/UNIX stream
        write("agent", name + "_port", bytes([1]) + data)  # the port: resyncs


def agent_client():
    pong0 = frame("PONG", 0, struct.pack("<Q", 0))
    hello = frame("HELLO", 0, u32(1) + s("6.1.0-56-cloud-amd64") + s("vm1"))
    run = frame("STARTED", 1, u32(412)) + frame("STDOUT", 1, b"hi\n") + \
        frame("STDERR", 1, b"warn\n") + frame("STDOUT", 1) + frame("STDERR", 1) + \
        frame("EXIT", 1, u32(1) + u32(0))
    seeds = {
        "hello_run": (0, pong0 + hello + run),
        "ready": (2, pong0 + hello),
        "stale": (1, b"\x01\x02" + frame("STDOUT", 9, b"old") + pong0 + hello + run),
        "failed": (0, frame("EXEC_FAILED", 2, u32(2) +
                            s("cannot run 'foo': No such file or directory"))),
        "signal": (0, frame("STARTED", 3, u32(5)) + frame("EXIT", 3, u32(2) + u32(9))),
        "files": (0, frame("PUT_DONE", 4, u32(0)) + frame("FILE_DATA", 5, b"x" * 200) +
                  frame("FILE_END", 5, u32(0)) + frame("FILE_END", 6, u32(13))),
        "pong": (0, frame("PONG", 0, struct.pack("<Q", 77)) + frame("PING", 0, b"")),
        "malformed": (0, frame("EXIT", 1, u32(1)) + frame("HELLO", 0, u32(1) + u32(1000))),
    }
    for name, (mode, data) in seeds.items():
        write("agent_client", name, bytes([mode]) + data)


# ---- dist (big-endian) ----
DMAGIC = 0x56444932
D = dict(PUSH=1, MANIFEST=2, STATE=3, CHUNK=4, PROGRESS=5, REPORT=6, ERROR=7, PULL=8, QUERY=9,
         HAVE=10)


def crc32c(data):
    crc = 0xffffffff
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xffffffff


def dframe(t, payload):
    if isinstance(payload, (dict, list)):
        payload = json.dumps(payload, separators=(",", ":")).encode()
    return struct.pack(">IB3xI", DMAGIC, D[t], len(payload)) + payload


def dist():
    blobs = {"kernel": b"K" * 1500, "initrd": b"I" * 700}
    man = {"schema": 1, "kind": "minimal", "os": "debian-12", "arch": "x86_64",
           "kernel": "6.1.0-56-cloud-amd64", "packages": {}, "libs": [], "parent": None,
           "size": 2200,
           "blobs": {r: {"digest": hashlib.sha256(b).hexdigest(), "size": len(b)}
                     for r, b in blobs.items()}}
    mbytes = json.dumps(man, sort_keys=True, separators=(",", ":")).encode()
    digest = hashlib.sha256(mbytes).hexdigest()
    push = {"v": 2, "digest": digest, "name": "pushed", "version": 1, "chunk": 4096,
            "timeout_ms": 1000, "seq": False, "self": 0, "children": []}
    # Send order: by size, largest first, then by role name.
    order = sorted(blobs, key=lambda r: (-len(blobs[r]), r))
    chunks = b"".join(dframe("CHUNK", struct.pack(">IIQ", i, crc32c(blobs[r]), 0) + blobs[r])
                      for i, r in enumerate(order))
    write("dist", "push", dframe("PUSH", push) + dframe("MANIFEST", mbytes) + chunks)
    kids = dict(push, children=[{"i": 1, "addr": "127.0.0.1:1", "children": [
        {"i": 2, "addr": "127.0.0.1:2", "children": []}]}])
    write("dist", "push_kids", dframe("PUSH", kids) + dframe("MANIFEST", mbytes) +
          dframe("PROGRESS", {}) + chunks)
    write("dist", "push_badsum", dframe("PUSH", push) + dframe("MANIFEST", mbytes) +
          dframe("CHUNK", struct.pack(">IIQ", 0, 1, 0) + blobs[order[0]]))
    write("dist", "pull", dframe("PULL", {"ref": "img"}) + dframe("STATE", {"have": [0, 0]}) +
          dframe("PROGRESS", {"own": 0, "sub": 0}))
    write("dist", "pull_partial", dframe("PULL", {"ref": "img", "timeout_ms": 500}) +
          dframe("STATE", {"have": [4096, 0]}))
    write("dist", "query", dframe("QUERY", {"ref": "img"}) )
    write("dist", "query_missing", dframe("QUERY", {"ref": "nothere:3"}))
    write("dist", "error", dframe("ERROR", {"error": "no"}))
    write("dist", "notjson", dframe("PULL", b"{not json"))
    write("dist", "badmagic", b"VDI1" + b"\x01\x00\x00\x00\x00\x00\x00\x02{}")


def dist_client():
    blobs = {"kernel": b"K" * 1500, "initrd": b"I" * 700}
    man = {"schema": 1, "kind": "minimal", "os": "debian-12", "arch": "x86_64",
           "kernel": "6.1.0-56-cloud-amd64", "packages": {}, "libs": [], "parent": None,
           "size": 2200,
           "blobs": {r: {"digest": hashlib.sha256(b).hexdigest(), "size": len(b)}
                     for r, b in blobs.items()}}
    mbytes = json.dumps(man, sort_keys=True, separators=(",", ":")).encode()
    push = {"v": 2, "digest": hashlib.sha256(mbytes).hexdigest(), "name": "img", "version": 1,
            "chunk": 4096, "timeout_ms": 1000, "seq": False, "self": 0}
    order = sorted(blobs, key=lambda r: (-len(blobs[r]), r))
    chunks = b"".join(dframe("CHUNK", struct.pack(">IIQ", i, crc32c(blobs[r]), 0) + blobs[r])
                      for i, r in enumerate(order))
    pull = b"\0"
    write("dist_client", "pull", pull + dframe("PUSH", push) + dframe("MANIFEST", mbytes) + chunks)
    write("dist_client", "pull_half", pull + dframe("PUSH", push) + dframe("MANIFEST", mbytes) +
          chunks[:1000])
    write("dist_client", "pull_error", pull + dframe("ERROR", {"error": "no verified copy"}))
    report = dframe("REPORT", {"nodes": [{"i": 0, "ok": True, "reason": "", "bytes": 14000,
                                          "ms": 4}]})
    push_ = b"\1"
    write("dist_client", "push", push_ + dframe("STATE", {"have": [0, 0]}) +
          dframe("PROGRESS", {"own": 14000, "sub": 0}) + report)
    write("dist_client", "push_have", push_ + dframe("STATE", {"have": [9000, 5000]}) + report)
    write("dist_client", "push_partial", push_ + dframe("STATE", {"have": [4096, 0]}) +
          dframe("PROGRESS", {}) + report)
    write("dist_client", "push_refused", push_ + dframe("STATE", {"error": "no room"}))
    write("dist_client", "push_badreport", push_ + dframe("STATE", {"have": [0, 0]}) +
          dframe("REPORT", {"nodes": [{"i": 99, "ok": True}, {"i": -1, "ok": False,
                                                                  "reason": 3}, {}]}))


# ---- store ----
def store():
    man = {"schema": 1, "kind": "full", "os": "debian-12", "arch": "x86_64",
           "kernel": "6.1.0-56-cloud-amd64", "size": 3,
           "blobs": {"kernel": {"digest": "a" * 64, "size": 1},
                     "initrd": {"digest": "b" * 64, "size": 1},
                     "rootfs": {"digest": "c" * 64, "size": 1, "format": "squashfs"}},
           "packages": {"openmpi-bin": {"version": "4.1.4-3", "source": "openmpi",
                                        "source_version": "4.1.4-3"}},
           "libs": ["libc.so.6", "libmpi.so.40"], "parent": None,
           "inputs": {"packages": ["openmpi-bin"]}, "inputs_digest": "d" * 64}
    mtext = json.dumps(man, sort_keys=True, separators=(",", ":"))
    refs = {"full": [{"version": 1, "digest": "@MANIFEST@", "created": 1700000000},
                     {"version": 2, "digest": "@MANIFEST@", "created": 1700000100}],
            "minimal": [{"version": 1, "digest": "e" * 64, "created": 1}]}
    rtext = json.dumps(refs, indent=1)
    for name, q in [("name", "full"), ("version", "full:1"), ("digest", "@MANIFEST@"[:0] + "dddd"),
                    ("at", "full@abcd"), ("missing", "nothere:9")]:
        write("store", name, "\0".join([rtext, mtext, q, "1G\n"]))
    write("store", "corrupt_refs", "\0".join(['{"full": 3, "x": [{"version": "a"}]}', mtext,
                                              "full", "12345"]))
    write("store", "empty", "\0\0\0")


def select():
    write("select", "job", "# a job\nvms 2\nvcpus 1\nmem 512M\nimage minimal\n"
          "command mpirun -np 2 ./hello # not a comment\n")
    write("select", "require", "require openmpi>=4.1\nrequire lib:libfftw3.so.3\n"
          "build-missing\neach\naccel tcg\nname job1\ncommand hostname\n")
    write("select", "bad", "vms\nunknown 3\n")
    write("select", "crlf", "vms = 2\r\n  # indented\r\n\tcommand\t= true\r\n")


def qmp():
    greet = '{"QMP": {"version": {"qemu": {"micro": 2, "minor": 2, "major": 7}}, ' \
        '"package": "Debian 1:7.2+dfsg-7"}, "capabilities": ["oob"]}}\r\n'
    write("qmp", "greeting", greet + '{"return": {}}\r\n')
    write("qmp", "status", '{"return": {"status": "running", "singlestep": false, '
          '"running": true}}\r\n{"event": "STOP", "timestamp": {"seconds": 1, '
          '"microseconds": 2}}\r\n')
    write("qmp", "error", '{"error": {"class": "GenericError", "desc": "no such device"}}\r\n'
          '{"error": 3}\r\n{"return": []}\r\n')
    write("qmp", "events", "".join('{"event": "%s", "data": {"reason": "x"}}\r\n' % e
                                   for e in ["RESUME", "SHUTDOWN", "MIGRATION", "STOP"]) +
          '{"return": {}}\r\n')
    write("qmp", "bad", '[1,2]\r\n{"return"\r\nnot json\r\n{"return": {}}')


def newc(entries):
    out = b""
    ino = 1
    for name, mode, data in entries + [("TRAILER!!!", 0, b"")]:
        nb = name.encode() + b"\0"
        hdr = "070701" + "".join("%08x" % v for v in
                                 [ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(nb), 0])
        e = hdr.encode() + nb
        e += b"\0" * (-len(e) % 4)
        e += data + b"\0" * (-len(data) % 4)
        out += e
        ino += 1
    return out + b"\0" * (-len(out) % 512)


def cpio():
    write("cpio", "small", newc([("bin", 0o40755, b""), ("bin/sh", 0o100755, b"#!/bin/sh\n"),
                                 ("init", 0o120777, b"bin/sh"), ("dev/console", 0o20600, b"")]))
    write("cpio", "empty", newc([]))
    write("cpio", "truncated", newc([("etc/vhpc/env", 0o100644, b"A=1\n" * 20)])[:150])


def debver():
    for i, pair in enumerate(["1.0\n1.0-1", "1:2.3~rc1-4\n2.3", "4.1.4-3\n4.1",
                              "6.1.0-56-cloud-amd64\n6.1", "1.10\n1.9", "0:1.0+b1\n1.0~~",
                              "2.36-9+deb12u4\n2.36-9", "a\n1:"]):
        write("debver", "pair%d" % i, pair)


def match():
    man = json.dumps({"os": "debian-12", "kernel": "6.1.0-56-cloud-amd64",
                      "libs": ["libfftw3.so.3", "libc.so.6"],
                      "packages": {"openmpi-bin": {"version": "4.1.4-3", "source": "openmpi",
                                                   "source_version": "4.1.4-3"}}})
    for i, r in enumerate(["os=debian-12", "os>=debian-11", "kernel>=6.1", "kernel=6.1.0-56",
                           "lib:libfftw3", "lib:libfftw3.so.3", "openmpi>=4.1", "openmpi",
                           "openmpi-bin<<5", "fftw!=3", "x>>", "=1"]):
        write("match", "req%d" % i, r + "\n" + man)


# ---- ivcd: operation lists (see fuzz_ivcd.c) ----
def ivcd():
    def ctl(line):
        b = line.encode()
        return bytes([3, len(b)]) + b
    write("ivcd", "status", bytes([0, 0]) + ctl("status\n") + ctl("list\n"))
    write("ivcd", "suspend", bytes([0, 0]) + ctl("suspend 0 --timeout 200\n") + bytes([4, 2]) +
          bytes([4, 10]) + ctl("resume 0\n"))
    write("ivcd", "leave", bytes([0, 0, 0, 1, 1, 5, 0]) + ctl("list\n") + bytes([4, 1, 1, 0]))
    write("ivcd", "bad_ctl", ctl("suspend 99\n") + ctl("resume x\n") + ctl("a b c d e f g h i j\n")
          + ctl("\x01\x02\n") + ctl("nothing") + bytes([6, 4]))
    # Scribble on the tables (offsets past the header) then tick.
    write("ivcd", "scribble", bytes([0, 0]) + bytes([2, 0x00, 0x10, 16]) + b"\xff" * 16 +
          bytes([4, 3]) + ctl("list\n") + bytes([1, 0, 4, 200]))


def ivshmem(ivcd_bin):
    d = tempfile.mkdtemp()
    sock = os.path.join(d, "ivc.sock")
    p = subprocess.Popen([ivcd_bin, "--job", "7", "--socket", sock, "--size", "1M",
                          "--max-peers", "4", "--max-endpoints", "4",
                          "--conns-per-endpoint", "4"], stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            if os.path.exists(sock):
                break
            time.sleep(0.02)
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.connect(sock)
        msgs, memfd = [], None
        c.settimeout(1.0)
        while len(msgs) < 4:
            data, anc, _, _ = c.recvmsg(8, socket.CMSG_SPACE(4 * 4))
            fds = array.array("i")
            for lvl, typ, cd in anc:
                fds.frombytes(cd[:len(cd) - len(cd) % 4])
            v = struct.unpack("<q", data)[0]
            flags = 0
            if v == -1 and fds:
                memfd = fds[0]
                flags = 1
            elif fds:
                flags = 2
                for f in fds:
                    os.close(f)
            msgs.append((flags, v))
        m = mmap.mmap(memfd, 1 << 20)
        # The header and tables: up to the last non-zero byte of the first 64 KiB.
        head = bytes(m[:65536]).rstrip(b"\0")
        m.close()
        os.close(memfd)
        c.close()
    finally:
        p.terminate()
        p.wait()
        for f in os.listdir(d):
            os.unlink(os.path.join(d, f))
        os.rmdir(d)

    def enc(ms, region):
        return bytes([len(ms)]) + b"".join(bytes([f]) + struct.pack("<q", v) for f, v in ms) + \
            region
    write("ivshmem", "attach", enc(msgs, head))
    write("ivshmem", "peers", enc(msgs + [(2, 2), (2, 3), (0, 2)], head))
    write("ivshmem", "bad_version", enc([(0, 1)] + msgs[1:], head))
    write("ivshmem", "no_fd", enc([msgs[0], msgs[1], (0, -1)], head))
    write("ivshmem", "bad_header", enc(msgs, b"\xff" * 64 + head[64:]))


# ---- the provider "ivc": operation lists (see fuzz_fi.c) around its frames ----
# (src/fi/ivf_proto.h: host order, little-endian here; the address's port in
# network order).  The harness's tunables: eager_max 512, chunk 256, credit 2048.
FI = dict(HELLO=1, EAGER=2, RTS=3, CTS=4, DATA=5, ACK=6, FLUSH=7, IVC_HELLO=8, CREDIT=9,
          MOVE=10, MOVED=11)
F_TAGGED, F_CQDATA, F_ACK = 1, 2, 4
PROTO = 2  # IVF_PROTO_VERSION


def fhdr(t, flags=0, length=0, tag=0, data=0, id=0, size=0, version=PROTO):
    return struct.pack("<BBBBIQQQQ", version, FI[t] if isinstance(t, str) else t, flags, 0,
                       length, tag, data, id, size)


def fhello(uid, version=PROTO):
    addr = struct.pack("<IH", 0x49564641, 1) + struct.pack(">H", 5555) + bytes(10) + \
        b"\xff\xff" + bytes([127, 0, 0, 1]) + struct.pack("<QQII", uid, 0, 0, 0)
    return fhdr("HELLO", length=len(addr), version=version) + addr


def feager(payload, tag=0, flags=F_TAGGED, data=0, id=0):
    return fhdr("EAGER", flags, len(payload), tag, data, id) + payload


def fdata(rid, total, piece):
    return b"".join(fhdr("DATA", length=min(piece, total - off), id=rid, size=off) +
                    bytes([off & 0xff]) * min(piece, total - off)
                    for off in range(0, total, piece))


def fi_ops():
    # Operations: 0 c n16 bytes (peer c writes; c & 2 when its connection opens:
    # the peer never reads what the endpoint sends), 1 f t k (receive), 2 k (cancel),
    # 3 f k (send), 4 c (peer c closes), 5 c n16 bytes (in the c-th peer's IVC ring).  Receive f: bit 0 tagged, bits 1-2 size
    # (0, 24, 512, 3000), bit 3 two pieces, bits 4-6 flags (-, PEEK, PEEK|CLAIM,
    # PEEK|DISCARD, CLAIM, CLAIM|DISCARD), bit 7 directed.  Send f: bit 0 peer,
    # bit 1 tagged, bits 2-3 size, bit 4 DELIVERY_COMPLETE, bit 5 FI_INJECT, bit 6 CQ
    # data, bit 7 by fi_inject (no completion).
    def w(c, data):
        return bytes([0, c]) + struct.pack("<H", len(data)) + data

    def w_deaf(c, data):
        return bytes([0, c | 2]) + struct.pack("<H", len(data)) + data

    def recv(f, t, k):
        return bytes([1, f, t, k])

    def ring(c, data):  # bytes in the IVC ring of the c-th peer (the direct path)
        return bytes([5, c]) + struct.pack("<H", len(data)) + data

    def send(f, k):
        return bytes([3, f, k])

    h1, h2 = fhello(0x11), fhello(0x22)
    tagged24, tagged512, tagged3000 = 1 | 1 << 1, 1 | 2 << 1, 1 | 3 << 1
    seeds = {
        "eager_unexpected": w(0, h1 + feager(b"hello world!", 5)) + recv(tagged24, 5, 0),
        "eager_posted": recv(tagged24, 5, 0) + w(0, h1 + feager(b"hello world!", 5)) +
        recv(1 << 1, 0, 1) + w(0, feager(b"untagged", 0, F_CQDATA, data=0xfeed)),
        "eager_truncated": recv(1 | 1 << 1 | 8, 2, 0) + w(0, h1 + feager(b"x" * 100, 2)),
        "eager_ack": recv(tagged24, 6, 0) + w(0, h1 + feager(b"ack me", 6, F_TAGGED | F_ACK,
                                                          id=77)),
        "rndv_posted": recv(tagged3000, 7, 0) + w(0, h1 + fhdr("RTS", F_TAGGED, tag=7, id=9,
                                                                size=3000)) +
        w(0, fdata(1, 3000, 1000)),
        "rndv_unexpected": w(0, h1 + fhdr("RTS", F_TAGGED | F_ACK, tag=7, id=9, size=3000)) +
        recv(tagged3000 | 8, 7, 0) + w(0, fdata(1, 3000, 256)),
        "rndv_truncated": recv(tagged512, 7, 0) + w(0, h1 + fhdr("RTS", F_TAGGED, tag=7, id=9,
                                                                  size=3000)) +
        w(0, fdata(1, 512, 512)),
        "rndv_empty": recv(1, 7, 0) + w(0, h1 + fhdr("RTS", F_TAGGED, tag=7, id=9, size=3000)),
        "send_credit": w(0, h1) + send(2 | 1 << 2, 0) + w(0, fhdr("CREDIT", data=24)) +
        send(2 | 3 << 2 | 0x10, 1) + w(0, fhdr("CTS", id=1, data=5, size=3000)) +
        w(0, fhdr("ACK", id=1)) + send(2 | 1 << 2 | 0x10, 2) + w(0, fhdr("ACK", id=2)) +
        send(0x20 | 0x40 | 1 << 2, 3) + send(0x20 | 3 << 2, 4) + w(0, fhdr("CTS", id=3, size=0)) +
        send(0x80 | 0x40 | 2 | 1 << 2, 5) + send(0x80 | 3 << 2, 6) + w(0, fhdr("CTS", id=4)),
        "peek_claim": w(0, h1 + feager(b"first", 3) + feager(b"second", 3)) +
        recv(1 | 2 << 4, 3, 1) + recv(tagged24 | 4 << 4, 3, 1) + recv(1 | 3 << 4, 3, 2) +
        recv(1 | 1 << 4, 3, 3),
        "discard_ack": w(0, h1 + feager(b"ack?", 3, F_TAGGED | F_ACK, id=5)) +
        recv(1 | 3 << 4, 3, 0),
        "eager_waiting": w(0, h1 + feager(b"y" * 100, 4)[:40 + 50]) + recv(tagged512, 4, 0) +
        w(0, b"y" * 50),
        "eager_waiting_cancel": w(0, h1 + feager(b"y" * 100, 4)[:40 + 50]) +
        recv(tagged512, 4, 0) + bytes([2, 0]) + w(0, b"y" * 50) + recv(tagged512, 4, 1),
        "two_peers": w(0, h1 + feager(b"from one", 1)) + w(1, h2 + feager(b"from two", 1)) +
        recv(tagged24 | 0x80, 1, 0) + recv(tagged24, 1, 1) + send(1 | 2 | 1 << 2, 0),
        "reconnect": w(0, h1 + feager(b"before", 1)) + bytes([4, 0]) +
        w(0, h1 + feager(b"after", 1)) + recv(tagged24, 1, 0) + recv(tagged24, 1, 1),
        "eof_mid_frame": w(0, h1 + feager(b"z" * 100, 1)[:60]) + recv(tagged512, 1, 0) +
        bytes([4, 0]),
        "credit_overrun": w(0, h1 + b"".join(feager(b"c" * 512, 8) for _ in range(5))) +
        recv(tagged512, 8, 0),
        "flush": w(0, h1 + fhdr("FLUSH", id=5) + feager(b"after flush", 1)),
        "many_small": w(0, h1 + b"".join(feager(b"", i % 4, F_TAGGED if i % 2 else 0)
                                         for i in range(64))) +
        b"".join(recv(i % 2 | 1 << 1, (i // 2) % 4, i % 8) for i in range(16)),
        "deaf": w_deaf(0, h1 + b"".join(feager(b"x" * 512, 6) for _ in range(3))) +
        recv(tagged512, 6, 0) + send(2 | 3 << 2, 0) + send(2 | 1 << 2, 1) + recv(tagged512, 6, 1),
        "unreachable": send(2 | 1 << 2, 0) + send(1 | 2 | 3 << 2, 1),
        "bad_hello": w(0, fhello(0x11, version=PROTO - 1)) + w(1, h2[:50]) + bytes([4, 1]),
        "bad_version": w(0, h1 + fhdr("EAGER", F_TAGGED, version=PROTO + 1)),
        "bad_move": w(0, h1 + fhdr("MOVE") + feager(b"lost", 1)) + w(1, h2 + fhdr("MOVED")) +
        recv(tagged24, 1, 0),
        "bad_type": w(0, h1 + fhdr(12)),
        "bad_payload": w(0, h1 + fhdr("CTS", length=4) + b"abcd"),
        "bad_sizes": w(0, h1 + fhdr("EAGER", length=0xffffffff)) +
        w(1, h2 + fhdr("RTS", size=1 << 41)),
        "bad_names": w(0, h1 + fhdr("DATA", length=8, id=3) + b"d" * 8) +
        w(1, h2 + fhdr("CTS", id=42, size=10)),
        "bad_ack": w(0, h1) + send(2 | 3 << 2, 0) + w(0, fhdr("ACK", id=1) +
                                                       fhdr("CTS", id=1, size=3000)),
        "bad_credit": w(0, h1 + fhdr("CREDIT", data=1)) + w(1, h2 + fhdr("ACK", id=1)),
        "ring_direct": w(0, h1) + recv(tagged24, 5, 0) + recv(1 << 1, 0, 1) +
        recv(tagged24, 9, 2) + ring(0, feager(b"direct!", 5) + feager(b"msg", 0, F_CQDATA, data=9) +
                                    feager(b"nobody waits", 7) + feager(b"late", 9)) +
        recv(tagged24, 7, 3),
        "ring_not_direct": w(0, h1) + recv(tagged24, 5, 0) + recv(tagged512, 6, 1) +
        ring(0, feager(b"x" * 100, 5)) + ring(0, feager(b"ack", 6, F_TAGGED | F_ACK, id=3)) +
        ring(0, feager(b"cut short", 6)[:45]) + ring(0, fhdr("CTS", id=1, size=10)) +
        ring(0, fhdr("EAGER", F_TAGGED, length=0xffffffff, tag=6)),
        "ring_credit": w(0, h1) + b"".join(recv(tagged512, 8, k) for k in range(5)) +
        ring(0, b"".join(feager(b"c" * 512, 8) for _ in range(5))),
    }
    for name, data in seeds.items():
        write("fi", name, data)

    # The dictionary (run.sh passes it to libFuzzer): whole frames, alone and
    # as a write operation of one frame, for the mutations to splice in.
    frames = {"cts%d" % i: fhdr("CTS", id=i, data=i, size=3000) for i in (1, 2, 3)}
    frames.update({"ack%d" % i: fhdr("ACK", id=i) for i in (1, 2, 3)})
    frames.update({"data%d" % i: fhdr("DATA", length=8, id=i, size=0) + b"d" * 8 for i in (1, 2)})
    frames.update({
        "credit": fhdr("CREDIT", data=24), "cts_none": fhdr("CTS", id=1, size=0),
        "rts": fhdr("RTS", F_TAGGED, tag=7, id=9, size=3000),
        "rts_ack": fhdr("RTS", F_TAGGED | F_ACK, tag=1, id=9, size=600),
        "eager": feager(b"12345678", 1), "eager_msg": feager(b"", 0, F_CQDATA, data=1),
        "eager_ack": feager(b"ack", 1, F_TAGGED | F_ACK, id=4), "flush": fhdr("FLUSH", id=1),
        "move": fhdr("MOVE"), "moved": fhdr("MOVED"),
        "eager_head": fhdr("EAGER", F_TAGGED, length=100, tag=1)})
    lines = []
    for name, f in sorted(frames.items()):
        for c in (0, 1):
            lines.append((name + "_w%d" % c, bytes([0, c]) + struct.pack("<H", len(f)) + f))
        lines.append((name, f))
    with open(os.path.join(HERE, "fi.dict"), "w") as out:
        out.write("# fuzz_fi's dictionary, written by gen_corpus.py: frames of ivf_proto.h\n")
        for name, d in lines:
            out.write('%s="%s"\n' % (name, "".join("\\x%02x" % b for b in d)))


def main():
    args = sys.argv[1:]
    agent_side()
    agent_client()
    dist()
    dist_client()
    store()
    select()
    qmp()
    cpio()
    debver()
    match()
    ivcd()
    fi_ops()
    if "--ivcd" in args:
        ivshmem(args[args.index("--ivcd") + 1])


if __name__ == "__main__":
    main()
