"""Upstream OAuth 2.0 for XOAUTH2: Microsoft 365 (MSAL) and Google, tokens encrypted at rest.

The relay: one `TokenBroker(TokenStore(state_dir))`; before each upstream login
`await broker.access_token(account)` (an `OAuthAccount`). `SignInRequired` /
`AuthorizationRefused` want a person (4xx naming `exc.command`), `ProviderUnavailable`
is transient (451). After an upstream 535 with a token that looked valid, call once more
with `force_refresh=True` and retry the login once.
The CLI: `login.sign_in/status/sign_out`, `setup.setup_steps`.

Modules: errors, tokens (the encrypted store), http (TLS trust pinned per request),
loopback (catching the browser redirect), microsoft, google, broker, login, setup.
Nothing runs at import time.
"""
