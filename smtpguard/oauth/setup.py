"""The one-time provider steps `smtpguard account setup microsoft|google` prints (plain text, no I/O)."""

from __future__ import annotations

MICROSOFT_DELEGATED = """\
Microsoft 365: let smtpguard send as each user with OAuth (XOAUTH2), once per tenant.

1. Entra admin center > App registrations > New registration
   - Name: smtpguard; Supported account types: this organization only (single tenant).
   - Note the Application (client) ID and the Directory (tenant) ID.
2. Authentication > Add a platform > Mobile and desktop applications
   - Redirect URI: http://localhost
   - Advanced settings: Allow public client flows = Yes (needed for the device code sign-in).
3. API permissions > Add a permission > Microsoft Graph > Delegated permissions
   - SMTP.Send (and offline_access). If users may not consent to apps in your tenant,
     click "Grant admin consent".
4. Exchange Online PowerShell, for every mailbox that sends through smtpguard:
     Set-CASMailbox -Identity alice@example.com -SmtpClientAuthenticationDisabled $false
   (without it Exchange answers 535 5.7.139 whatever the token).
5. Conditional Access: no policy may block the sign-in smtpguard uses. Many tenants block
   the device code flow: then sign in with --flow browser (or --flow paste on a server).
6. In smtpguard.toml give the tenant and the client ID, then for each user:
     smtpguard account login USER --provider microsoft
"""

MICROSOFT_APP = """\
Microsoft 365 app-only (oauth-app): one credential for every mailbox in scope, no user sign-in.

1. Entra admin center > App registrations > New registration (single tenant).
2. API permissions > Add a permission > APIs my organization uses > Office 365 Exchange Online
   > Application permissions > SMTP.SendAsApp; then "Grant admin consent".
3. Certificates & secrets > New client secret; keep it in a file only the service reads.
4. Exchange Online PowerShell (use the Enterprise application's object ID, not the app registration's):
     New-ServicePrincipal -AppId <client id> -ObjectId <enterprise application object id>
   then limit the app to the sending mailboxes with an App RBAC management scope and the role
   "Application SMTP.SendAsApp" (New-ManagementScope, New-ManagementRoleAssignment), and check:
     Test-ServicePrincipalAuthorization -Identity <client id> -Resource alice@example.com
   Changes can take a while (reports say up to 90 minutes) to apply.
5. SMTP AUTH must be enabled on each sending mailbox (Set-CASMailbox, as for delegated sign-in).
6. smtpguard binds every local user to their own sender addresses: Exchange no longer knows who sends.
"""

GOOGLE = """\
Google Workspace: let smtpguard send as each user with OAuth (XOAUTH2).

1. Google Cloud console, in a project of your organization:
   - APIs & Services > OAuth consent screen: User type Internal (only your organization's
     users; an External app in "Testing" gets refresh tokens that die after 7 days).
   - Scopes: https://mail.google.com/
2. APIs & Services > Credentials > Create credentials > OAuth client ID > Application type Desktop app.
   Note the client ID and the client secret (Google documents it as not confidential for desktop apps).
3. In smtpguard.toml give the client ID and secret, then for each user:
     smtpguard account login USER --provider google --flow browser
   On a server without a browser use --flow paste: open the address anywhere, sign in, and paste
   back the address the browser ended on (http://127.0.0.1/?code=...). Google's device flow
   does not allow mail scopes.
Alternative without OAuth: an app password (2-Step Verification on) with auth = "passthrough".
"""


def setup_steps(provider: str, app_only: bool = False) -> str:
    if provider == "google":
        return GOOGLE
    if provider == "microsoft":
        return MICROSOFT_APP if app_only else MICROSOFT_DELEGATED
    raise ValueError(f"unknown provider {provider!r}: microsoft or google")
