# NBD load: CONNS connections, each with QD reads of SIZE bytes in flight at
# random 4 KiB-aligned offsets, for DUR seconds; every reply is compared
# with the raw image RAW. Prints "reads N"; exits 1 on a wrong byte.
import os, random, select, sys, time
import nbd
uri, raw = os.environ["URI"], open(os.environ["RAW"], "rb").read()
conns, qd, size = int(os.environ["CONNS"]), int(os.environ["QD"]), int(os.environ["SIZE"])
stop = time.monotonic() + float(os.environ["DUR"])
rng = random.Random(7)
hs = []
for _ in range(conns):
    h = nbd.NBD()
    h.connect_uri(uri)
    hs.append([h, []])
blocks = (hs[0][0].get_size() - size) // 4096
reads = 0
def issue(e):
    off = rng.randrange(blocks) * 4096
    ba = bytearray(size)
    e[1].append((e[0].aio_pread(nbd.Buffer.from_buffer(ba), off), ba, off))
for e in hs:
    for _ in range(qd):
        issue(e)
while any(e[1] for e in hs):
    rl, wl, byfd = [], [], {}
    for e in hs:
        fd, d = e[0].aio_get_fd(), e[0].aio_get_direction()
        byfd[fd] = e[0]
        if d & nbd.AIO_DIRECTION_READ: rl.append(fd)
        if d & nbd.AIO_DIRECTION_WRITE: wl.append(fd)
    r, w, _ = select.select(rl, wl, [], 1.0)
    for fd in r: byfd[fd].aio_notify_read()
    for fd in w: byfd[fd].aio_notify_write()
    for e in hs:
        left = []
        for cookie, ba, off in e[1]:
            if not e[0].aio_command_completed(cookie):
                left.append((cookie, ba, off))
                continue
            reads += 1
            if ba != raw[off:off + size]:
                print("WRONG DATA: read of %d bytes at %d" % (size, off))
                sys.exit(1)
        e[1] = left
        if time.monotonic() < stop:
            while len(e[1]) < qd:
                issue(e)
for e in hs:
    e[0].shutdown()
print("reads %d" % reads)
