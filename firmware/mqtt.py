"""A small non-blocking MQTT 3.1.1 client: CONNECT with Last Will and credentials,
keepalive with dead-link detection, QoS 1 publish retransmitted until PUBACK, SUBSCRIBE.

poll() never blocks and allocates nothing while idle; it never sleeps or retries on its own
schedule beyond what poll() is asked to do (the caller owns backoff and the sampling loop)."""

import select
import socket
import struct
import sys
import time
from micropython import const

DOWN = const(0)
CONNECTING = const(1)  # TCP connect in progress
WAIT_CONNACK = const(2)
UP = const(3)

_CONNECT_TIMEOUT_MS = const(10000)
_RETRY_MS = const(5000)  # resend an unacknowledged QoS 1 publish (DUP) after this
_TX_SIZE = const(1024)
# The largest topic plus payload one PUBLISH can carry: publish() needs topic length (2),
# packet id (2) and room()'s 8 spare bytes (the fixed header's 3 among them) in _TX_SIZE.
MAX_MESSAGE = const(_TX_SIZE - 2 - 2 - 8)
# errno while a TCP connect is still pending: EAGAIN, ENOTCONN, EINPROGRESS (linux and lwIP)
_PENDING = (11, 107, 115, 119, 128)
_RX_SIZE = const(512)
_RERESOLVE_AFTER = const(3)  # failed connection attempts in a row before a new DNS look-up


