"""Installs a fetched OTA bundle at boot, before anything else is loaded: hashes the
staging file from flash, checks its RSA signature against the key written at flash time,
checks the header, and unpacks the modules into the slot not running, which then boots on
trial. At boot because the check needs kilobytes in one piece (three-argument pow on
2048-bit integers), which a running board's fragmented heap does not have.

Run by slots.boot() and dropped after. Never installs a bundle whose signature or header
does not verify: the files are deleted, the old version boots, the status says why."""

import gc
import os
import time

SIG = 256  # RSA-2048
# DER DigestInfo prefix of SHA-256 (RFC 8017, section 9.2, note 1)
DIGEST_INFO = b"\x30\x31\x30\x0d\x06\x09\x60\x86\x48\x01\x65\x03\x04\x02\x01\x05\x00\x04\x20"
KEEP = ("guard.mpy", "slots.mpy", "otastate.mpy", "trial.mpy")  # only a flash replaces these (rollout/bundle.py)
MARK = "ota_installing"  # there while an install runs
peak = 0  # the most heap in use after a step of the install (make bench reports it)


def _heap():
    global peak
    used = gc.mem_alloc()
    if used > peak:
        peak = used


def install(o, good):
    """Install the bundle of offer `o` (slots.OFFER's fields) next to slot `good`: writes
    slots.TRIAL, or notes why not. The offer and the staging file go either way; an install
    cut short by a reset is not tried again (its marker file says so at the next boot)."""
    import slots

    t0 = time.ticks_ms()
    version = o[4]
    if slots.read(MARK) is not None:
        why = "failed", "install: cut short by a reset"
    else:
        slots.write(MARK, version)
        try:
            why = _install(slots, int(o[1]), version, o[5], int(o[6]), good)
        except Exception as e:  # no flash, no memory: the old version boots, and says why
            why = "failed", "install: " + repr(e)[:100]
    slots.remove(slots.OFFER)
    slots.remove(slots.STAGE)
    slots.remove(MARK)
    if why:
        slots.note(why[0], version, why[1])
        print("fw ota", why[0], version, why[1])
    else:
        print("fw ota installed", version, "ms", time.ticks_diff(time.ticks_ms(), t0),
              "peak_heap", peak)


def _install(slots, size, version, previous, trial_s, good):
    mv = memoryview(bytearray(512))
    import hashlib

    h = hashlib.sha256()
    with open(slots.STAGE, "rb") as f:
        left = size - SIG
        while left:
            n = f.readinto(mv[:min(512, left)])
            if not n:
                return "refused", "bundle shorter than offered"
            h.update(mv[:n])
            left -= n
        sig = f.read(SIG)
    digest = h.digest()
    del h
    gc.collect()
    why = check_sig(digest, sig)
    _heap()
    if why:
        return "refused", why
    with open(slots.STAGE, "rb") as f:
        line = f.readline()
        try:
            import json

            head = json.loads(line)
            files = head["files"]
            total = 0
            for name, n in files:
                if not name.endswith(".mpy") or "/" in name or name in KEEP:
                    raise ValueError("file name " + name)
                total += n
            if head["version"] != version or len(line) + total + SIG != size:
                raise ValueError("header does not match the offer")
        except (ValueError, KeyError, TypeError) as e:
            return "refused", "bundle header: %s" % e
        slot = "s2" if good == "s1" else "s1"
        try:
            os.mkdir(slot)
        except OSError:
            for name in os.listdir(slot):
                os.remove(slot + "/" + name)
        for name, n in files:
            gc.collect()
            with open(slot + "/" + name, "wb") as out:
                while n:
                    k = f.readinto(mv[:min(512, n)])
                    if not k:
                        raise OSError("bundle ends inside " + name)
                    out.write(mv[:k])
                    n -= k
            _heap()
    slots.write(slots.TRIAL, "%s 0 %d %s %s" % (slot, trial_s, version, previous))
    return None


def check_sig(digest, sig):
    """None when `sig` is the RSA PKCS#1 v1.5 signature of the SHA-256 `digest` under the
    board's key, else why not. Three-argument pow with e = 65537: 17 multiplications."""
    try:
        with open("ota_key") as f:
            text = f.read().strip()
        n = int(text, 16)
    except (OSError, ValueError):
        return "no usable OTA key on the board"
    k = (len(text) + 1) // 2
    text = None
    if len(sig) != SIG or k != SIG:
        return "signature: expected %d bytes under a %d-byte key" % (SIG, k)
    s = int.from_bytes(sig, "big")
    if s >= n:
        return "signature does not match the bundle (out of the key's range)"
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
