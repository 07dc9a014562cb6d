"""Fetches an OTA bundle: a few retained chunks subscribed to at a time, each appended to
the staging file on flash as it arrives; after a reset or power cut the transfer resumes at
the last whole chunk on flash. Restarts the board once the file is complete: slots.boot()
verifies and installs it (otainstall.py) before anything else takes the heap.

Loaded while a transfer runs. Holds one chunk at a time (in the MQTT client's receive
buffer); never ends the loop: a fault ends the transfer, with its reason in the status."""

import gc
import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations for mypy only; MicroPython never evaluates them
    from typing import Any

WINDOW = 4  # chunks subscribed to at once: the broker sends the next while one is stored
ASK_MS = 10000  # a chunk not here by then is asked for again ...
TRIES = 6  # ... this many times before the transfer fails
STAGE = "ota.bin"  # slots.STAGE (slots.py is loaded only when needed: it is not small)
SYNC = 4096
# Sync the staging file about once per 4 KB block: littlefs writes the first append after
# a sync into a block that holds data to a new block (an erase, tens of ms: sim/upy/_flash.py),
# and keeps only what was synced over a power cut, so a resume repeats at most one block.


def resume(b):
    """At boot: carry on with a transfer a reset or power cut interrupted."""
    import slots

    o = slots.read(slots.OFFER)
    try:
        b.ota = Transfer(b, o[0], int(o[1]), int(o[2]), int(o[3]), o[4])
        int(o[6])
        print("fw ota resume", o[4], "chunk", b.ota.got, "of", o[2])
    except (TypeError, ValueError, IndexError, OSError) as e:
        print("fw ota offer unreadable", e)
        slots.remove(slots.OFFER)
        slots.remove(slots.STAGE)


class Transfer:
    f: Any  # the staging file, open for writing

    def __init__(self, b, oid, size, chunks, chunk, version):
        import os

        self.id = oid
        self.size = size
        self.chunks = chunks
        self.chunk = chunk
        self.version = version
        self.base = "safecity/v1/_ota/%s/%s/" % (b.cfg["site"], oid)
        try:
            have = os.stat(STAGE)[6]
        except OSError:
            have = 0
        self.got = min(have // chunk, chunks) if have < size else chunks
        self.f = open(STAGE, "r+b" if have else "wb")
        self.f.seek(self.got * chunk)
        self.next = self.got  # chunks got..next-1 are subscribed to
        self.conn = -1  # b.mqtt_reconnects when they were: a new link asks again
        self.asked = time.ticks_ms()
        self.tries = 0
        self.t0 = time.ticks_ms()
        self.peak = 0  # the most heap in use at the end of a step (make bench reports it)

    def close(self):
        if self.f is not None:
            self.f.close()
            self.f = None

    def _heap(self):
        """Heap in use now; each step starts with a collection, so this is what was live
        before it plus everything it allocated: an upper bound of the step's peak."""
        used = gc.mem_alloc()
        if used > self.peak:
            self.peak = used

    def _unsub(self, cl, t):
        """UNSUBSCRIBE (MQTT 3.1.1, 3.10) with the client's own framing: rare enough to
        live here rather than in the resident mqtt.py."""
        cl.pid = cl.pid % 65535 + 1
        cl._head(0xA2, 2 + 2 + len(t))
        cl._u16(cl.pid)
        cl._str(t)

    def _topic(self, i):
        return (self.base + str(i)).encode()

    def _fill(self, b):
        """Subscribe to the chunks of the window not yet asked for (as the TX buffer allows)."""
        cl = b.client
        end = min(self.got + WINDOW, self.chunks)
        while self.next < end:
            t = self._topic(self.next)
            if not cl.room(len(t) + 8):
                return
            cl.subscribe(t, 0)
            self.next += 1

    def _unsubscribe(self, b):
        """Leave the chunks still asked for (a persistent session keeps subscriptions)."""
        cl = b.client
        while self.next > self.got:
            t = self._topic(self.next - 1)
            if not cl.room(len(t) + 8):
                return False
            self._unsub(cl, t)
            self.next -= 1
        return True

    def _ask(self, b, now):
        """Ask again from the first missing chunk: on a new connection or after ASK_MS
        without a chunk."""
        if not self._unsubscribe(b):
            return
        self.tries += 1
        if self.tries > TRIES:
            self.fail(b, "failed", "chunk %d of %d is not on the broker" % (self.got, self.chunks))
            return
        self.conn = b.mqtt_reconnects
        self.asked = now
        self._fill(b)

    def tick(self, b, now):
        try:
            if self.got >= self.chunks:
                self._done(b)
            elif b.online():
                if self.conn != b.mqtt_reconnects or time.ticks_diff(now, self.asked) > ASK_MS:
                    self._ask(b, now)
                else:
                    self._fill(b)
        except Exception as e:  # a full flash, no memory: the transfer ends, the loop goes on
            sys.print_exception(e)
            self.fail(b, "failed", "internal: " + repr(e)[:100])

    def chunk_in(self, b, topic, payload):
        """A chunk arrived (payload: a view into the MQTT receive buffer)."""
        try:
            self._chunk_in(b, topic, payload)
        except Exception as e:
            sys.print_exception(e)
            self.fail(b, "failed", "internal: " + repr(e)[:100])

    def _chunk_in(self, b, topic, payload):
        if self.got >= self.chunks or topic != self._topic(self.got):
            return  # a late copy of a chunk already stored, or one out of order (asked again)
        want = min(self.chunk, self.size - self.got * self.chunk)
        gc.collect()
        if len(payload) != want:
            self.fail(b, "failed", "chunk %d has %d bytes, expected %d"
                      % (self.got, len(payload), want))
            return
        self.f.write(payload)
        self.got += 1
        if self.got * self.chunk // SYNC != (self.got - 1) * self.chunk // SYNC:
            self.f.flush()  # on flash now: a power cut resumes after this chunk
        self.tries = 0
        self.asked = time.ticks_ms()
        if b.client.room(len(topic) + 8):
            self._unsub(b.client, topic)
        self._heap()
        self._fill(b)

    def _done(self, b):
        """All chunks are on flash: restart (once the outbox is sent) to install them."""
        self.close()
        print("fw ota received", self.size, "bytes ms", time.ticks_diff(time.ticks_ms(), self.t0),
              "peak_heap", self.peak)
        b.ota = None
        import slots

        slots.report(b, "verifying", self.version)
        if not getattr(b, "safe", None):  # a restart on purpose is not a failed boot
            slots.write("bootfails", "0")
        b.reboot_at = time.ticks_add(time.ticks_ms(), 2000)

    def fail(self, b, state, why):
        """Give the transfer up: nothing installed, nothing switched; the status says why."""
        try:
            self.close()
            if b.online():
                self._unsubscribe(b)
        except OSError:
            pass
        import slots

        slots.stop(b, state, self.version, why)
