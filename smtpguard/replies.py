"""Every reply text a salesperson may read.

Thunderbird and Outlook show the server's words verbatim in their error
dialog, so each refusal says in plain words which address, why, since when,
from which source, and what to do.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from smtpguard.suppression.store import EntryRow
from smtpguard.suppression.verdict import Suppressed


def _date(entry: EntryRow) -> str:
    return entry.added[:10]


def _why(s: Suppressed, lang: str) -> str:
    e = s.entry
    if lang == "fr":
        who = (
            f"tout le domaine {e.original.lstrip('@')} est sur la liste d'exclusion"
            if e.kind == "domain"
            else "cette adresse est sur la liste d'exclusion"
        )
        return f"{who} depuis le {_date(e)} (motif : {e.reason}, source : {e.source})"
    who = (
        f"everyone at {e.original.lstrip('@')} is on the do-not-contact list"
        if e.kind == "domain"
        else "this address is on the do-not-contact list"
    )
    return f"{who} since {_date(e)} (reason: {e.reason}, source: {e.source})"


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
        tail = ["Retirez-les puis renvoyez ; personne n'a reçu ce message."]
    else:
        head = "Message not sent: these recipients are on the do-not-contact list:"
        tail = ["Remove them and send again; nobody received this message."]
    return _listing(head, suppressed, lang, tail)


def all_stripped(suppressed: Sequence[Suppressed], lang: str) -> str:
    """550 at DATA in strip mode when no recipient is left."""
    if lang == "fr":
        head = "Message non envoyé : tous les destinataires sont sur la liste d'exclusion"
    else:
        head = "Message not sent: every recipient is on the do-not-contact list"
    return _listing(head, suppressed, lang)


def _listing(head: str, suppressed: Sequence[Suppressed], lang: str, tail: Sequence[str] = ()) -> str:
    lines = [head, *(f"{s.address}: {_why(s, lang)}" for s in suppressed), *tail]
    return multiline(550, "5.7.1", lines)


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


# Fixed replies, worded for a person reading an error dialog.
TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "store_down": "451 4.3.0 The do-not-contact list cannot be read right now, so nothing was sent. "
        "Try again in a few minutes; tell IT if it keeps happening.",
        "upstream_down": "451 4.4.1 The outgoing mail server cannot be reached right now; nothing was sent. "
        "Try again in a few minutes.",
        "upstream_lost": "451 4.4.2 The connection to the outgoing mail server was lost before it "
        "confirmed the message; send it again.",
        "routing": "553 5.7.1 Not sent to {address}: {why}. Use a plain address like name@example.com.",
        "bad_address": "501 5.1.3 {address} is not a valid email address ({why}).",
        "auth_needed": "530 5.7.0 Log in first: set your outgoing (SMTP) server to require "
        "authentication with your usual email username and password.",
        "too_many": "452 4.5.3 Too many recipients in one message; send the rest in another message.",
        "auth_unavailable": "454 4.7.0 Cannot check your password right now (the outgoing mail server "
        "did not answer); try again in a few minutes.",
        "auth_failed": "535 5.7.8 Username or password not accepted.",
        "internal": "451 4.3.0 Something went wrong in the relay; nothing was sent. Try again.",
        "bad_sender": "501 5.1.7 {address} is not a valid sender address; check the From address of your mail account.",
        "too_big": "552 5.3.4 The message is too big (the limit is {limit} MB); nothing was sent. "
        "Make the attachments smaller or share them as a link.",
        "idle": "421 4.4.2 Closing the connection: nothing was received for too long.",
        "relogin": "421 4.4.2 The connection to the outgoing mail server was lost; nothing was sent. "
        "Send the message again (your mail program will log in again).",
    },
    "fr": {
        "store_down": "451 4.3.0 La liste d'exclusion est illisible pour l'instant, rien n'a été envoyé. "
        "Réessayez dans quelques minutes ; prévenez l'informatique si cela dure.",
        "upstream_down": "451 4.4.1 Le serveur d'envoi est injoignable pour l'instant ; rien n'a été envoyé. "
        "Réessayez dans quelques minutes.",
        "upstream_lost": "451 4.4.2 La connexion au serveur d'envoi a été perdue avant qu'il confirme "
        "le message ; renvoyez-le.",
        "routing": "553 5.7.1 Pas d'envoi à {address} : {why}. Utilisez une adresse simple comme nom@exemple.fr.",
        "bad_address": "501 5.1.3 {address} n'est pas une adresse e-mail valide ({why}).",
        "auth_needed": "530 5.7.0 Identifiez-vous d'abord : le serveur sortant (SMTP) doit utiliser "
        "l'authentification avec votre identifiant et mot de passe habituels.",
        "too_many": "452 4.5.3 Trop de destinataires dans un même message ; envoyez les autres dans un second message.",
        "auth_unavailable": "454 4.7.0 Impossible de vérifier votre mot de passe pour l'instant (le serveur "
        "d'envoi ne répond pas) ; réessayez dans quelques minutes.",
        "auth_failed": "535 5.7.8 Identifiant ou mot de passe refusé.",
        "internal": "451 4.3.0 Erreur interne du relais ; rien n'a été envoyé. Réessayez.",
        "bad_sender": "501 5.1.7 {address} n'est pas une adresse d'expéditeur valide ; vérifiez "
        "l'adresse d'envoi de votre compte.",
        "too_big": "552 5.3.4 Message trop volumineux (limite : {limit} Mo) ; rien n'a été envoyé. "
        "Réduisez les pièces jointes ou partagez-les par un lien.",
        "idle": "421 4.4.2 Connexion fermée : rien n'a été reçu depuis trop longtemps.",
        "relogin": "421 4.4.2 La connexion au serveur d'envoi a été perdue ; rien n'a été envoyé. "
        "Renvoyez le message (votre logiciel de messagerie se reconnectera).",
    },
}


def text(lang: str, name: str, **values: str) -> str:
    return TEXTS.get(lang, TEXTS["en"])[name].format(**values)
