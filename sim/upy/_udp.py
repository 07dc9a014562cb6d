"""Simulated UDP sockets (socket.socket(AF_INET, SOCK_DGRAM)): datagrams to port 123 reach a
simulated NTP server (ctl "ntp"); others are dropped. Takes itself out of sys.modules as it
loads, so it is on the board's heap only while a socket lives (on a chip: C in flash).

Sim-only; never sends a real datagram."""

import struct
import sys
import utime
import _sim
from socket import _link

# Errno values of ESP-IDF's newlib errno.h, which the esp32 port raises as they are:
# modsocket.c _socket_read_data() gives MP_EWOULDBLOCK on a non-blocking socket and
# MP_ETIMEDOUT when a settimeout() expires ("[Errno 116] ETIMEDOUT" on current boards).
EAGAIN = 11
ETIMEDOUT = 116
EBADF = 9
NTP_PORT = 123
_NTP_DELTA = 2208988800  # seconds from 1900-01-01 (NTP era 0) to 1970-01-01


def _port(addr):
    if isinstance(addr, tuple):
        return addr[1]
    return (addr[2] << 8) | addr[3]  # struct sockaddr_in: family, port (big endian), addr


def _world_us():
    if _sim.EPOCH_S:
        return _sim.EPOCH_S * 1000000 + _sim.now_us()
    return utime.time_ns() // 1000


class Udp:
    """A UDP socket whose datagrams to port 123 reach the simulated NTP server. ctl "ntp":
    rtt_ms (round trip, default 30), lost (true: no answer ever comes), offset_ms (the
    server's clock minus world UTC). Other datagrams are dropped, like an unanswered query."""

    def __init__(self):
        self._timeout_ms = -1  # blocking, as lwip sockets start (settimeout(None))
        self._reply = None
        self._due = 0
        self._closed = False

    def settimeout(self, t):
        self._timeout_ms = -1 if t is None else int(t * 1000)

    def setblocking(self, flag):
        self._timeout_ms = -1 if flag else 0

    def sendto(self, data, addr):
        if self._closed:
            raise OSError(EBADF)
        if _port(addr) != NTP_PORT or len(data) < 48 or not _link():
            return len(data)
        _sim.ctl.poll()
        n = _sim.ctl.state.get("ntp") or {}
        if n.get("lost", False):
            return len(data)
        rtt = int(n.get("rtt_ms", 30))
        # The server stamps its receive and transmit times half a round trip from now.
        us = _world_us() + rtt * 500 + int(n.get("offset_ms", 0)) * 1000
        sec = us // 1000000 + _NTP_DELTA
        frac = (us % 1000000) * 4294967296 // 1000000
        r = bytearray(48)
        r[0] = 0x24  # LI 0, version 4, mode 4 (server)
        r[1] = 2  # stratum 2
        r[2] = 6
        r[3] = 0xEC  # precision 2^-20 s
        r[12:16] = b"SIM\x00"  # reference id
        r[24:32] = data[40:48]  # originate: the client's transmit timestamp
        for off in (16, 32, 40):  # reference, receive, transmit
            struct.pack_into("!II", r, off, sec, frac)
        self._reply = bytes(r)
        self._due = utime.ticks_add(utime.ticks_ms(), _sim.real_ms(rtt))
        return len(data)

    def _take(self, n):
        if self._closed:
            raise OSError(EBADF)
        wait = -1 if self._reply is None else max(0, utime.ticks_diff(self._due,
                                                                       utime.ticks_ms()))
        if wait == 0:
            r = self._reply
            self._reply = None
            return r[:n]
        if self._timeout_ms == 0:
            raise OSError(EAGAIN)
        limit = _sim.real_ms(self._timeout_ms) if self._timeout_ms > 0 else -1
        if wait < 0 or (limit >= 0 and wait > limit):
            if limit < 0:
                limit = 3600000  # blocking forever: an hour stands in for it
            utime.sleep_us(limit * 1000)
            raise OSError(ETIMEDOUT)
        utime.sleep_us(wait * 1000)
        return self._take(n)

    def recv(self, n):
        return self._take(n)

    def recvfrom(self, n):
        return self._take(n), ("10.0.0.1", NTP_PORT)

    def readinto(self, buf):
        r = self._take(len(buf))
        buf[: len(r)] = r
        return len(r)

    def close(self):
        self._closed = True
        self._reply = None


sys.modules.pop(__name__, None)  # see the module docstring
