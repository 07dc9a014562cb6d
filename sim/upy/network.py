"""Simulated `network`: a station WLAN whose link the harness takes down and up
(ctl "wifi": {"up": bool, "rssi": dBm, "ssid": name}); traffic uses real sockets.
status("rssi") raises while the station is not associated, as on the chip.

Never touches the host's real network configuration."""

import utime
import _sim
import socket

STA_IF = 0
AP_IF = 1
STAT_IDLE = 1000
STAT_CONNECTING = 1001
STAT_GOT_IP = 1010
STAT_NO_AP_FOUND = 201

_ctl = _sim.ctl


def _up():
    _ctl.poll()
    return _ctl.get("wifi", "up", True)


class WLAN:
    def __init__(self, interface_id=STA_IF):
        self._active = False
        self._ssid = None
        self._since = 0
        self._was_up = True

    def active(self, is_active=None):
        if is_active is None:
            return self._active
        self._active = bool(is_active)
        if not is_active:
            self._ssid = None
        return None

    def connect(self, ssid=None, key=None, **kw):
        if not self._active:
            raise OSError("STA must be active")
        self._ssid = ssid
        self._since = utime.ticks_ms()

    def disconnect(self):
        self._ssid = None
        socket._drop_all()

    def status(self, param=None):
        if param == "rssi":
            # esp32 port network_wlan.c network_wlan_status(): "rssi" is
            # esp_exceptions(esp_wifi_sta_get_ap_info(&info)), which fails with
            # ESP_ERR_WIFI_NOT_CONNECT unless the station is associated, and esp_exceptions
            # (network_common.c esp_exceptions_helper) raises it as this OSError.
            if self.status() != STAT_GOT_IP:
                raise OSError("Wifi Not Connected")
            return int(_ctl.get("wifi", "rssi", -60))
        if not self._active or self._ssid is None:
            return STAT_IDLE
        want = _ctl.get("wifi", "ssid", None)
        if want is not None and want != self._ssid:
            return STAT_NO_AP_FOUND
        if not _up():
            return STAT_CONNECTING
        # association and DHCP take a little while after connect()
        if utime.ticks_diff(utime.ticks_ms(), self._since) < 300:
            return STAT_CONNECTING
        return STAT_GOT_IP

    def isconnected(self):
        up = self.status() == STAT_GOT_IP
        if not up and self._was_up:
            socket._drop_all()  # the link is gone: every open connection dies
        self._was_up = up
        return up

    def ifconfig(self, *a):
        return ("10.0.0.2", "255.255.255.0", "10.0.0.1", "10.0.0.1")
