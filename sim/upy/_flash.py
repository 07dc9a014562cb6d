"""What writing the board's files costs on an ESP32: littlefs on NOR flash, where a sector
erase stalls the caller for tens to hundreds of milliseconds (a real sleep in board time).

Installed by the simulated `machine` under the harness; wraps only the board's own files
opened for writing, never the simulator's files, and never changes what is written."""

import builtins
import io
import os
import utime
import _sim
from micropython import const

_BLOCK = const(4096)
"""littlefs block: one 4 KB sector. ports/esp32/esp32_partition.c: NATIVE_BLOCK_SIZE_BYTES
(4096) is what the partition's ioctl(BLOCK_SIZE) gives VfsLfs2 (ports/esp32/modules/_boot.py
mounts the "vfs" partition with it)."""
_INLINE = const(128)
"""A file this small lives inline in its directory's metadata pair and needs no block of its
own: littlefs lfs.c lfs_file_flushedwrite outlines a file past inline_max, which is at most
cache_size; extmod/vfs_lfsx.c sets cache_size = MIN(block_size, 4 * MAX(read_size,
prog_size)) = 128 with extmod/vfs_lfs.c's default read/prog size of 32."""
_PAGE = const(256)
_ERASE_MS = const(45)
_PROG_US = const(400)
"""Winbond W25Q32JV datasheet (rev. C, 2016), 9.6 AC electrical characteristics: sector
erase (4 KB) tSE 45 ms typical, 400 ms maximum; page program (256 B) tPP 0.4 ms typical,
3 ms maximum. The ESP32-WROOM-32's 4 MB part (GD25Q32C) gives the same class of figures.
ESP-IDF's spi_flash runs an erase with the caches off: the CPU that runs MicroPython waits."""
_COMMIT = const(64)
"""Bytes one metadata commit appends to a directory's log (tags, CRC, padding to prog_size);
when the 4 KB log is full littlefs compacts it into the other block of the pair (one erase).
littlefs DESIGN.md, "Metadata pairs"."""

_ctl = _sim.ctl
_open = builtins.open
state = [0, 0, 0]  # erases, board microseconds stalled, bytes in the metadata log


def stall(board_us, erases=0):
    """Stop the board for board_us of board time plus `erases` sector erases (ctl "flash"
    {"erase_ms": ...} when set: a flash_stall fault sets the worst case), as a flash
    operation with the cache off does."""
    if erases:
        _ctl.poll()
        ms = _ctl.get("flash", "erase_ms")
        board_us += int(erases * (_ERASE_MS if ms is None else ms) * 1000)
        state[0] += erases
    if board_us > 0:
        state[1] += board_us
        utime.sleep_us(board_us * 1000 // _sim.SCALE_MILLI)


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

    def _fresh(self, first, last):
        """Blocks in first..last not yet written in this session (each needs an erase)."""
        n = 0
        while first <= last:
            if not self.lo <= first <= self.hi:
                n += 1
            first += 1
        return n

    def write(self, b):
        n = len(b)
        pos = self.size if self.append else self.f.tell()
        if pos + n > self.size:
            self.size = pos + n
        if self.size > _INLINE and n:
            first = pos // _BLOCK
            last = (pos + n - 1) // _BLOCK
            e = self._fresh(first, last)
            if self.lo < 0 or first < self.lo:
                self.lo = first
            if last > self.hi:
                self.hi = last
            stall(0, e)
        self.prog += n
        self.dirty = True
        return self.f.write(b)

    def _end(self, commit):
        """End the write session: copy what follows the write position to new blocks;
        with `commit`, also commit the metadata (a page, and a compaction when full)."""
        e = 0
        us = 0
        if self.prog:
            pos = self.size if self.append else self.f.tell()
            if self.size > _INLINE and pos < self.size:
                e = self._fresh(pos // _BLOCK, (self.size - 1) // _BLOCK)
                self.prog += self.size - pos
            us = (self.prog + _PAGE - 1) // _PAGE * _PROG_US
            self.lo = self.hi = -1
            self.prog = 0
        if commit and self.dirty:
            self.dirty = False
            m = state[2] + _COMMIT + (self.size if self.size <= _INLINE else 0)
            if m > _BLOCK:
                e += 1
                m = 512  # about what the compacted log still holds
            state[2] = m
            us += _PROG_US
        stall(us, e)

    def flush(self):
        self.f.flush()
        self._end(True)

    def close(self):
        if self.f is not None:
            self._end(True)
            self.f.close()
            self.f = None

    def seek(self, off, whence=0):
        self._end(False)  # lfs_file_seek flushes a file being written
        return self.f.seek(off, whence)

    def readinto(self, b):
        self._end(False)
        return self.f.readinto(b)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def open(path, mode="r", *args):  # noqa: A001 (replaces the built-in)
    """The built-in open; the board's own files opened for writing come wrapped."""
    f = _open(path, mode, *args)
    d = _sim.DIR
    if "r" in mode and "+" not in mode or (path.startswith(d + "/")
                                          and not path.startswith(d + "/flash/")):
        return f
    try:
        size = 0 if "w" in mode else os.stat(path)[6]
    except OSError:
        size = 0
    return FlashFile(f, size, "a" in mode, "w" in mode)


if _sim.DIR:  # under the harness: route the board's file writes through the model
    builtins.open = open
