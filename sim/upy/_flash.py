"""What writing the board's files costs on an ESP32: littlefs on NOR flash, where a sector
erase stalls the caller for tens to hundreds of milliseconds (a real sleep in board time).

Installed by the simulated `machine` under the harness; wraps only the board's own files
opened for writing, never the simulator's files, and never changes what is written."""

import builtins
import io
import os
import utime
import _sim

BLOCK = 4096
"""littlefs block: one 4 KB sector. ports/esp32/esp32_partition.c: NATIVE_BLOCK_SIZE_BYTES
(4096) is what the partition's ioctl(BLOCK_SIZE) gives VfsLfs2 (ports/esp32/modules/_boot.py
mounts the "vfs" partition with it)."""
INLINE = 128
"""A file this small lives inline in its directory's metadata pair and needs no block of its
own: littlefs lfs.c lfs_file_flushedwrite outlines a file past inline_max, which is at most
cache_size; extmod/vfs_lfsx.c sets cache_size = MIN(block_size, 4 * MAX(read_size,
prog_size)) = 128 with extmod/vfs_lfs.c's default read/prog size of 32."""
PAGE = 256
ERASE_MS = 45
PROG_US = 400
"""Winbond W25Q32JV datasheet (rev. C, 2016), 9.6 AC electrical characteristics: sector
erase (4 KB) tSE 45 ms typical, 400 ms maximum; page program (256 B) tPP 0.4 ms typical,
3 ms maximum. The ESP32-WROOM-32's 4 MB part (GD25Q32C) gives the same class of figures.
ESP-IDF's spi_flash runs an erase with the caches off: the CPU that runs MicroPython waits."""
COMMIT = 64
"""Bytes one metadata commit appends to a directory's log (tags, CRC, padding to prog_size);
when the 4 KB log is full littlefs compacts it into the other block of the pair (one erase).
littlefs DESIGN.md, "Metadata pairs"."""

_ctl = _sim.ctl
_open = builtins.open
_meta = [0]  # bytes used in the directory's metadata log
stats = [0, 0]  # erases, board microseconds stalled (for tests and the bench)


def erase_ms():
    """The stall of one sector erase: ctl "flash" {"erase_ms": ...} (a flash_stall fault sets
    it to the worst case), else the datasheet's typical figure."""
    _ctl.poll()
    v = _ctl.get("flash", "erase_ms")
    return ERASE_MS if v is None else v


def stall(board_us):
    """Stop the board for board_us of board time, as a flash operation with the cache off."""
    if board_us > 0:
        stats[1] += board_us
        utime.sleep_us(board_us * 1000 // _sim.SCALE_MILLI)


def _erase(n):
    if n > 0:
        stats[0] += n
        stall(int(n * erase_ms() * 1000))


def _commit(inline_bytes):
    """One metadata commit: a page program, and an erase when the log must be compacted."""
    m = _meta[0] + COMMIT + inline_bytes
    if m > BLOCK:
        _erase(1)
        m = 512 + inline_bytes  # what the compacted log still holds, about
    _meta[0] = m
    stall(PROG_US)


class FlashFile(io.IOBase):
    """A file on littlefs. Blocks are copy-on-write: the first write after a sync into a
    block that already holds data goes to a freshly erased block (lfs.c lfs_ctz_extend
    copies the block's old bytes over), and a sync or seek after rewriting inside a file
    copies everything after the write position to new blocks (lfs.c lfs_file_flush, "copy
    over anything after current branch"). A sync (flush, close) commits the metadata."""

    def __init__(self, f, size, append, created):
        self.f = f
        self.size = size
        self.append = append
        self.lo = -1  # blocks already fresh in this write session: lo..hi
        self.hi = -1
        self.prog = 0  # bytes programmed in this session
        self.dirty = created  # created, truncated or written since the last commit

    def write(self, b):
        n = len(b)
        if n == 0:
            return 0
        pos = self.size if self.append else self.f.tell()
        end = pos + n
        if end > self.size:
            self.size = end
        if self.size > INLINE:
            first = pos // BLOCK
            last = (end - 1) // BLOCK
            fresh = 0
            blk = first
            while blk <= last:
                if not self.lo <= blk <= self.hi:
                    fresh += 1
                blk += 1
            if self.lo < 0 or first < self.lo:
                self.lo = first
            if last > self.hi:
                self.hi = last
            _erase(fresh)
        self.prog += n
        self.dirty = True
        return self.f.write(b)

    def _tail(self):
        """End the write session: copy what follows the write position to new blocks."""
        if self.lo < 0 and not self.prog:
            return
        pos = self.size if self.append else self.f.tell()
        if self.size > INLINE and pos < self.size:
            fresh = 0
            blk = pos // BLOCK
            while blk <= (self.size - 1) // BLOCK:
                if not self.lo <= blk <= self.hi:
                    fresh += 1
                blk += 1
            _erase(fresh)
            self.prog += self.size - pos
        stall((self.prog + PAGE - 1) // PAGE * PROG_US)
        self.lo = self.hi = -1
        self.prog = 0

    def _sync(self):
        self._tail()
        if self.dirty:
            self.dirty = False
            _commit(self.size if self.size <= INLINE else 0)

    def flush(self):
        self.f.flush()
        self._sync()

    def close(self):
        if self.f is not None:
            self._sync()
            self.f.close()
            self.f = None

    def seek(self, off, whence=0):
        self._tail()  # lfs_file_seek flushes a file being written
        return self.f.seek(off, whence)

    def tell(self):
        return self.f.tell()

    def read(self, n=-1):
        self._tail()
        return self.f.read(n)

    def readinto(self, b, n=-1):
        self._tail()
        return self.f.readinto(b) if n < 0 else self.f.readinto(b, n)

    def readline(self):
        self._tail()
        return self.f.readline()

    def ioctl(self, req, arg):
        return 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _board_file(path):
    if not isinstance(path, str):
        return False
    d = _sim.DIR
    return not path.startswith(d + "/") or path.startswith(d + "/flash/")


def open(path, mode="r", *args, **kw):  # noqa: A001 (replaces the built-in)
    f = _open(path, mode, *args, **kw)
    if ("w" not in mode and "a" not in mode and "+" not in mode) or not _board_file(path):
        return f
    size = 0
    if "w" not in mode:
        try:
            size = os.stat(path)[6]
        except OSError:
            size = 0
    return FlashFile(f, size, "a" in mode, "w" in mode)


def install():
    """Route the board's file writes through the flash model (only under the harness)."""
    if _sim.DIR and builtins.open is _open:
        builtins.open = open


install()
