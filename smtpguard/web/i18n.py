"""The page's words in English and French, and which language a request gets."""

from __future__ import annotations

from collections.abc import Callable

LANGUAGES = ("en", "fr")
LANG_COOKIE = "smtpguard_lang"

# key -> (English, French)
TEXTS: dict[str, tuple[str, str]] = {
    "title": ("Suppression list", "Liste d'exclusion"),
    "nav.list": ("List", "Liste"),
    "nav.import": ("Import", "Importer"),
    "nav.sources": ("Sources", "Sources"),
    "nav.activity": ("Activity", "Activité"),
    "nav.signout": ("Sign out", "Se déconnecter"),
    "signin": ("Sign in", "Se connecter"),
    "signin.name": ("Name", "Identifiant"),
    "signin.password": ("Password", "Mot de passe"),
    "signin.bad": ("Wrong name or password.", "Identifiant ou mot de passe incorrect."),
    "signin.throttled": (
        "Too many attempts from your address; try again in a few minutes.",
        "Trop de tentatives depuis votre adresse ; réessayez dans quelques minutes.",
    ),
    "csrf.bad": (
        "This form has expired; reload the page and try again.",
        "Ce formulaire a expiré ; rechargez la page et réessayez.",
    ),
    "forbidden": ("Your account may only look, not change the list.", "Votre compte peut consulter, pas modifier."),
    "search": ("Search an address", "Chercher une adresse"),
    "search.button": ("Check", "Vérifier"),
    "blocked": ("Blocked:", "Bloquée :"),
    "not_blocked": ("Not blocked: mail to this address goes out.", "Non bloquée : les messages partent."),
    "entry": ("Entry", "Entrée"),
    "source": ("Source", "Source"),
    "reason": ("Reason", "Motif"),
    "date": ("Date", "Date"),
    "expires": ("Expires", "Expire"),
    "add": ("Add to the list", "Ajouter à la liste"),
    "add.button": ("Add", "Ajouter"),
    "added": ("Added", "Ajoutée"),
    "already": ("Already on the list", "Déjà dans la liste"),
    "remove": ("Remove", "Retirer"),
    "remove.confirm": (
        "Remove {entry} from the list? Mail to it will go out again.",
        "Retirer {entry} de la liste ? Les messages lui seront de nouveau envoyés.",
    ),
    "remove.yes": ("Yes, remove", "Oui, retirer"),
    "cancel": ("Cancel", "Annuler"),
    "removed": ("Removed", "Retirée"),
    "not_listed": ("Was not on the list", "N'était pas dans la liste"),
    "entries": ("Entries", "Entrées"),
    "address_or_domain": ("Address or @domain", "Adresse ou @domaine"),
    "import.drop": ("Drop an export file here, or choose one", "Déposez un fichier d'export ici, ou choisissez-en un"),
    "import.send": ("Look at the file", "Examiner le fichier"),
    "import.detected": ("What was found", "Ce qui a été détecté"),
    "import.encoding": ("Encoding", "Encodage"),
    "import.delimiter": ("Delimiter", "Séparateur"),
    "import.column": ("Address column", "Colonne des adresses"),
    "import.preview": ("First rows", "Premières lignes"),
    "import.confirm": ("Import into the list", "Importer dans la liste"),
    "import.running": ("Importing…", "Import en cours…"),
    "import.done": ("Import finished", "Import terminé"),
    "import.failed": ("The file cannot be imported", "Le fichier ne peut pas être importé"),
    "import.rows": ("Rows", "Lignes"),
    "import.added": ("Added", "Ajoutées"),
    "import.duplicates": ("Already listed", "Déjà présentes"),
    "import.invalid": ("Refused", "Refusées"),
    "import.rejects": ("Refused rows", "Lignes refusées"),
    "import.line": ("Line", "Ligne"),
    "import.text": ("Text", "Texte"),
    "import.download": ("Download as CSV", "Télécharger en CSV"),
    "import.gone": ("This import is no longer known; start again.", "Cet import n'existe plus ; recommencez."),
    "sources.count": ("Entries", "Entrées"),
    "sources.last_success": ("Last success", "Dernier succès"),
    "sources.last_failure": ("Last failure", "Dernier échec"),
    "sources.not_configured": ("not configured", "non configurée"),
    "sources.none": ("The list is empty.", "La liste est vide."),
    "activity.person": ("Person (user or sender)", "Personne (utilisateur ou expéditeur)"),
    "activity.from": ("From", "Du"),
    "activity.to": ("To", "Au"),
    "activity.filter": ("Filter", "Filtrer"),
    "activity.csv": ("Export CSV", "Exporter en CSV"),
    "activity.none": ("No attempt in this period.", "Aucune tentative sur cette période."),
    "activity.time": ("Time", "Heure"),
    "activity.action": ("Action", "Action"),
    "activity.sender": ("Sender", "Expéditeur"),
    "activity.recipient": ("Recipient", "Destinataire"),
    "activity.user": ("User", "Utilisateur"),
    "activity.per_day": ("Attempts per day", "Tentatives par jour"),
    "rejected": ("refused", "refusé"),
    "stripped": ("stripped", "retiré"),
    "monitored": ("monitored", "surveillé"),
    "store.down": ("The list cannot be read right now", "La liste est illisible pour le moment"),
    "store.down.help": (
        "Nothing was changed. Try again in a minute; if it lasts, tell whoever runs the relay.",
        "Rien n'a été modifié. Réessayez dans une minute ; si cela dure, prévenez la personne qui gère le relais.",
    ),
    "error": ("Something is wrong", "Un problème est survenu"),
    "signed_in_as": ("Signed in as", "Connecté en tant que"),
}


def translator(lang: str) -> Callable[..., str]:
    index = 1 if lang == "fr" else 0

    def t(key: str, **values: object) -> str:
        text = TEXTS[key][index] if key in TEXTS else key
        return text.format(**values) if values else text

    return t


def pick_language(cookie: str | None, accept_language: str | None) -> str:
    """The switch's cookie first, then the browser's preferred language we speak, else English."""
    if cookie in LANGUAGES:
        return cookie
    best, best_q = "en", -1.0
    for i, part in enumerate((accept_language or "").split(",")):
        tag, _, params = part.strip().partition(";")
        lang = tag.strip().lower().split("-")[0]
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                q = 0.0
        q -= i * 1e-6  # ties: the first listed wins
        if lang in LANGUAGES and q > best_q and q > 0:
            best, best_q = lang, q
    return best
