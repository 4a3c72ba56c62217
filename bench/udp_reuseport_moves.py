#!/usr/bin/env python3
"""How many UDP clients an SO_REUSEPORT group moves to another socket when it changes.

The UDP data plane serves a port from one socket on one thread (src/server/data/udp/mod.rs);
this measures why not a group of one socket per thread: the kernel hashes a client's
address onto a socket of the group, and the hash's target changes with the group's size,
so a client whose flow lives in one thread's table would reach another thread's.
Run: python3 bench/udp_reuseport_moves.py  (loopback, a second or two)
"""
import socket
import time

CLIENTS = 1000


def member(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.bind(("127.0.0.1", port))
    s.setblocking(False)
    return s


def where(group, clients, port):
    """Which socket of the group each client's datagram reached."""
    for c in clients:
        c.sendto(b"x", ("127.0.0.1", port))
    seen, deadline = {}, time.monotonic() + 5
    while len(seen) < len(clients) and time.monotonic() < deadline:
        for i, s in enumerate(group):
            try:
                _, addr = s.recvfrom(16)
                seen[addr] = s
            except BlockingIOError:
                pass
    assert len(seen) == len(clients), f"{len(seen)} of {len(clients)} datagrams arrived"
    return seen


def main():
    first = member(0)
    port = first.getsockname()[1]
    group = [first, member(port)]
    clients = []
    for _ in range(CLIENTS):
        c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        c.bind(("127.0.0.1", 0))
        clients.append(c)
    before = where(group, clients, port)
    group.append(member(port))
    grown = where(group, clients, port)
    moved = sum(1 for a in before if before[a] is not grown[a])
    print(f"group 2 -> 3 sockets: {moved} of {CLIENTS} clients ({100 * moved / CLIENTS:.0f} %) reach another socket")
    group[0].close()
    group = group[1:]
    shrunk = where(group, clients, port)
    moved = sum(1 for a in grown if grown[a] is not shrunk[a])
    print(f"group 3 -> 2 sockets (one closed): {moved} of {CLIENTS} clients ({100 * moved / CLIENTS:.0f} %) reach another socket")


if __name__ == "__main__":
    main()
