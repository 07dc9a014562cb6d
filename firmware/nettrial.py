"""A remote change of WiFi or broker keys on trial: kept once a broker is reached with it,
reverted to the last good config (and reported) when none is within net_trial_s.

Loaded only while a trial starts, passes or fails, then dropped (the heap is 64K)."""

import json
import os
import time

import config
import store


def start(self, keys):
    """Start (or, at boot, resume) the trial of a network change: app.Board._net reverts
    it unless a broker is reached within net_trial_s."""
    if keys:
        store.write_atomic(self.root + "/config.trial", ",".join(keys))
    self.trial_until = time.ticks_add(time.ticks_ms(), self.cfg["net_trial_s"] * 1000)


def commit(self):
    """A broker was reached with the new network settings: they become the good config."""
    config.save(self.root + config.GOOD, self.cfg)
    try:
        os.remove(self.root + "/config.trial")
    except OSError:
        pass
    self.trial_until = None
    print("fw config trial passed")


def revert(self):
    """No broker within net_trial_s: go back to the last good config and report it."""
    try:
        with open(self.root + "/config.trial") as f:
            keys = f.read()
    except OSError:
        keys = "network"
    try:
        with open(self.root + config.GOOD) as f:
            good = json.load(f)
    except (OSError, ValueError):
        good = None
    self.trial_until = None
    try:
        os.remove(self.root + "/config.trial")
    except OSError:
        pass
    if not isinstance(good, dict):
        print("fw config trial failed, no good config to go back to")
        return
    config.save(self.root + "/config.json", good)
    self.cfg = good
    self.renew = 2
    self.renew_at = time.ticks_ms()
    print("fw config trial failed, reverted", keys)
    self.event("fault", "instant", "warning",
               {"where": "set_config", "error": "%s: no broker reached within %d s, reverted"
                % (keys, self.cfg["net_trial_s"])})
