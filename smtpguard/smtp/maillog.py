"""aiosmtpd's own log (logger `mail.log`) with the clients' credentials kept out of it."""

from __future__ import annotations

import logging

from aiosmtpd.smtp import SMTP

# aiosmtpd log messages whose last argument is a client's line, whatever it is.
_CLIENT_TEXT = frozenset({"%r unrecognised: %s", "%r can't decode base64: %s"})
_LOGIN_DATA_WARNING = "Session.login_data is deprecated and will be removed in version 2.0"


class _NoCredentials(logging.Filter):
    """Keep passwords out of aiosmtpd's log (logger `mail.log`).

    When a client's AUTH exchange gets out of step, its password line is read
    as a command: aiosmtpd logs it (`>> b'...'` at INFO, sanitized only for
    lines that start with AUTH; `readline` at DEBUG) and again at WARNING
    (`unrecognised: ...`), or as undecodable base64 inside AUTH. A client line
    that does not start with a known command is logged by its length only.
    """

    def __init__(self, commands: frozenset[str]) -> None:
        super().__init__()
        self.commands = commands

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == _LOGIN_DATA_WARNING:
            return False  # aiosmtpd 1.4.6 sets the deprecated attribute itself, on every successful AUTH
        args = record.args
        if isinstance(args, tuple) and args:
            if record.msg in _CLIENT_TEXT:
                record.args = (*args[:-1], f"<{len(str(args[-1]))} characters not shown>")
            else:
                record.args = tuple(self._shown(a) for a in args)
        return True

    def _shown(self, arg: object) -> object:
        if not isinstance(arg, bytes):
            return arg
        verb = arg.split(b" ", 1)[0].strip().upper().decode("ascii", "replace")
        return arg if verb in self.commands else f"<{len(arg)} bytes not shown: not a command>"


def guard_mail_log() -> None:
    """Install `_NoCredentials` on aiosmtpd's logger, once per process."""
    logger = logging.getLogger("mail.log")
    if not any(isinstance(f, _NoCredentials) for f in logger.filters):
        verbs = frozenset(name[5:] for name in dir(SMTP) if name.startswith("smtp_"))
        logger.addFilter(_NoCredentials(verbs))
