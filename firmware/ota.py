"""The `ota` command: checks an offer of a signed firmware bundle (docs/firmware.md,
"Updates over the air") and starts or resumes its transfer (otafetch.py); otainstall.py
verifies and installs it at the next boot, slots.py picks what boots, otastate.py runs the
trial.

Loaded per command and dropped after; never starts a transfer the board could not verify."""

import gc
import os

import otastate

PREFIX = "safecity/v1/_ota/"
MAX_SIZE = 262144
SIG = 256  # RSA-2048


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
    err = _int(args, "trial_s", 5, 3600)
    if err:
        return err
    if args["chunks"] != (args["size"] + args["chunk"] - 1) // args["chunk"]:
        return "args.chunks: %d chunks of %d bytes do not make %d bytes" % (
            args["chunks"], args["chunk"], args["size"])
    return None


def command(b, cid, cmd, args):
    """Check the offer, then start (or resume) its transfer."""
    import app

    err = check(b, args)
    if err:
        b.ack(cid, cmd, False, code="bad_args", message=err)
        return
    why = None
    if otastate.trial is not None:
        why = "version %s is on trial: wait for it to pass" % otastate.trial[3]
    elif b.kind == "flood" and b.cfg["flood"].get("deep_sleep"):
        why = "a battery board sleeps between wakes of seconds: it cannot hold a trial"
    elif args["version"] == app.VERSION:
        why = "version %s is already running" % app.VERSION
    else:
        try:
            os.stat("ota_key")  # written at flash time (flash.sh esp32 --ota-key)
        except OSError:
            why = "no OTA key on this board (flash it with flash.sh esp32 --ota-key)"
    if why:
        b.ack(cid, cmd, False, code="rejected", message=why)
        return
    gc.collect()
    log("offer", args["version"], "heap", gc.mem_alloc())
    import otafetch
    import slots

    t = b.ota
    if t is None or t.id != args["id"]:
        if t is not None:
            t.close()
        slots.remove(slots.STAGE)
        slots.write(slots.OFFER, "%s %d %d %d %s %s %d" % (
            args["id"], args["size"], args["chunks"], args["chunk"], args["version"],
            app.VERSION, args["trial_s"]))
        t = b.ota = otafetch.Transfer(b, args["id"], args["size"], args["chunks"],
                                      args["chunk"], args["version"])
    b.ack(cid, cmd, True, {"accepted": True, "version": t.version, "from_chunk": t.got,
                           "chunks": t.chunks})
    slots.report(b, "downloading", t.version, t.got, t.chunks)
