"""Simulated `ntptime`, behaving as micropython-lib's: settime() resolves the host (blocking,
see socket.getaddrinfo), sends one query over a blocking UDP socket with `timeout` and sets
machine.RTC() from the answer. Never changes the host clock.

Raises what the chip raises: OSError(-202) when the name does not resolve, OSError(116)
(ETIMEDOUT) when no answer comes within `timeout` seconds."""

import struct
import time as _time

import socket

host = "pool.ntp.org"
timeout = 1  # seconds, micropython-lib ntptime's default


def time():
    """Seconds since the port's epoch (gmtime(0)), from one NTP query; blocks meanwhile."""
    q = bytearray(48)
    q[0] = 0x1B  # version 3, mode 3 (client)
    addr = socket.getaddrinfo(host, 123)[0][-1]
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.settimeout(timeout)
        s.sendto(q, addr)
        msg = s.recv(48)
    finally:
        s.close()
    secs = struct.unpack("!I", msg[40:44])[0]
    return secs - (3155673600 if _time.gmtime(0)[0] == 2000 else 2208988800)


def settime():
    t = time()
    import machine

    tm = _time.gmtime(t)
    machine.RTC().datetime((tm[0], tm[1], tm[2], tm[6] + 1, tm[3], tm[4], tm[5], 0))
