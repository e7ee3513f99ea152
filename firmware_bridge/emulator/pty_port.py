"""The emulated device's wire: the master side of a pseudo-terminal, with a TX FIFO like a UART's.

The host opens the slave path with pyserial. An optional stable symlink (like /dev/serial/by-id/...)
points at the current slave, so a host can reopen the same path after the device vanished and came
back on a new pty.
"""
from __future__ import annotations

import os
import tty
from typing import Optional


class PtyPort:
    TX_QUEUE_MAX = 16384  # bytes; beyond this, frames are dropped whole (counted as tx_overflow)

    def __init__(self, link: Optional[str] = None) -> None:
        self.link = link
        self.master: Optional[int] = None
        self.slave: Optional[int] = None
        self.pty_path: Optional[str] = None
        self._tx = bytearray()

    @property
    def is_open(self) -> bool:
        return self.master is not None

    @property
    def path(self) -> str:
        """What a host should open: the stable link if there is one, else the pty itself."""
        return self.link or self.pty_path or ""

    @property
    def tx_pending(self) -> bool:
        return bool(self._tx)

    def open(self) -> str:
        master, slave = os.openpty()
        tty.setraw(slave)  # no echo, no line discipline: bytes pass through untouched
        os.set_blocking(master, False)
        # We keep the slave fd open too, so the master never sees EIO while no host has the port open.
        self.master, self.slave = master, slave
        self.pty_path = os.ttyname(slave)
        self._tx.clear()
        if self.link:
            tmp = f"{self.link}.tmp{os.getpid()}"
            if os.path.lexists(tmp):
                os.unlink(tmp)
            os.symlink(self.pty_path, tmp)
            os.replace(tmp, self.link)  # atomic: a host never sees a half-made link
        return self.path

    def close(self) -> None:
        """The device vanishes: the link disappears and the pty hangs up on the host."""
        if self.link and os.path.islink(self.link):
            os.unlink(self.link)
        for fd in (self.master, self.slave):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.master = self.slave = None
        self._tx.clear()

    def queue(self, data: bytes) -> bool:
        """Queue bytes for sending. False when the FIFO is full (the frame is dropped)."""
        if self.master is None:
            return True  # vanished: bytes go nowhere, as on an unplugged cable
        if len(self._tx) + len(data) > self.TX_QUEUE_MAX:
            return False
        self._tx += data
        return True

    def flush(self) -> None:
        """Write as much of the FIFO as the pty accepts now."""
        while self._tx and self.master is not None:
            try:
                n = os.write(self.master, self._tx)
            except BlockingIOError:
                return
            except OSError:
                self._tx.clear()
                return
            del self._tx[:n]

    def read(self) -> bytes:
        if self.master is None:
            return b""
        try:
            return os.read(self.master, 4096)
        except (BlockingIOError, OSError):
            return b""
