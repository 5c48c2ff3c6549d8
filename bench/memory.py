#!/usr/bin/env python3
"""What connections, blocking queries and oversized uploads cost an agent
in memory, and whether it gives memory back. Run by bench/memory.sh, which
starts the agent; this holds the load and reads the agent's RSS.

Usage: memory.py HTTP_PORT AGENT_PID CONNS UPLOADS UPLOAD_MB SETTLE
Prints one table: each figure beside its goal (issue 20).
"""
import socket
import sys
import threading
import time

port, pid, conns, uploads, upload_mb, settle = (int(a) for a in sys.argv[1:7])


def rss_mib():
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise SystemExit(f"agent {pid} is gone")


def hold(request):
    """Opens `conns` connections, sending `request` on each if given."""
    held = []
    for i in range(conns):
        s = socket.create_connection(("127.0.0.1", port))
        if request:
            s.sendall(request(i))
        held.append(s)
    time.sleep(3)
    return held


def close(held):
    for s in held:
        s.close()


rows = []
idle = rss_mib()

held = hold(None)
with_idle = rss_mib()
close(held)
time.sleep(5)
rows.append((f"{conns} idle HTTP connections, above idle", with_idle - idle, "<= 100 MiB"))

blocking = lambda i: f"GET /v1/kv/memory-bench-{i % 100}?index=99999999&wait=120s HTTP/1.1\r\nHost: weft\r\n\r\n".encode()
held = hold(blocking)
with_blocking = rss_mib()
close(held)
rows.append((f"{conns} blocking queries, above idle", with_blocking - idle, "<= 150 MiB"))
time.sleep(settle)
rows.append((f"{settle} s after they closed, above idle", rss_mib() - idle, "<= 25 MiB"))

# Uploads: each declares upload_mb MiB and sends as fast as it can.
base = rss_mib()
peak = [base]
statuses = []
done = threading.Event()


def sample():
    while not done.is_set():
        peak[0] = max(peak[0], rss_mib())
        time.sleep(0.05)


def upload(i):
    size = upload_mb << 20
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(f"PUT /v1/kv/memory-bench-upload-{i} HTTP/1.1\r\nHost: weft\r\nContent-Length: {size}\r\n\r\n".encode())
    chunk = b"x" * (1 << 20)
    sent = 0
    try:
        while sent < size:
            s.sendall(chunk)
            sent += len(chunk)
    except OSError:
        pass  # refused before the body was read: the server closed
    s.settimeout(10)
    try:
        answer = s.recv(200).decode(errors="replace")
        statuses.append(answer.split(" ")[1] if answer.startswith("HTTP/1.1 ") else "closed")
    except OSError:
        statuses.append("reset")
    s.close()


sampler = threading.Thread(target=sample)
sampler.start()
threads = [threading.Thread(target=upload, args=(i,)) for i in range(uploads)]
for t in threads:
    t.start()
for t in threads:
    t.join()
done.set()
sampler.join()
rows.append((f"{uploads} x {upload_mb} MiB uploads, peak above idle", peak[0] - base, "<= 50 MiB"))
refused = sum(1 for s in statuses if s == "413")

print(f"agent idle RSS: {idle:.1f} MiB")
print(f"{'what':<44} {'MiB':>8}  goal")
for what, mib, goal in rows:
    print(f"{what:<44} {mib:>8.1f}  {goal}")
print(f"uploads answered 413: {refused} of {uploads} ({', '.join(statuses)})")
