"""Every reply text a mail client may read, with named codes, in English and French.

Thunderbird and Outlook show the server's words verbatim in their error
dialog, so each refusal says in plain words which address, why, since when,
from which source, and what to do.  The upstream's own replies are passed on
as they are, only reframed (`upstream_reply`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum

import aiosmtplib

from smtpguard.suppression.store import EntryRow
from smtpguard.suppression.verdict import Suppressed


class Code(IntEnum):
    """The SMTP reply codes the relay itself answers with (RFC 5321 4.2.3)."""

    CLOSING = 221
    AUTH_OK = 235
    OK = 250
    SHUTTING_DOWN = 421
    LOCAL_ERROR = 451
    INSUFFICIENT_STORAGE = 452
    TEMP_AUTH_FAILURE = 454
    SYNTAX_ERROR = 501
    NOT_IMPLEMENTED = 502
    BAD_SEQUENCE = 503
    AUTH_REQUIRED = 530
    AUTH_FAILED = 535
    REFUSED = 550
    TOO_BIG = 552
    MAILBOX_NAME_INVALID = 553


@dataclass(frozen=True)
class Reply:
    """A fixed reply: code, RFC 3463 enhanced code, and the words in each language."""

    code: Code
    enhanced: str
    en: str
    fr: str

    def say(self, lang: str, **values: str) -> str:
        """The reply line in `lang` (English for any other), `{placeholders}` filled."""
        words = self.fr if lang == "fr" else self.en
        return f"{int(self.code)} {self.enhanced} {words.format(**values)}"


STORE_DOWN = Reply(
    Code.LOCAL_ERROR,
    "4.3.0",
    "The do-not-contact list cannot be read right now, so nothing was sent. "
    "Try again in a few minutes; tell IT if it keeps happening.",
    "La liste d'exclusion est illisible pour l'instant, rien n'a été envoyé. "
    "Réessayez dans quelques minutes ; prévenez l'informatique si cela dure.",
)
UPSTREAM_DOWN = Reply(
    Code.LOCAL_ERROR,
    "4.4.1",
    "The outgoing mail server cannot be reached right now; nothing was sent. Try again in a few minutes.",
    "Le serveur d'envoi est injoignable pour l'instant ; rien n'a été envoyé. Réessayez dans quelques minutes.",
)
UPSTREAM_LOST = Reply(
    Code.LOCAL_ERROR,
    "4.4.2",
    "The connection to the outgoing mail server was lost before it confirmed the message; send it again.",
    "La connexion au serveur d'envoi a été perdue avant qu'il confirme le message ; renvoyez-le.",
)
ROUTING = Reply(
    Code.MAILBOX_NAME_INVALID,
    "5.7.1",
    "Not sent to {address}: {why}. Use a plain address like name@example.com.",
    "Pas d'envoi à {address} : {why}. Utilisez une adresse simple comme nom@exemple.fr.",
)
ENCODED_WORD = Reply(
    Code.MAILBOX_NAME_INVALID,
    "5.1.3",
    "Not sent to {address}: an address cannot contain encoded text (=?...?=). "
    "Type the plain address, like name@example.com.",
    "Pas d'envoi à {address} : une adresse ne peut pas contenir de texte encodé (=?...?=). "
    "Tapez l'adresse simple, comme nom@exemple.fr.",
)
BAD_ADDRESS = Reply(
    Code.SYNTAX_ERROR,
    "5.1.3",
    "{address} is not a valid email address ({why}).",
    "{address} n'est pas une adresse e-mail valide ({why}).",
)
AUTH_NEEDED = Reply(
    Code.AUTH_REQUIRED,
    "5.7.0",
    "Log in first: set your outgoing (SMTP) server to require authentication "
    "with your usual email username and password.",
    "Identifiez-vous d'abord : le serveur sortant (SMTP) doit utiliser "
    "l'authentification avec votre identifiant et mot de passe habituels.",
)
TOO_MANY = Reply(
    Code.INSUFFICIENT_STORAGE,
    "4.5.3",
    "Too many recipients in one message; send the rest in another message.",
    "Trop de destinataires dans un même message ; envoyez les autres dans un second message.",
)
AUTH_UNAVAILABLE = Reply(
    Code.TEMP_AUTH_FAILURE,
    "4.7.0",
    "Cannot check your password right now (the outgoing mail server did not answer); try again in a few minutes.",
    "Impossible de vérifier votre mot de passe pour l'instant (le serveur d'envoi ne répond pas) ; "
    "réessayez dans quelques minutes.",
)
AUTH_FAILED = Reply(
    Code.AUTH_FAILED,
    "5.7.8",
    "Username or password not accepted.",
    "Identifiant ou mot de passe refusé.",
)
AUTH_THROTTLED = Reply(
    Code.TEMP_AUTH_FAILURE,
    "4.7.0",
    "Too many wrong passwords from your computer; wait a few minutes, then try again.",
    "Trop de mots de passe erronés depuis votre ordinateur ; attendez quelques minutes puis réessayez.",
)
AUTH_NOT_OFFERED = Reply(
    Code.BAD_SEQUENCE,
    "5.5.1",
    "Authentication is not offered here.",
    "L'authentification n'est pas proposée ici.",
)
AUTH_BAD_BASE64 = Reply(
    Code.SYNTAX_ERROR,
    "5.5.2",
    "Can't decode base64.",
    "Décodage base64 impossible.",
)
AUTH_MALFORMED = Reply(
    Code.SYNTAX_ERROR,
    "5.5.2",
    "Malformed AUTH PLAIN data.",
    "Données AUTH PLAIN mal formées.",
)
AUTH_NOT_UTF8 = Reply(
    Code.SYNTAX_ERROR,
    "5.5.2",
    "Username or password is not UTF-8.",
    "L'identifiant ou le mot de passe n'est pas en UTF-8.",
)
INTERNAL = Reply(
    Code.LOCAL_ERROR,
    "4.3.0",
    "Something went wrong in the relay; nothing was sent. Try again.",
    "Erreur interne du relais ; rien n'a été envoyé. Réessayez.",
)
BAD_SENDER = Reply(
    Code.SYNTAX_ERROR,
    "5.1.7",
    "{address} is not a valid sender address; check the From address of your mail account.",
    "{address} n'est pas une adresse d'expéditeur valide ; vérifiez l'adresse d'envoi de votre compte.",
)
TOO_BIG = Reply(
    Code.TOO_BIG,
    "5.3.4",
    "The message is too big (the limit is {limit}); nothing was sent. "
    "Make the attachments smaller or share them as a link.",
    "Message trop volumineux (limite : {limit}) ; rien n'a été envoyé. "
    "Réduisez les pièces jointes ou partagez-les par un lien.",
)
NO_SPOOL_SPACE = Reply(
    Code.INSUFFICIENT_STORAGE,
    "4.3.1",
    "The relay has no room to hold your message right now; nothing was sent. Try again later.",
    "Le relais n'a pas la place de recevoir votre message pour l'instant ; rien n'a été envoyé. Réessayez plus tard.",
)
HEADER_TOO_BIG = Reply(
    Code.TOO_BIG,
    "5.3.4",
    "The message header is too long to remove the blocked recipients from it; nothing was sent.",
    "L'en-tête du message est trop long pour en retirer les destinataires bloqués ; rien n'a été envoyé.",
)
IDLE = Reply(
    Code.SHUTTING_DOWN,
    "4.4.2",
    "Closing the connection: nothing was received for too long.",
    "Connexion fermée : rien n'a été reçu depuis trop longtemps.",
)
TOO_MANY_CONNECTIONS = Reply(
    Code.SHUTTING_DOWN,
    "4.7.0",
    "Too many connections are open to this relay right now; close some or try again in a few minutes",
    "Trop de connexions sont ouvertes vers ce relais ; fermez-en ou réessayez dans quelques minutes",
)
SESSION_TOO_LONG = Reply(
    Code.SHUTTING_DOWN,
    "4.4.2",
    "Session too long, please reconnect",
    "Session trop longue, reconnectez-vous",
)
RELOGIN = Reply(
    Code.SHUTTING_DOWN,
    "4.4.2",
    "The connection to the outgoing mail server was lost; nothing was sent. "
    "Send the message again (your mail program will log in again).",
    "La connexion au serveur d'envoi a été perdue ; rien n'a été envoyé. "
    "Renvoyez le message (votre logiciel de messagerie se reconnectera).",
)
NO_UTF8_UPSTREAM = Reply(
    Code.MAILBOX_NAME_INVALID,
    "5.6.7",
    "The outgoing mail server does not accept non-ASCII addresses",
    "Le serveur d'envoi n'accepte pas les adresses avec accents ou caractères non latins",
)

# --- OAuth upstreams (XOAUTH2) and sender binding: smtpguard/smtp/credentials.py ----------
SIGN_IN_NEEDED = Reply(
    Code.TEMP_AUTH_FAILURE,
    "4.7.0",
    "The relay's sign-in to your mailbox has expired or was withdrawn; nothing was sent and your "
    "mail program will try again. Ask IT to run: {command}",
    "La connexion du relais à votre boîte mail a expiré ou a été retirée ; rien n'a été envoyé et "
    "votre logiciel réessaiera. Demandez à l'informatique de lancer : {command}",
)
OAUTH_REFUSED = Reply(
    Code.TEMP_AUTH_FAILURE,
    "4.7.0",
    "The mail provider refused the relay's sign-in ({detail}); nothing was sent and your mail program "
    "will try again. Ask IT to check the relay's app registration and run: {command}",
    "Le fournisseur de messagerie a refusé la connexion du relais ({detail}) ; rien n'a été envoyé et "
    "votre logiciel réessaiera. Demandez à l'informatique de vérifier l'application du relais et de lancer : {command}",
)
IDP_DOWN = Reply(
    Code.LOCAL_ERROR,
    "4.4.3",
    "The mail provider's sign-in service cannot be reached right now; nothing was sent. "
    "Your mail program will try again in a few minutes.",
    "Le service de connexion du fournisseur de messagerie est injoignable pour l'instant ; rien n'a été "
    "envoyé. Votre logiciel réessaiera dans quelques minutes.",
)
UPSTREAM_REFUSED_TOKEN = Reply(
    Code.TEMP_AUTH_FAILURE,
    "4.7.0",
    "The outgoing mail server refused the relay's sign-in for {mailbox} ({answer}); nothing was sent. "
    "Ask IT to check that SMTP sending is allowed for this mailbox, then to run: {command}",
    "Le serveur d'envoi a refusé la connexion du relais pour {mailbox} ({answer}) ; rien n'a été envoyé. "
    "Demandez à l'informatique de vérifier que l'envoi SMTP est autorisé pour cette boîte, puis de lancer : {command}",
)
NO_OAUTH_ACCOUNT = Reply(
    Code.TEMP_AUTH_FAILURE,
    "4.7.0",
    "The relay has no mailbox sign-in set up for you yet; nothing was sent. "
    "Ask IT to add [oauth.{user}] to the configuration and run: smtpguard account login {user}",
    "Le relais n'a pas encore de connexion à votre boîte mail ; rien n'a été envoyé. "
    "Demandez à l'informatique d'ajouter [oauth.{user}] à la configuration et de lancer : "
    "smtpguard account login {user}",
)
NOT_YOUR_SENDER = Reply(
    Code.MAILBOX_NAME_INVALID,
    "5.7.1",
    "You may not send as {address} through this relay (your addresses: {allowed}); nothing was sent. "
    "Check the From address of your mail account.",
    "Vous ne pouvez pas envoyer en tant que {address} par ce relais (vos adresses : {allowed}) ; rien n'a "
    "été envoyé. Vérifiez l'adresse d'expéditeur de votre compte.",
)
NO_SENDER_SET = Reply(
    Code.MAILBOX_NAME_INVALID,
    "5.7.1",
    "No sender address is set up for you on this relay, so it cannot send for you; nothing was sent. "
    "Ask IT to run: smtpguard user add {user} --address YOUR-ADDRESS",
    "Aucune adresse d'expéditeur n'est définie pour vous sur ce relais, il ne peut donc pas envoyer pour vous ; "
    "rien n'a été envoyé. Demandez à l'informatique de lancer : smtpguard user add {user} --address VOTRE-ADRESSE",
)

GATEWAY_REFUSED = Reply(
    Code.REFUSED,
    "5.7.1",
    "This gateway takes mail only from the organisation's own mail servers; {address} is not one of them"
    " (not in [gateway] networks, no recognised client certificate). Nothing was sent.",
    "Cette passerelle n'accepte le courrier que des serveurs de l'organisation ; {address} n'en fait pas partie"
    " (hors des réseaux [gateway] networks, sans certificat client reconnu). Rien n'a été envoyé.",
)
GATEWAY_NO_AUTH = Reply(
    Code.NOT_IMPLEMENTED,
    "5.5.1",
    "No AUTH on the gateway listener: mail servers are recognised by address or certificate",
    "Pas d'AUTH sur la passerelle : les serveurs sont reconnus par leur adresse ou leur certificat",
)
BAD_DSN = Reply(
    Code.SYNTAX_ERROR,
    "5.5.4",
    "Bad DSN parameter: {why}",
    "Paramètre DSN invalide : {why}",
)
NEXT_HOP_DOWN = Reply(
    Code.LOCAL_ERROR,
    "4.4.1",
    "The next hop cannot be reached right now; nothing was sent. Keep the message queued and try again later.",
    "Le relais suivant est injoignable pour l'instant ; rien n'a été envoyé. Gardez le message en file et réessayez.",
)
MAIL_FIRST = Reply(Code.BAD_SEQUENCE, "5.5.1", "Send MAIL first", "Envoyez d'abord MAIL")
RECIPIENT_OK = Reply(Code.OK, "2.1.5", "Recipient OK", "Destinataire accepté")
RESET_OK = Reply(Code.OK, "2.0.0", "OK", "OK")
BYE = Reply(Code.CLOSING, "2.0.0", "Bye", "Au revoir")


def size_text(limit: int) -> str:
    """A byte limit as a person reads it: `500 KB`, `10 MB`, `1.5 MB`."""
    if limit < 1_000_000:
        return f"{max(limit, 1) / 1000:.3g} KB"
    return f"{limit / 1_000_000:.3g} MB"


def _date(entry: EntryRow) -> str:
    return entry.added[:10]


# The reasons smtpguard itself writes (imports, `add`, syncs), as a French reader
# says them; any other reason (typed by someone) is shown as it was typed.
FR_REASONS = {
    "unsubscribed": "désinscrit",
    "bounced": "adresse en erreur",
    "bounce": "adresse en erreur",
    "complained": "plainte pour spam",
    "complaint": "plainte pour spam",
    "spam": "plainte pour spam",
    "added by hand": "ajouté à la main",
    "opted out of email (HubSpot)": "ne veut plus d'e-mails (HubSpot)",
}


def _why(s: Suppressed, lang: str, *, short: bool = False) -> str:
    """Why one recipient is refused; `short` in a listing whose first line already says "on the list"."""
    e = s.entry
    domain = e.original.lstrip("@")
    if lang == "fr":
        reason = FR_REASONS.get(e.reason.strip(), e.reason)
        if short:
            who = f"tout le domaine {domain}, " if e.kind == "domain" else ""
        else:
            who = f"tout le domaine {domain} est" if e.kind == "domain" else "cette adresse est"
            who += " sur la liste d'exclusion "
        return f"{who}depuis le {_date(e)} (motif : {reason}, source : {e.source})"
    if short:
        who = f"everyone at {domain}, " if e.kind == "domain" else ""
    else:
        who = f"everyone at {domain} is" if e.kind == "domain" else "this address is"
        who += " on the do-not-contact list "
    return f"{who}since {_date(e)} (reason: {e.reason}, source: {e.source})"


def recipient_refusal(s: Suppressed, lang: str) -> str:
    """550 for one suppressed RCPT (mode "reject")."""
    if lang == "fr":
        return (
            f"550 5.7.1 Pas d'envoi à {s.address} : {_why(s, lang)}. "
            "Retirez ce destinataire puis renvoyez le message ; en cas d'erreur, "
            "voyez avec le responsable de la liste."
        )
    return (
        f"550 5.7.1 Not sent to {s.address}: {_why(s, lang)}. "
        "Remove this recipient and send again; if this is a mistake, ask whoever manages the list."
    )


def message_refusal(suppressed: Sequence[Suppressed], lang: str) -> str:
    """One multi-line 550 listing every suppressed recipient (mode "reject-message")."""
    if lang == "fr":
        head = "Message non envoyé : ces destinataires sont sur la liste d'exclusion :"
        tail = ["Retirez-les puis renvoyez ; personne n'a reçu ce message"]
    else:
        head = "Message not sent: these recipients are on the do-not-contact list:"
        # No full stop at the end: Thunderbird adds its own after the server's text.
        tail = ["Remove them and send again; nobody received this message"]
    return _listing(head, suppressed, lang, tail)


def all_stripped(suppressed: Sequence[Suppressed], lang: str) -> str:
    """550 at DATA in strip mode when no recipient is left."""
    if lang == "fr":
        head = "Message non envoyé : tous les destinataires sont sur la liste d'exclusion"
    else:
        head = "Message not sent: every recipient is on the do-not-contact list"
    return _listing(head, suppressed, lang)


def _listing(head: str, suppressed: Sequence[Suppressed], lang: str, tail: Sequence[str] = ()) -> str:
    lines = [head, *(f"{s.address}: {_why(s, lang, short=True)}" for s in suppressed), *tail]
    return multiline(int(Code.REFUSED), "5.7.1", lines)


_HAS_ENHANCED = re.compile(r"[245]\.\d{1,3}\.\d{1,3}(?: |$)")
# RFC 3463 codes for replies that come without one (aiosmtpd's own, or an
# upstream that does not speak ENHANCEDSTATUSCODES), as Postfix maps them.
_DEFAULT_ENHANCED = {
    "421": "4.3.0", "500": "5.5.2", "501": "5.5.4", "502": "5.5.1", "503": "5.5.1", "504": "5.5.4",
    "530": "5.7.0", "535": "5.7.8", "538": "5.7.11", "552": "5.3.4", "555": "5.5.4",
}  # fmt: skip


def with_enhanced_code(reply: str) -> str:
    """Give every line of a 2xx/4xx/5xx reply an enhanced status code (RFC 2034)."""
    out = []
    for line in reply.split("\r\n"):
        code, sep, rest = line[:3], line[3:4], line[4:]
        if code.isdigit() and code[0] in "245" and sep in (" ", "-", "") and not _HAS_ENHANCED.match(rest):
            enhanced = _DEFAULT_ENHANCED.get(code, f"{code[0]}.0.0")
            line = f"{code}{sep or ' '}{enhanced} {rest}".rstrip()
        out.append(line)
    return "\r\n".join(out)


def multiline(code: int, enhanced: str, lines: Sequence[str]) -> str:
    """An RFC 5321 multi-line reply: `550-5.7.1 a` ... `550 5.7.1 z`."""
    out = [f"{code}-{enhanced} {line}" for line in lines[:-1]]
    out.append(f"{code} {enhanced} {lines[-1]}")
    return "\r\n".join(out)


def upstream_reply(code: int, message: str) -> str:
    """The upstream's reply, reframed for our client (multi-line kept, no bare CR/LF)."""
    if not 200 <= code <= 599:
        code = int(Code.LOCAL_ERROR)
    lines = [line.strip("\r") for line in message.split("\n")] or [""]
    out = [f"{code}-{line}" for line in lines[:-1]]
    out.append(f"{code} {lines[-1]}")
    return "\r\n".join(out)


def upstream_error(exc: aiosmtplib.SMTPResponseException) -> str:
    """The upstream's refusal, as `upstream_reply` frames it."""
    return upstream_reply(exc.code, exc.message)
