"""Signed OTA of the firmware modules: takes the `ota` command's offer, fetches the bundle
one retained chunk at a time from the broker into a staging file (a power cut resumes at
the last whole chunk), verifies it against the RSA key written at flash time, unpacks it
into the free slot and restarts on trial (slots.py picks what boots, otastate.py runs
the trial and rolls back).

Loaded on an offer and while a transfer runs, dropped after. Holds one chunk at a time;
never installs a bundle whose signature does not verify."""

import gc
import json
import os
import time

import otastate
import slots

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations for mypy only; MicroPython never evaluates them
    from typing import Any

OFFER = "ota_offer"  # "<id> <size> <chunks> <chunk> <version>": the transfer under way
STAGE = "ota.bin"  # the bundle as it arrives: header line, modules, 256-byte signature
KEY = "ota_key"  # the RSA public modulus in hex (flash.sh esp32 --ota-key writes it)
PREFIX = "safecity/v1/_ota/"
KEEP = ("slots.mpy", "otastate.mpy")  # only a flash can replace these (rollout/bundle.py)
MAX_SIZE = 262144
SIG = 256  # RSA-2048
# DER DigestInfo prefix of SHA-256 (RFC 8017, section 9.2, note 1)
DIGEST_INFO = b"\x30\x31\x30\x0d\x06\x09\x60\x86\x48\x01\x65\x03\x04\x02\x01\x05\x00\x04\x20"
WINDOW = 4  # chunks subscribed to at once: the broker sends the next while one is stored
ASK_MS = 10000  # a chunk not here by then is asked for again ...
TRIES = 6  # ... this many times before the transfer fails
STEP = 4096  # bytes hashed or unpacked per pass of the loop (a pass stays short)
SYNC = 4096
# Sync the staging file about once per 4 KB block: littlefs writes the first append after
# a sync into a block that holds data to a new block (an erase, tens of ms: sim/upy/_flash.py),
# and keeps only what was synced over a power cut, so a resume repeats at most one block.


def log(*parts):
    print("fw ota", *parts)


def _hex(v):
    if not isinstance(v, str) or len(v) != 16:
        return False
    for ch in v:
        if ch not in "0123456789abcdef":
            return False
    return True


def _int(args, k, lo, hi):
    v = args.get(k)
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        return "args.%s: must be an integer in %d..%d" % (k, lo, hi)
    return None


def check(b, args):
    """The offer's error naming the bad argument, or None."""
    if not _hex(args.get("id")):
        return "args.id: must be 16 lowercase hex digits (the bundle's sha256 prefix)"
    v = args.get("version")
    if not isinstance(v, str) or not 1 <= len(v) <= 32 or " " in v:
        return "args.version: must be a string of 1-32 characters without spaces"
    top = len(PREFIX) + len(b.cfg["site"]) + 24  # "<site>/<id>/<index>"
    err = _int(args, "chunk", 64, 505 - top) or _int(args, "size", SIG + 2, MAX_SIZE) \
        or _int(args, "chunks", 1, 4096)
    if err:
        return err
    if args["chunks"] != (args["size"] + args["chunk"] - 1) // args["chunk"]:
        return "args.chunks: %d chunks of %d bytes do not make %d bytes" % (
            args["chunks"], args["chunk"], args["size"])
    return None


def command(b, cid, cmd, args):
    """The `ota` command: check the offer, then start (or resume) its transfer."""
    import app

    err = check(b, args)
    if err:
        b.ack(cid, cmd, False, code="bad_args", message=err)
        return
    why = None
    if otastate.trial is not None:
        why = "version %s is on trial: wait for it to pass" % otastate.trial[3]
    elif args["version"] == app.VERSION:
        why = "version %s is already running" % app.VERSION
    else:
        try:
            os.stat(KEY)
        except OSError:
            why = "no OTA key on this board (flash it with flash.sh esp32 --ota-key)"
    if why:
        b.ack(cid, cmd, False, code="rejected", message=why)
        return
    gc.collect()
    log("offer", args["version"], "heap", gc.mem_alloc())
    t = b.ota
    if t is None or t.id != args["id"]:
        if t is not None:
            t.close()
        slots.remove(STAGE)
        slots.write(OFFER, "%s %d %d %d %s" % (args["id"], args["size"], args["chunks"],
                                               args["chunk"], args["version"]))
        t = b.ota = Transfer(b, args["id"], args["size"], args["chunks"], args["chunk"],
                             args["version"])
    b.ack(cid, cmd, True, {"accepted": True, "version": t.version, "from_chunk": t.got,
                           "chunks": t.chunks})
    t.report(b, "downloading")


