"""The simulated DNS behind socket.getaddrinfo: lwIP's resolver, blocking the caller as long as
it would (ctl "dns"). Takes itself out of sys.modules as it loads, so it is on the board's
heap only while a name is looked up (on a chip this is C in flash).

Sim-only; never asks the host's resolver for a name."""

import sys
import utime
import _sim
from socket import _link

# lwIP core/dns.c dns_check_entry(): a query is sent with tmr = 1 and, on each DNS_TMR_INTERVAL
# (1000 ms) tick without an answer, resent with tmr = ++retries until retries reaches
# DNS_MAX_RETRIES (4, lwip/opt.h; ESP-IDF keeps it, see its FAQ "How to increase the DNS
# request time for ESP32?"): 1 + 1 + 2 + 3 = 7 s per DNS server before the next server
# (ESP-IDF lwipopts.h DNS_MAX_SERVERS 3) or the end.
DNS_SERVER_TIMEOUT_MS = 7000
# lwIP api/netdb.c lwip_getaddrinfo(): a failed netconn_gethostbyname() returns EAI_FAIL (202);
# the esp32 port's modsocket.c _getaddrinfo_inner() raises it negated ("instead of raising
# gaierror getaddrinfo raises negative error number"): OSError(-202).
EAI_FAIL = -202


def _block(ms):
    """Hold the caller for `ms` of board time, as a blocking lwIP call holds the chip."""
    if ms > 0:
        utime.sleep_us(_sim.real_ms(ms) * 1000)


def resolve(host):
    """The address lwIP's resolver gives for `host`, after blocking as long as it would.
    ctl "dns": delay_ms (answer time, default 20), fail (true: no answer, so lwIP's full
    timeout; "nxdomain": an error answer after delay_ms), servers (DNS servers the network
    gave, 1-3: the timeout is per server), hosts ({name: ip}: names that resolve)."""
    _sim.ctl.poll()
    d = _sim.ctl.state.get("dns") or {}
    delay = int(d.get("delay_ms", 20))
    fail = d.get("fail", False)
    timeout = DNS_SERVER_TIMEOUT_MS * max(1, min(3, int(d.get("servers", 1))))
    if not _link() or fail is True or delay >= timeout:
        _block(timeout)  # queries lost (or the answer comes too late): lwIP gives up
        raise OSError(EAI_FAIL)
    _block(delay)
    ip = (d.get("hosts") or {}).get(host)
    if fail or ip is None:  # the server answered "no such name" (dns_recv: error flags)
        raise OSError(EAI_FAIL)
    return ip


sys.modules.pop(__name__, None)  # see the module docstring
