"""Upstream OAuth 2.0 for XOAUTH2: Microsoft 365 (MSAL) and Google, tokens encrypted at rest.

Modules: errors (what the relay maps to SMTP replies), tokens (the encrypted store),
http (the one HTTP client, TLS trust pinned per request), loopback (catching the
browser redirect), microsoft, google, broker (`TokenBroker.access_token`).
"""
