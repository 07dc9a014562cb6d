"""Optional check (SIM_SMALLINT=1) that the firmware's numbers stay ESP32 small ints: on the
chip an int is a tagged 31-bit value (MP_SMALL_INT_BITS = 31 with MICROPY_OBJ_REPR_A on a
32-bit port, py/mpconfig.h), and past +-2**30 it becomes a heap object, so a counter that
grows there makes an "allocation-free" loop allocate. The 64-bit unix port never shows it.

Walks what the firmware keeps (module globals and the objects reachable from them, four
levels deep) once a second from WDT.feed. It allocates a little while it walks, so it is
off by default, and it never lets its own MemoryError reach the firmware."""

import sys
import _sim

LIMIT = 1 << 30
_SKIP = (str, bytes, bytearray, memoryview, float, bool)
_seen = {}
_path = []


def _hit(v):
    p = ".".join(_path)
    if p not in _seen:
        _seen[p] = v
        print("smallint:", p, "=", v)
        return True
    return False


def _walk(obj, depth):
    t = type(obj)
    if t is int:
        return (not -LIMIT <= obj < LIMIT) and _hit(obj)
    if depth == 0 or t in _SKIP or callable(obj):
        return False
    fresh = False
    if t is dict:
        for k in obj:
            _path.append(str(k))
            fresh = _walk(obj[k], depth - 1) or fresh
            _path.pop()
    elif t is list or t is tuple:
        i = 0
        while i < len(obj):
            _path.append(str(i))
            fresh = _walk(obj[i], depth - 1) or fresh
            _path.pop()
            i += 1
    elif t is not type(sys):
        try:
            d = obj.__dict__
        except AttributeError:
            return False
        for k in d:
            _path.append(k)
            fresh = _walk(d[k], depth - 1) or fresh
            _path.pop()
    return fresh


def check():
    """Report each firmware value outside the small-int range once (stdout, and the
    harness file `smallint` with every one seen)."""
    fresh = False
    try:
        for name in ("app", "store", "mqtt", "gas", "flood", "vibration"):
            m = sys.modules.get(name)
            if m is None:
                continue
            g = m.__dict__
            for k in g:
                _path.append(name)
                _path.append(k)
                fresh = _walk(g[k], 4) or fresh
                _path.pop()
                _path.pop()
    except MemoryError:
        del _path[:]
        return
    if fresh and _sim.DIR:
        _sim.write_file("smallint", "\n".join(p + " " + str(_seen[p]) for p in _seen))
