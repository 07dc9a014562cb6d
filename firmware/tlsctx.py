"""TLS for the MQTT client: the context (the broker's CA from flash, ca.der, written by
flash.sh; the broker's certificate required), wrapping a connection, naming a failure.

Loaded at boot and per connection, then dropped (no resident heap); never returns a
context that skips verification, never lets a connection go on in clear."""

import gc
import time

import tls

CA = "ca.der"


def context(root):
    """(SSLContext, None), or (None, why) naming the file and what is wrong with it."""
    path = root + "/" + CA
    try:
        with open(path, "rb") as f:
            ca = f.read()
    except OSError as e:
        return None, "tls: %s unreadable (%s)" % (path, e)
    gc.collect()  # the context is one block of about 3 KB (64-bit port)
    try:
        # A client context requires the peer's certificate from the start
        # (extmod/modtls_mbedtls.c ssl_context_make_new: MBEDTLS_SSL_VERIFY_REQUIRED).
        ctx = tls.SSLContext(tls.PROTOCOL_TLS_CLIENT)
    except MemoryError:
        return None, "tls: no memory for the TLS context (%d bytes free)" % gc.mem_free()
    try:
        ctx.load_verify_locations(ca)  # DER: no PEM text to hold on the heap
    except (OSError, ValueError) as e:
        return None, "tls: %s is not a usable CA certificate (%s)" % (path, e)
    return ctx, None



def wrap(cl, s):
    """mqtt.MQTTClient `cl`'s connecting socket `s` wrapped in TLS for `cl.host`; the
    handshake is left to cl.poll(). Closes `s` and raises OSError saying why it cannot."""
    ctx = cl.tls
    err = None
    if isinstance(ctx, str):  # boot could not make it (memory): make it now, and keep it
        ctx, err = context(ctx)
        if ctx is not None:
            cl.tls = ctx
    if err is None and time.gmtime()[0] < 2024:
        # mbedtls checks the certificate's dates against this clock, which an ESP32 starts
        # at 2000-01-01 (ports/esp32 main.c platform_mbedtls_time): a handshake now would
        # fail after seconds of CPU; NTP sets the clock.
        err = "tls: the clock is not set (NTP): certificate dates unknown"
    if err is None:
        try:
            return ctx.wrap_socket(s, server_hostname=cl.host, do_handshake_on_connect=False)
        except Exception as e:  # MemoryError, OSError, ValueError
            err = "tls: %s" % e
    s.close()
    raise OSError(err)


def cause(e):
    """Why a TLS connection failed, as one log line: a socket's errno is positive;
    mbedtls's errors are negative, and its verify text (a ValueError) has a line per
    reason."""
    a = e.args
    if a and a[0] == -0x7280:  # MBEDTLS_ERR_SSL_CONN_EOF: TCP closed under the TLS layer
        return "closed by broker"
    if isinstance(e, OSError) and not (a and isinstance(a[0], int) and a[0] < 0):
        return "socket error"
    m = a[-1] if a and isinstance(a[-1], str) else str(e)
    return "tls: " + m.strip().replace("\n", "; ")
