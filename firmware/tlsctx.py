"""The TLS context the MQTT client wraps its connections in: the broker's CA certificate
from flash (ca.der, written by flash.sh), the broker's certificate required.

Loaded by the MQTT client's first connect and dropped again; never returns a context that
skips verification (an unusable CA is an error the client refuses to connect with)."""

import gc

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

