#!/usr/bin/env python3
"""usage: cleartext.py SRC DST PORT COUNT

Sends COUNT UDP datagrams from SRC to DST:PORT (IPv4) through a raw IP socket with our own IP
header. Such a socket's route lookup carries protocol IPPROTO_RAW, not UDP, so the sender's
XFRM policies (which select udp to PORT) do not apply: the datagrams leave in clear, exactly
what a peer without IPsec, or an attacker spoofing the peer's underlay address, would send.
"""
import socket
import struct
import sys


def datagram(src, dst, port, payload):
    udp = struct.pack("!HHHH", 40000, port, 8 + len(payload), 0) + payload
    # Version/IHL, TOS, total length, id, flags/fragment, TTL, protocol, checksum (the kernel
    # fills the checksum and the id when they are 0).
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, socket.IPPROTO_UDP, 0,
                     socket.inet_aton(src), socket.inet_aton(dst))
    return ip + udp


def main():
    src, dst, port, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    for i in range(count):
        sock.sendto(datagram(src, dst, port, b"cleartext %d" % i), (dst, 0))


if __name__ == "__main__":
    main()
