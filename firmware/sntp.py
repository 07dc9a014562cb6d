"""SNTP for the loop: one query over a non-blocking UDP socket, polled every network step; the
answer sets machine.RTC(), a lost one gives up after TIMEOUT_MS. Loaded only during an exchange.

Never waits on the socket; the only blocking call is the DNS look-up of HOST (done once,
cached, with the watchdog fed around it by lookup.py)."""

import socket
import struct
import time

import machine
from micropython import const

import app

HOST = "pool.ntp.org"  # as micropython-lib's ntptime; a name, so looked up once (cached)
TIMEOUT_MS = const(2000)  # no answer by then: the exchange failed (the loop was never held)
RETRY_MS = const(60000)  # first retry after a failure, doubling up to the interval
_RERESOLVE_AFTER = const(3)  # failed exchanges in a row before HOST is looked up again
_EAGAIN = const(11)
# app.Board.ntp: [due (ticks_ms), socket, server address, sent (ticks_ms), our transmit
# timestamp, syncs, failures, failures in a row]
_DUE = const(0)
_SOCK = const(1)
_ADDR = const(2)
_SENT = const(3)
_COOKIE = const(4)
_SYNCS = const(5)
_FAILS = const(6)
_ROW = const(7)


def step(self, now):
    """Advance the exchange of app.Board `self`; True once it is over (synced or failed)."""
    n = self.ntp
    if n is None:
        n = self.ntp = [now, None, None, now, None, 0, 0, 0]
        if self.reset_cause == "deep_sleep" and time.gmtime()[0] >= 2024:
            # The RTC ran through the sleep; a wake's awake time is short and bounded, so a
            # battery board does not spend it (nor risk a DNS look-up) on NTP.
            n[_DUE] = time.ticks_add(now, max(60, self.cfg["ntp"]) * 1000)
            return True
    s = n[_SOCK]
    if s is None:
        return _start(self, n, now)
    try:
        msg = s.recv(48)
    except OSError as e:
        if e.args[0] == _EAGAIN:
            if time.ticks_diff(now, n[_SENT]) < TIMEOUT_MS:
                return False
            return _end(self, n, now, "no answer in %d ms" % TIMEOUT_MS)
        return _end(self, n, now, e)
    # A server reply (mode 4) from a synchronised server (stratum 1-15) to our query.
    if len(msg) < 48 or msg[0] & 7 != 4 or not 0 < msg[1] < 16 or msg[24:32] != n[_COOKIE]:
        return False  # not ours: keep waiting until the timeout
    rtt = time.ticks_diff(time.ticks_ms(), n[_SENT])
    step_ms = _set_rtc(msg, rtt)
    app.log("ntp", "synced", "step_ms", step_ms, "rtt_ms", rtt)
    n[_SYNCS] += 1
    return _end(self, n, now, None)


def _start(self, n, now):
    host = HOST
    if n[_ADDR] is None:
        def look():
            n[_ADDR] = socket.getaddrinfo(host, 123)[0][-1]

        import lookup

        err = lookup.run(self, look, host)
        app.drop("lookup")
        if err is not None:
            return _end(self, n, now, err)
    q = bytearray(48)
    q[0] = 0x23  # LI 0, version 4, mode 3 (client)
    # Transmit timestamp: any value the server copies into the originate field of its reply
    # (boot and exchange number tell our answer from a late one to an earlier query).
    struct.pack_into("!II", q, 40, self.boot, n[_SYNCS] + n[_FAILS] + 1)
    n[_COOKIE] = bytes(q[40:48])
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        n[_SOCK] = s
        s.setblocking(False)
        s.sendto(q, n[_ADDR])
    except OSError as e:
        return _end(self, n, now, e)
    n[_SENT] = n[_DUE] = time.ticks_ms()  # due again at every network step until the end
    return False


def _end(self, n, now, err):
    s = n[_SOCK]
    n[_SOCK] = None
    if s is not None:
        try:
            s.close()
        except OSError:
            pass
    interval = max(60, self.cfg["ntp"]) * 1000
    if err is None:
        n[_ROW] = 0
        n[_DUE] = time.ticks_add(now, interval)
        return True
    n[_FAILS] += 1
    n[_ROW] += 1
    if n[_ROW] % _RERESOLVE_AFTER == 0:
        n[_ADDR] = None
    wait = min(RETRY_MS << min(n[_ROW] - 1, 10), interval)
    n[_DUE] = time.ticks_add(now, wait)
    app.log("ntp", "failed", err, "retry_s", wait // 1000)
    return True


def _set_rtc(msg, rtt):
    """Set the RTC to the server's transmit time plus half the round trip; returns the step
    (ms) applied. NTP seconds count from 1900, the port's from gmtime(0) (2000 on the ESP32,
    1970 on unix), as micropython-lib's ntptime does."""
    sec, frac = struct.unpack_from("!II", msg, 40)
    us = ((frac * 1000000) >> 32) + rtt * 500
    t = sec - (3155673600 if time.gmtime(0)[0] == 2000 else 2208988800) + us // 1000000
    us %= 1000000
    step_ms = t * 1000 + us // 1000 - time.time_ns() // 1000000
    tm = time.gmtime(t)
    machine.RTC().datetime((tm[0], tm[1], tm[2], tm[6] + 1, tm[3], tm[4], tm[5], us))
    return step_ms
