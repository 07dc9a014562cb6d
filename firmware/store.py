"""Flash-backed outbox: an append log of framed records (magic, state, length, checksum)
that survives reset and power loss mid-write, plus the persisted boot counter.

Bounded: drops the oldest telemetry (or ack) first, alarms only when nothing else is left, and
counts every drop. Never loses a record it acknowledged as stored, never reorders."""

import os
import struct

_MAGIC = 0xA5
_PENDING = 0xFF
_DONE = 0x00
_HDR = 6  # magic, state, body length (u16), checksum (u16)
TELEMETRY = 0  # QoS 0, droppable
ALARM = 1  # QoS 1, events: dropped only when nothing else is left
ACK = 2  # QoS 1, command acknowledgements: droppable


def _sum16(buf, n):
    # Fletcher-16: catches torn and reordered bytes, cheap in pure Python.
    a = b = 0
    i = 0
    while i < n:
        a = (a + buf[i]) % 255
        b = (b + a) % 255
        i += 1
    return (b << 8) | a


def next_boot(path):
    """Read, bump and persist (write-then-rename) the boot counter; returns the new value."""
    n = 0
    try:
        with open(path) as f:
            n = int(f.read().strip() or 0)
    except (OSError, ValueError):
        pass
    n += 1
    write_atomic(path, str(n))
    return n


def write_atomic(path, text):
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.rename(path + ".tmp", path)


class Outbox:
    def __init__(self, path, max_records=64, max_bytes=24576, max_record=1024, max_send=1014):
        self.path = path
        self.max_records = max_records
        self.max_bytes = max_bytes
        self.buf = bytearray(_HDR + max_record)
        self.max_send = max_send  # the largest record body the MQTT client can send
        self.mv = memoryview(self.buf)
        self.offs = []  # file offsets of pending records, oldest first
        self.kinds = []
        self.size = 0
        self.drops_telemetry = 0
        self.drops_alarm = 0
        self.torn = 0  # records cut short by a reset during a write (found at load)
        self.inflight = -1  # offset of the record sent and not yet acknowledged
        self._load()

    def depth(self):
        return len(self.offs)

    def alarms(self):
        return self.kinds.count(ALARM)

    def _load(self):
        try:
            f = open(self.path, "rb")
        except OSError:
            open(self.path, "wb").close()
            self.f = open(self.path, "r+b")
            return
        off = 0
        hdr = bytearray(_HDR)
        while True:
            if f.readinto(hdr) != _HDR:
                break
            magic, state, n, ck = struct.unpack("<BBHH", hdr)
            if magic != _MAGIC or n > len(self.buf) - _HDR or n < 2:
                self.torn += 1
                break
            body = self.mv[:n]
            if f.readinto(body) != n or _sum16(body, n) != ck:
                self.torn += 1
                break
            if state == _PENDING and n > self.max_send:
                self.drops_alarm += body[0] == ALARM  # stored by older firmware, unsendable
                self.drops_telemetry += body[0] != ALARM
            elif state == _PENDING:
                self.offs.append(off)
                self.kinds.append(body[0])
            off += _HDR + n
        f.close()
        self.size = off
        self.f = open(self.path, "r+b")
        if self.torn or (not self.offs and off):
            self.compact()

    def push(self, kind, topic, payload):
        """Store a record durably (flushed) before anyone tries to send it. One the client
        could never send raises ValueError and is not stored (it would block the queue)."""
        n = 2 + len(topic) + len(payload)
        if n > self.max_send or n + _HDR > len(self.buf):
            raise ValueError("record too large: %d bytes, at most %d" % (n, self.max_send))
        while len(self.offs) >= self.max_records or self.size + _HDR + n > self.max_bytes:
            if not self.offs:
                break
            self._drop_one()
            if self.size + _HDR + n > self.max_bytes:
                self.compact()
        b = self.buf
        b[_HDR] = kind
        b[_HDR + 1] = len(topic)
        self.mv[_HDR + 2: _HDR + 2 + len(topic)] = topic
        self.mv[_HDR + 2 + len(topic): _HDR + n] = payload
        struct.pack_into("<BBHH", b, 0, _MAGIC, _PENDING, n, _sum16(self.mv[_HDR:], n))
        self.f.seek(self.size)
        self.f.write(self.mv[: _HDR + n])
        self.f.flush()
        self.offs.append(self.size)
        self.kinds.append(kind)
        self.size += _HDR + n

    def _drop_one(self):
        i = 0
        while i < len(self.kinds) and self.kinds[i] == ALARM:
            i += 1
        if i == len(self.kinds):
            i = 0
        if self.kinds[i] != ALARM:
            self.drops_telemetry += 1
        else:
            self.drops_alarm += 1
        if self.offs[i] == self.inflight:
            self.inflight = -1
        self._mark(self.offs[i])
        del self.offs[i]
        del self.kinds[i]

    def head(self):
        """(offset, kind, topic memoryview, payload memoryview) of the oldest record."""
        if not self.offs:
            return None
        return self.read(self.offs[0])

    def read(self, off):
        """The record at `off` (views into the one shared buffer: valid until the next
        push, read or compact, so a retransmit must read again)."""
        self.f.seek(off)
        self.f.readinto(self.mv[:_HDR])
        n = self.buf[2] | (self.buf[3] << 8)
        self.f.readinto(self.mv[_HDR: _HDR + n])
        tl = self.buf[_HDR + 1]
        return (off, self.buf[_HDR], self.mv[_HDR + 2: _HDR + 2 + tl],
                self.mv[_HDR + 2 + tl: _HDR + n])

    def done(self, off):
        """The record at `off` was acknowledged: mark it on flash and forget it."""
        if off in self.offs:
            i = self.offs.index(off)
            self._mark(off)
            del self.offs[i]
            del self.kinds[i]
        if not self.offs and self.size > 4096:
            self.compact()

    def _mark(self, off):
        self.f.seek(off + 1)
        self.f.write(b"\x00")
        self.f.flush()

    def compact(self):
        """Copy pending records to a new file and rename it over the log (atomic)."""
        tmp = self.path + ".tmp"
        offs = []
        with open(tmp, "wb") as out:
            pos = 0
            for off in self.offs:
                self.f.seek(off)
                self.f.readinto(self.mv[:_HDR])
                n = self.buf[2] | (self.buf[3] << 8)
                self.f.readinto(self.mv[_HDR: _HDR + n])
                out.write(self.mv[: _HDR + n])
                if off == self.inflight:
                    self.inflight = pos
                offs.append(pos)
                pos += _HDR + n
        self.f.close()
        os.rename(tmp, self.path)
        self.f = open(self.path, "r+b")
        self.offs = offs
        self.size = pos