class MQTTClient:
    """One connection at a time. Callbacks: on_message(topic: bytes, payload: memoryview),
    on_puback(pid), on_connect(), on_disconnect(reason: str) after a connection was up,
    on_fail(reason: str) when an attempt ends without one, on_suback(pid, granted: bool).

    `tls`: None for plain MQTT, else the TLS context (tlsctx.py), or the flash folder with
    ca.der when boot could not make it: every connection is then wrapped in TLS verifying
    the broker's certificate for `host`, and connect() raises rather than send anything in
    clear when it cannot be."""

    def __init__(self, client_id, host, port=1883, user=None, password=None,
                 keepalive=30, will_topic=None, will_msg=None, tls=None):
        self.client_id = client_id
        self.host = host
        self.port = port
        self.user = user
        self.password = password
        self.keepalive = keepalive
        self.will_topic = will_topic
        self.will_msg = will_msg
        self.on_message = None
        self.on_puback = None
        self.on_connect = None
        self.on_disconnect = None
        self.on_fail = None
        self.tls = tls
        self.on_suback = None  # on_suback(pid, granted: bool)
        self.state = DOWN
        self.sock = None
        self.addr = None  # the broker's resolved address, kept across reconnects
        self.failed = 0  # connection attempts in a row without a CONNACK
        self.poller = select.poll()
        self.tx = bytearray(_TX_SIZE)
        self.txmv = memoryview(self.tx)
        self.txlen = 0
        self.rx = bytearray(_RX_SIZE)
        self.rxmv = memoryview(self.rx)
        self.rxlen = 0
        self.skip = 0  # bytes of an oversized incoming packet still to discard
        self.pid = 0
        self.inflight_pid = 0  # one QoS 1 publish in flight keeps alarms in order
        self.inflight_at = time.ticks_ms()
        self.inflight_topic = None
        self.inflight_msg = None
        self.reload = None  # () -> (topic, msg) of the message in flight, or None if gone
        self.last_tx = time.ticks_ms()
        self.last_rx = self.last_tx
        self.ping_out = False
        self.ping_at = self.last_tx
        self.since = self.last_tx
        self.oversized = 0

    # -- connection ---------------------------------------------------------------------

    def resolve(self):
        """Look the broker up and cache its address (None until then, and again after
        _RERESOLVE_AFTER attempts in a row without a CONNACK); raises OSError when it cannot.
        Blocks while a name is resolved (lwIP: up to 7 s per DNS server): the caller feeds
        its watchdog around this call. An IP address returns at once."""
        addr = socket.getaddrinfo(self.host, self.port)[0][-1]
        self.addr = addr
        return addr

    def connect(self):
        """Start connecting; completion is reported by on_connect from poll(). Uses the
        cached address, resolving first when there is none (which may block)."""
        self.close("reconnect")
        addr = self.addr
        if addr is None:
            addr = self.resolve()
        self.failed += 1  # until a CONNACK says otherwise
        if self.failed >= _RERESOLVE_AFTER:
            self.addr = None  # this is the last try with it
            self.failed = 0
        s = socket.socket()
        s.setblocking(False)
        try:
            s.connect(addr)
        except OSError as e:
            if e.args[0] not in _PENDING:
                s.close()
                raise
        if self.tls is not None:
            # tlsctx.py (loaded per connection, then dropped: no resident heap) wraps the
            # socket; the handshake runs in poll() as the socket becomes ready.
            try:
                import tlsctx

                s = tlsctx.wrap(self, s)
            except MemoryError:
                s.close()
                raise OSError("tls: no memory for the TLS context")
            finally:
                sys.modules.pop("tlsctx", None)
        self.sock = s
        self.poller.register(s, select.POLLIN | select.POLLOUT)
        self.state = CONNECTING
        self.since = time.ticks_ms()
        self.txlen = self.rxlen = self.skip = 0
        self._connect_packet()

    def _connect_packet(self):
        # A persistent session (clean session 0): commands sent while the board was away are
        # queued by the broker and arrive after the reconnect. We subscribe again anyway.
        flags = 0
        vlen = 10 + 2 + len(self.client_id)
        if self.will_topic:
            flags |= 0x04 | 0x20 | 0x08  # will, will retain, will QoS 1
            vlen += 4 + len(self.will_topic) + len(self.will_msg)
        if self.user:
            flags |= 0x80
            vlen += 2 + len(self.user)
            if self.password:
                flags |= 0x40
                vlen += 2 + len(self.password)
        self._head(0x10, vlen)
        self._put(b"\x00\x04MQTT\x04")
        self._byte(flags)
        self._u16(self.keepalive)
        self._str(self.client_id)
        if self.will_topic:
            self._str(self.will_topic)
            self._str(self.will_msg)
        if self.user:
            self._str(self.user)
            if self.password:
                self._str(self.password)

    def close(self, reason="closed"):
        was = self.state
        if self.sock is not None:
            try:
                self.poller.unregister(self.sock)
            except (OSError, KeyError, ValueError):
                pass
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock = None
        self.state = DOWN
        self.ping_out = False
        self.txlen = 0
        if was == UP and self.on_disconnect:
            self.on_disconnect(reason)
        elif was != DOWN and self.on_fail:
            self.on_fail(reason)

    def disconnect(self):
        """Graceful: DISCONNECT (the broker then discards the Last Will)."""
        if self.state == UP:
            self._put(b"\xe0\x00")
            self._flush(200)
        self.close("disconnect")

    # -- outgoing -------------------------------------------------------------------------

    def room(self, n):
        return self.state == UP and self.txlen + n + 8 <= _TX_SIZE

    def publish(self, topic, msg, qos=0, retain=False, dup=False, pid=0):
        """Queue a PUBLISH; returns its packet id (QoS 1), 0 (QoS 0) or -1 if not sent.
        A QoS 1 publish is only accepted when none is in flight (see can_publish_qos1)."""
        n = 2 + len(topic) + len(msg) + (2 if qos else 0)
        if not self.room(n):
            return -1
        if qos:
            if self.inflight_pid and not dup:
                return -1
            if not pid:
                self.pid = self.pid % 65535 + 1
                pid = self.pid
        self._head(0x30 | (qos << 1) | (0x08 if dup else 0) | (1 if retain else 0), n)
        self._str(topic)
        if qos:
            self._u16(pid)
            self.inflight_pid = pid
            self.inflight_at = time.ticks_ms()
            self.inflight_topic = topic
            self.inflight_msg = msg
        self._put(msg)
        return pid

    def can_publish_qos1(self):
        return self.state == UP and not self.inflight_pid

    def subscribe(self, topic, qos=1):
        """Queue a SUBSCRIBE; returns its packet id (on_suback names it)."""
        self.pid = self.pid % 65535 + 1
        self._head(0x82, 2 + 2 + len(topic) + 1)
        self._u16(self.pid)
        self._str(topic)
        self._byte(qos)
        return self.pid

    # -- the pump -------------------------------------------------------------------------

    def poll(self):
        """Do whatever is ready without blocking: connect progress, send, receive, ping."""
        if self.state == DOWN:
            return
        now = time.ticks_ms()
        out = self.state != CONNECTING
        try:
            for s, ev in self.poller.ipoll(0):
                # 0x20: MP_STREAM_POLL_NVAL, what a TLS socket reports after a failure
                if ev & (select.POLLERR | select.POLLHUP | 0x20):
                    self.close("socket error")
                    return
                if ev & select.POLLIN:
                    self._read()
                    if self.state == DOWN:
                        return
                out = out or ev & select.POLLOUT
            # Nothing is written before the TCP connect completes: a TLS layer would take an
            # early error other than EAGAIN (lwIP's ENOTCONN) as the end of the handshake.
            if self.txlen:
                if out:
                    self._flush(0)
            else:
                self.poller.modify(self.sock, select.POLLIN)
        except (OSError, ValueError) as e:  # ValueError: TLS refused the broker's certificate
            self.close(self._cause(e))
            return
        if self.state != UP:
            if time.ticks_diff(now, self.since) > _CONNECT_TIMEOUT_MS:
                self.close("connect timeout")
            return
        ka = self.keepalive * 1000
        if self.ping_out:
            # Dead link: no PINGRESP within half a keepalive of our PINGREQ.
            if time.ticks_diff(now, self.ping_at) > ka // 2:
                self.close("keepalive timeout")
                return
        elif time.ticks_diff(now, self.last_tx) >= ka // 2 or \
                time.ticks_diff(now, self.last_rx) >= ka // 2:
            if self.room(2):
                self._put(b"\xc0\x00")
                self.ping_out = True
                self.ping_at = now
        if self.inflight_pid and time.ticks_diff(now, self.inflight_at) > _RETRY_MS:
            self.retransmit()

    def _cause(self, e):
        if self.tls is None:
            return "socket error"
        try:
            import tlsctx

            return tlsctx.cause(e)
        except MemoryError:
            return "tls error"
        finally:
            sys.modules.pop("tlsctx", None)

    def retransmit(self):
        pid = self.inflight_pid
        if pid and self.reload is not None:
            # The caller's bytes may sit in a buffer it has reused since: ask for them again.
            got = self.reload()
            if got is None:
                self.forget_inflight()  # dropped by its owner: nothing left to deliver
                return
            self.inflight_topic, self.inflight_msg = got
        t = self.inflight_topic
        m = self.inflight_msg
        if pid and t is not None and m is not None and self.room(len(t) + len(m)):
            self.publish(t, m, 1, False, True, pid)

    def forget_inflight(self):
        self.inflight_pid = 0
        self.inflight_topic = self.inflight_msg = None

    def _read(self):
        mv = self.rxmv
        s = self.sock
        if s is None:
            return
        n = s.readinto(mv[self.rxlen:])
        if n is None:
            return
        if n == 0:
            self.close("closed by broker")
            return
        self.last_rx = time.ticks_ms()
        if self.skip:
            k = min(self.skip, n)
            self.skip -= k
            mv[: n - k] = mv[self.rxlen + k: self.rxlen + n]
            n -= k
        self.rxlen += n
        while self.rxlen >= 2:
            # remaining length: up to 4 bytes of 7-bit groups
            rl = 0
            mul = 1
            i = 1
            while True:
                if i >= self.rxlen:
                    return
                b = self.rx[i]
                rl += (b & 0x7F) * mul
                mul <<= 7
                i += 1
                if not b & 0x80 or i > 4:
                    break
            total = i + rl
            if total > _RX_SIZE:
                # Too big for our buffer: drop it and tell the application.
                self.skip = total - self.rxlen
                self.rxlen = 0
                self.oversized += 1
                if self.on_message:
                    self.on_message(None, None)
                return
            if self.rxlen < total:
                return
            self._packet(self.rx[0], i, total)
            if self.state == DOWN:
                return
            left = self.rxlen - total
            if left:
                mv[:left] = mv[total: self.rxlen]
            self.rxlen = left

    def _packet(self, h, start, end):
        t = h & 0xF0
        rx = self.rx
        if t == 0x20:  # CONNACK
            if rx[start + 1] != 0:
                self.close("refused %d" % rx[start + 1])
                return
            self.state = UP
            self.failed = 0
            self.last_rx = self.last_tx = time.ticks_ms()
            if self.on_connect:
                self.on_connect()
        elif t == 0x40:  # PUBACK
            pid = (rx[start] << 8) | rx[start + 1]
            if pid == self.inflight_pid:
                self.forget_inflight()
                if self.on_puback:
                    self.on_puback(pid)
        elif t == 0xD0:  # PINGRESP
            self.ping_out = False
        elif t == 0x30:  # PUBLISH to us
            qos = (h >> 1) & 3
            tl = (rx[start] << 8) | rx[start + 1]
            p = start + 2 + tl
            pid = 0
            if qos:
                pid = (rx[p] << 8) | rx[p + 1]
                p += 2
            topic = bytes(rx[start + 2: start + 2 + tl])
            if qos == 1 and self.room(4):
                self._put(b"\x40\x02")
                self._u16(pid)
            if self.on_message:
                self.on_message(topic, self.rxmv[p:end])
        elif t == 0x90:  # SUBACK: 0x80 is a refusal (MQTT-3.9.3), e.g. by the broker's ACL
            if self.on_suback:
                self.on_suback((rx[start] << 8) | rx[start + 1], rx[start + 2] != 0x80)
        # anything else: nothing to do

    # -- encoding helpers (write into the preallocated tx buffer) ------------------------

    def _head(self, b, n):
        self._byte(b)
        while True:
            d = n & 0x7F
            n >>= 7
            self._byte(d | 0x80 if n else d)
            if not n:
                break

    def _byte(self, b):
        self.tx[self.txlen] = b
        self.txlen += 1

    def _u16(self, v):
        struct.pack_into("!H", self.tx, self.txlen, v)
        self.txlen += 2

    def _str(self, s):
        self._u16(len(s))
        self._put(s)

    def _put(self, b):
        n = len(b)
        self.txmv[self.txlen: self.txlen + n] = b
        self.txlen += n

    def _flush(self, wait_ms):
        """Send what fits now; with wait_ms > 0, keep trying that long (only for DISCONNECT)."""
        deadline = time.ticks_add(time.ticks_ms(), wait_ms)
        while self.txlen and self.sock is not None:
            try:
                n = self.sock.write(self.txmv[: self.txlen])
            except OSError as e:
                if e.args[0] in _PENDING and self.state == CONNECTING:
                    n = None
                else:
                    raise
            if n:
                left = self.txlen - n
                if left:
                    self.txmv[:left] = self.txmv[n: self.txlen]
                self.txlen = left
                self.last_tx = time.ticks_ms()
                if self.state == CONNECTING:
                    self.state = WAIT_CONNACK
            if self.txlen:
                self.poller.modify(self.sock, select.POLLIN | select.POLLOUT)
                if wait_ms <= 0 or time.ticks_diff(deadline, time.ticks_ms()) <= 0:
                    return
                time.sleep_ms(10)
