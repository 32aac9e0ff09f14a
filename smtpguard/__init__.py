"""smtpguard: an outgoing SMTP relay that refuses suppressed recipients."""

__version__ = "0.1.0"
