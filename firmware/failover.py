"""Which broker a board connects to: broker_host:broker_port first, then failover_brokers in
order. A lost connection moves to the next one after a random 0..failover_jitter_s, so the
boards of a cluster member that died do not all come back in the same second; a failed
attempt moves on too, each full round of failures doubling the wait (1 s up to 15 s, a
random half of it to all of it). On another broker the board checks every failback_s
(jittered by half either way) whether its first choice answers an MQTT CONNECT of its own
(clean session, client id "<id>-look"; over TLS, whether it accepts a TCP connection, as a
second TLS session would not fit the heap), and goes back with a clean DISCONNECT (no Last
Will). A hung broker's kernel still accepts TCP: on that alone a board would leave a good
broker for one that never answers, every failback_s. The session lives in the cluster, so a move
loses nothing the broker queued, and the alarm in flight is sent again on the next broker.

Loaded only when a board with more than one broker moves or checks, then dropped. Never
blocks the loop on a broker that does not answer (the check is a non-blocking connect)."""

import os
import select
import socket
import time

from mqtt import _PENDING  # errno of a TCP connect under way (mqtt.py is resident)

_CHECK_MS = 3000  # a first choice that has not accepted within this does not answer


def rand_ms(ms):
    """Uniform in 0..ms-1, from the hardware RNG on the chip (os.urandom: esp_random(),
    ports/esp32/modos.c; getrandom() on the unix port that the simulator runs),
    so that boards flashed alike still spread out."""
    if ms <= 0:
        return 0
    b = os.urandom(3)  # 24 bits: a small int on the chip, and ms (at most 300 s) skews
    return ((b[0] << 16) | (b[1] << 8) | b[2]) % ms  # the modulo by under 2 %


def use(self, i):
    """Point the (disconnected) client at broker i; 0 is the first choice."""
    c = self.cfg
    if i == 0:
        host, port = c["broker_host"], c["broker_port"]
    else:
        host, _, port = c["failover_brokers"].split(",")[i - 1].rpartition(":")
        port = int(port)
    cl = self.client
    cl.host = host
    cl.port = port
    cl.addr = None  # looked up again (a name), or taken at once (an address)
    cl.failed = 0
    self.bi = i
    stop_check(self)


def _next(self):
    use(self, (self.bi + 1) % self.nb)
    print("fw mqtt next_broker %s:%d" % (self.client.host, self.client.port))


def lost(self, now):
    """The connection dropped: the next broker, after a random 0..failover_jitter_s."""
    _next(self)
    self.mqtt_next = time.ticks_add(now, rand_ms(self.cfg["failover_jitter_s"] * 1000))
    self.mqtt_backoff = 1000
    self.failback_at = None


def refused(self, now):
    """An attempt failed (refused, timed out, no CONNACK): the next broker; every full
    round of failures doubles the wait."""
    self.mqtt_refused += 1
    _next(self)
    cap = min(15000, 1000 << min((self.mqtt_refused - 1) // self.nb, 4))
    self.mqtt_next = time.ticks_add(now, cap // 2 + rand_ms(cap // 2))


def connected(self, now):
    """On a broker: count failures anew, and plan a look at the first choice if elsewhere."""
    self.mqtt_refused = 0
    self.failback_at = None if self.bi == 0 else time.ticks_add(now, _period(self))


def _period(self):
    ms = self.cfg["failback_s"] * 1000
    return ms // 2 + rand_ms(ms)


def stop_check(self):
    p = self.probe
    self.probe = None
    if p is not None:
        try:
            p[0].close()
        except OSError:
            pass


def _look_packet(cl):
    """CONNECT with a clean session under the board's id + "-look", its credentials, no
    Last Will: the broker makes and drops a session of its own, never the board's."""
    cid = cl.client_id + b"-look"
    flags = 0x02
    body = bytearray(b"\x00\x04MQTT\x04\x00\x00\x00")
    for f, v in ((0, cid), (0x80, cl.user), (0x40, cl.user and cl.password)):
        if v:
            flags |= f
            body += len(v).to_bytes(2, "big") + v
    body[7] = flags
    n = len(body)
    head = bytearray(b"\x10")
    while True:
        head.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return head + body


def check(self, now):
    """One step of the look at the first choice, from the loop while a look is due: start a
    non-blocking TCP connect, then on later passes send a CONNECT when it was accepted and
    read the CONNACK (over TLS the accept is the answer). Accepted: a clean DISCONNECT here
    and a connect to the first choice at once. Else the next look waits another
    failback_s."""
    if self.probe is None:
        if self.outbox.depth() or self.client.inflight_pid:
            return  # what is queued goes out on this broker first
        c = self.cfg
        addr = []
        import lookup  # a name may hold the loop (DNS): fed around like every look-up

        err = lookup.run(self, lambda: addr.append(
            socket.getaddrinfo(c["broker_host"], c["broker_port"])[0][-1]), c["broker_host"])
        if err is not None:
            self.failback_at = time.ticks_add(now, _period(self))
            return
        s = socket.socket()
        s.setblocking(False)
        try:
            s.connect(addr[0])
        except OSError as e:
            if e.args[0] not in _PENDING:
                s.close()
                self.failback_at = time.ticks_add(now, _period(self))
                return
        p = select.poll()
        p.register(s, select.POLLOUT)
        self.probe = (s, p, time.ticks_add(now, _CHECK_MS), [False])
        return
    s, p, until, sent = self.probe
    ev = 0
    for _, got in p.ipoll(0):
        ev |= got
    if not ev and time.ticks_diff(now, until) < 0:
        return  # not yet
    ok = not ev & (select.POLLERR | select.POLLHUP | 0x20)
    if ok and not sent[0] and ev & select.POLLOUT and self.client.tls is None:
        try:
            s.send(_look_packet(self.client))  # a few dozen bytes: the socket takes them
            sent[0] = True
            p.modify(s, select.POLLIN)
            return
        except OSError:
            ok = False
    elif ok and sent[0]:
        try:
            r = s.recv(4) if ev & select.POLLIN else b""
            ok = len(r) == 4 and r[0] == 0x20 and r[3] == 0  # CONNACK, accepted
            if ok:
                s.send(b"\xe0\x00")  # DISCONNECT: the look's session goes
        except OSError:
            ok = False
    else:
        ok = ok and bool(ev & select.POLLOUT)
    stop_check(self)
    if not ok:
        print("fw mqtt first_choice_down")
        self.failback_at = time.ticks_add(now, _period(self))
        return
    print("fw mqtt failback")
    self.failback_at = None
    self.client.disconnect()  # clean: the broker drops the Last Will
    use(self, 0)
    self.mqtt_next = now
