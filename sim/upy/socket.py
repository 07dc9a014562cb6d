"""Simulated `socket`: the real unix TCP sockets, which fail while the simulated WiFi is down;
names go to _dns (lwIP's blocking resolver) and UDP to _udp (an NTP server), loaded per use.

Only adds the link check; never proxies TCP data, never asks the host's resolver for a name
(names come from ctl "dns": {"hosts": {name: ip}})."""

import usocket as _s
import _sim

AF_INET = _s.AF_INET
SOCK_STREAM = _s.SOCK_STREAM
SOCK_DGRAM = _s.SOCK_DGRAM
_open = []


def _link():
    _sim.ctl.poll()
    return _sim.ctl.get("wifi", "up", True)


def _drop_all():
    while _open:
        try:
            _open.pop().close()
        except OSError:
            pass


def socket(af=AF_INET, type=SOCK_STREAM, proto=0):
    if not _link():
        raise OSError(113)  # EHOSTUNREACH
    if type == SOCK_DGRAM:
        import _udp

        s = _udp.Udp()
    else:
        s = _s.socket(af, type, proto)
    _open.append(s)
    if len(_open) > 8:
        _open.pop(0)
    return s


def getaddrinfo(host, port, af=0, type=0, proto=0, flags=0):
    """Like the esp32 port's: IPv4 only (modsocket.c asks lwIP for AF_INET); a name blocks
    while _dns resolves it, a numeric host never reaches DNS (lwIP lwip_getaddrinfo). The
    addresses are the unix port's own, so the real sockets take them."""
    try:
        _s.inet_pton(AF_INET, host)
    except OSError:
        if host:
            import _dns

            host = _dns.resolve(host)
    return _s.getaddrinfo(host or "0.0.0.0", port, AF_INET, type, proto, flags)
