"""Simulated `socket`: the real unix TCP sockets, which fail while the simulated WiFi is down;
names and UDP go to _netsim (lwIP's blocking resolver, an NTP server), loaded on first use.

Only adds the link check; never proxies TCP data, never asks the host's resolver for a name
(names come from ctl "dns": {"hosts": {name: ip}})."""

import sys
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


def _netsim():
    """The sim's network module, left out of sys.modules after use: it is the simulator's
    heap, not the firmware's (what lives on stays reachable through its objects)."""
    import _netsim as m

    sys.modules.pop("_netsim", None)
    return m


def socket(af=AF_INET, type=SOCK_STREAM, proto=0):
    if not _link():
        raise OSError(113)  # EHOSTUNREACH
    if type == SOCK_DGRAM:
        s = _netsim().Udp()
    else:
        s = _s.socket(af, type, proto)
    _open.append(s)
    if len(_open) > 8:
        _open.pop(0)
    return s


def getaddrinfo(host, port, af=0, type=0, proto=0, flags=0):
    """Like the esp32 port's: IPv4 only (modsocket.c asks lwIP for AF_INET); a name blocks
    while it is resolved (_netsim.resolve). Addresses are the unix port's own, so the real
    sockets take them. Numeric hosts never reach DNS (lwIP lwip_getaddrinfo)."""
    try:
        _s.inet_pton(AF_INET, host)
    except OSError:
        if host:
            host = _netsim().resolve(host)
    return _s.getaddrinfo(host or "0.0.0.0", port, AF_INET, type, proto, flags)