def resume(b):
    """At boot: carry on with a transfer a reset or power cut interrupted."""
    o = slots.read(OFFER)
    try:
        b.ota = Transfer(b, o[0], int(o[1]), int(o[2]), int(o[3]), o[4])
        log("resume", o[4], "chunk", b.ota.got, "of", o[2])
    except (TypeError, ValueError, IndexError, OSError) as e:
        log("offer unreadable", e)
        slots.remove(OFFER)
        slots.remove(STAGE)


class Transfer:
    f: Any  # the staging file while it is written or read, else None
    h: Any  # hashlib.sha256 while the bundle is hashed
    files: Any  # [name, size] of each module, from the verified header
    slot: Any  # the slot directory the bundle is unpacked into

    def __init__(self, b, oid, size, chunks, chunk, version):
        self.id = oid
        self.size = size
        self.chunks = chunks
        self.chunk = chunk
        self.version = version
        self.base = "%s%s/%s/" % (PREFIX, b.cfg["site"], oid)
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
        self.phase = 0  # 0 fetch, 1 hash, 2 unpack
        self.h = None
        self.pos = 0
        self.files = None
        self.slot = None
        self.t0 = time.ticks_ms()
        self.peak = 0  # the most heap in use at the end of a step (make bench reports it)

    def close(self):
        if self.f is not None:
            self.f.close()
            self.f = None

    def report(self, b, state, reason=None):
        otastate.last = {"state": state, "version": self.version}
        if reason:
            otastate.last["reason"] = reason
        if state == "downloading":
            otastate.last["chunk"] = self.got
            otastate.last["chunks"] = self.chunks
        if b.online():
            b.client.publish(b.topic("status"), b.status("online"), 0, True)

    def _heap(self):
        """Heap in use now; each step starts with a collection, so this is what was live
        before it plus everything it allocated: an upper bound of the step's peak."""
        used = gc.mem_alloc()
        if used > self.peak:
            self.peak = used

    def _topic(self, i):
        return (self.base + str(i)).encode()

    def _fill(self, b, now):
        """Subscribe to the chunks of the window not yet asked for (as the TX buffer allows)."""
        cl = b.client
        end = min(self.got + WINDOW, self.chunks)
        while self.next < end:
            t = self._topic(self.next)
            if not cl.room(len(t) + 8):
                return
            cl.subscribe(t, 0)
            self.next += 1

    def _ask(self, b, now):
        """Ask again from the first missing chunk: on a new connection (a clean session: the
        subscriptions are gone) or after ASK_MS without a chunk (then the old ones go)."""
        cl = b.client
        if self.conn == b.mqtt_reconnects:
            while self.next > self.got:
                t = self._topic(self.next - 1)
                if not cl.room(len(t) + 8):
                    return
                cl.unsubscribe(t)
                self.next -= 1
        self.next = self.got
        self.tries += 1
        if self.tries > TRIES:
            self.fail(b, "failed", "chunk %d of %d is not on the broker" % (self.got, self.chunks))
            return
        self.conn = b.mqtt_reconnects
        self.asked = now
        self._fill(b, now)

    def tick(self, b, now):
        try:
            self._tick(b, now)
        except Exception as e:  # a full flash, no memory: the transfer ends, the loop goes on
            self.fail(b, "failed", "internal: " + repr(e)[:100])

    def _tick(self, b, now):
        if self.phase == 1:
            self._hash(b)
        elif self.phase == 2:
            self._unpack(b)
        elif self.got >= self.chunks:
            self._verify_start(b)
        elif b.online():
            if self.conn != b.mqtt_reconnects or time.ticks_diff(now, self.asked) > ASK_MS:
                self._ask(b, now)
            else:
                self._fill(b, now)

    def chunk_in(self, b, topic, payload):
        """A chunk arrived (payload: a view into the MQTT receive buffer)."""
        try:
            self._chunk_in(b, topic, payload)
        except Exception as e:
            self.fail(b, "failed", "internal: " + repr(e)[:100])

    def _chunk_in(self, b, topic, payload):
        if self.phase or topic != self._topic(self.got):
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
            b.client.unsubscribe(topic)
        self._heap()
        self._fill(b, self.asked)

    # -- verify and install ---------------------------------------------------------------

    def _verify_start(self, b):
        self.close()
        import hashlib

        self.h = hashlib.sha256()
        self.f = open(STAGE, "rb")
        self.pos = 0
        self.phase = 1
        log("received", self.size, "bytes ms", time.ticks_diff(time.ticks_ms(), self.t0))

    def _hash(self, b):
        gc.collect()
        mv = memoryview(bytearray(512))
        body = self.size - SIG
        end = min(body, self.pos + STEP)
        while self.pos < end:
            n = self.f.readinto(mv[:min(512, end - self.pos)])
            if not n:
                self.fail(b, "refused", "bundle shorter than offered")
                return
            self.h.update(mv[:n])
            self.pos += n
        self._heap()
        if self.pos < body:
            return
        sig = self.f.read(SIG)
        self.close()
        gc.collect()
        why = check_sig(self.h.digest(), sig)
        self.h = None
        self._heap()
        if why:
            self.fail(b, "refused", why)
            return
        self._open_bundle(b)

    def _open_bundle(self, b):
        f = self.f = open(STAGE, "rb")
        line = f.readline()
        try:
            head = json.loads(line)
            files = head["files"]
            total = 0
            for name, n in files:
                if not name.endswith(".mpy") or "/" in name or name in KEEP:
                    raise ValueError("file name " + name)
                total += n
            if head["version"] != self.version or len(line) + total + SIG != self.size:
                raise ValueError("header does not match the offer")
        except (ValueError, KeyError, TypeError) as e:
            self.fail(b, "refused", "bundle header: %s" % e)
            return
        self.slot = "s2" if otastate.active == "s1" else "s1"
        try:
            os.mkdir(self.slot)
        except OSError:
            for name in os.listdir(self.slot):
                os.remove(self.slot + "/" + name)
        self.files = files
        self.pos = 0  # the file being unpacked
        self.phase = 2
        log("verified", self.version, "into", self.slot)

    def _unpack(self, b):
        """One module per pass: copy it from the bundle into the slot."""
        gc.collect()
        name, n = self.files[self.pos]
        mv = memoryview(bytearray(512))
        try:
            with open(self.slot + "/" + name, "wb") as out:
                while n:
                    k = self.f.readinto(mv[:min(512, n)])
                    if not k:
                        raise OSError("bundle ends inside " + name)
                    out.write(mv[:k])
                    n -= k
        except OSError as e:
            self.fail(b, "failed", "install: %s" % e)
            return
        self._heap()
        self.pos += 1
        if self.pos < len(self.files):
            return
        import app

        self.close()
        slots.write(slots.TRIAL, "%s 0 %d %s %s" % (self.slot, b.cfg["ota_trial_s"],
                                                    self.version, app.VERSION))
        slots.remove(OFFER)
        slots.remove(STAGE)
        log("installed", self.version, "ms", time.ticks_diff(time.ticks_ms(), self.t0),
            "peak_heap", self.peak)
        self.report(b, "installed")
        b.ota = None
        b.reboot_at = time.ticks_add(time.ticks_ms(), 2000)  # once the outbox is sent

    def fail(self, b, state, why):
        """Give the transfer up: nothing installed, nothing switched; the status says why."""
        log(state, self.version, why)
        try:
            self.close()
        except OSError:
            pass
        slots.remove(OFFER)
        slots.remove(STAGE)
        slots.note(state, self.version, why)
        b.ota = None
        if b.online():
            b.client.publish(b.topic("status"), b.status("online"), 0, True)


def check_sig(digest, sig):
    """None when `sig` is the RSA PKCS#1 v1.5 signature of the SHA-256 `digest` under the
    board's key, else why not. Three-argument pow with e = 65537: 17 multiplications."""
    try:
        with open(KEY) as f:
            text = f.read().strip()
        n = int(text, 16)
    except (OSError, ValueError):
        return "no usable OTA key on the board"
    k = (len(text) + 1) // 2
    if len(sig) != SIG or k != SIG:
        return "signature: expected %d bytes under a %d-byte key" % (SIG, k)
    s = int.from_bytes(sig, "big")
    if s >= n:
        return "signature out of range"
    em = bytearray(k)
    em[1] = 1
    pad = k - 3 - len(DIGEST_INFO) - len(digest)
    for i in range(2, 2 + pad):
        em[i] = 0xFF
    em[3 + pad: 3 + pad + len(DIGEST_INFO)] = DIGEST_INFO
    em[k - len(digest):] = digest
    if pow(s, 65537, n) != int.from_bytes(em, "big"):
        return "signature does not match the bundle"
    return None
