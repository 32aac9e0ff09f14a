"""Interop tests: swaks as the client, a private Postfix as smtpguard's upstream (pytest -m interop)."""
