"""An upstream for the benches that holds its reply to the final dot: is the client's 250 later?"""

from __future__ import annotations

import hashlib
import socket
import threading
import time

from tests.interop.mta import LOOPBACK


class SlowUpstream:
    """An upstream of the bench's own that holds its reply to the final dot for `hold` seconds.

    It notes when it answered 250 and a digest of the data it got: the
    relay's own 250 must reach the client after that, for the same bytes.
    """

    def __init__(self, hold: float) -> None:
        self.hold = hold
        self.server = socket.create_server((LOOPBACK, 0))
        self.port = int(self.server.getsockname()[1])
        self.replied: list[tuple[float, str]] = []  # (monotonic time of its 250, sha256 of the data)
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._session, args=(conn,), daemon=True).start()

    def _session(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as lines:
            conn.sendall(b"220 slow.test ESMTP\r\n")
            while line := lines.readline():
                verb = line[:4].upper()
                if verb == b"EHLO":
                    conn.sendall(b"250-slow.test\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 SIZE 1073741824\r\n")
                elif verb == b"DATA":
                    conn.sendall(b"354 go on\r\n")
                    digest = hashlib.sha256()
                    while (line := lines.readline()) != b".\r\n":
                        if not line:
                            return
                        digest.update(line)
                    time.sleep(self.hold)
                    self.replied.append((time.monotonic(), digest.hexdigest()))
                    conn.sendall(b"250 2.0.0 queued\r\n")
                elif verb == b"QUIT":
                    conn.sendall(b"221 bye\r\n")
                    return
                else:
                    conn.sendall(b"250 ok\r\n")

    def close(self) -> None:
        self.server.close()
