"""The SMTP side: the client session (aiosmtpd), each recipient's verdict, and the upstream link."""
