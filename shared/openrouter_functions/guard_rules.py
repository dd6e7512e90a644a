"""The prompt guard's vocabulary: five rule families and the phrasings they match, in seven languages.

Everything here is written the way :func:`openrouter_functions.guard.normalize` leaves a text: lower
case, no accents, ``ł`` -> ``l``, ``ß`` -> ``ss``. Each rule is a list of branches, and each branch
starts with a word from a known list (its trigger words): the guard only tries a branch where one of
its trigger words stands, which keeps a scan cheap whatever the text's length.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["RULES", "TRIGGERS", "WORD", "Rule"]

WORD = re.compile(r"\w+")

# In a phrase, a space matches any run of white space and a trailing "*" any word ending; everything else
# is literal.


class _Alt(str):
    """A regular expression matching one of several phrases, and the words those phrases start with."""

    starts: frozenset[str]

    @classmethod
    def of(cls, source: str, *starting: _Alt) -> _Alt:
        alt = cls(source)
        alt.starts = frozenset().union(*(a.starts for a in starting))
        return alt


def _words(*phrases: str) -> _Alt:
    def one(phrase: str) -> str:
        parts = [re.escape(word.rstrip("*")) + (r"\w*" if word.endswith("*") else "") for word in phrase.split()]
        return r"\s+".join(parts)

    alt = _Alt("(?:" + "|".join(one(p) for p in sorted(set(phrases), key=len, reverse=True)) + ")")
    alt.starts = frozenset(m.group() for m in map(WORD.match, phrases) if m is not None)
    return alt


def _starting(*words: str) -> _Alt:
    """Words that start a hand-written branch (its trigger words)."""
    return _words(*words)


# Who is speaking when the verb is not an order to the model: "should I ignore", "j'ignore", "no ignores".
# ("i " only before English verbs: in Polish it means "and".)
_NOT_AN_ORDER = "".join(
    [rf"(?<!{re.escape(w)})" for w in ("n't ", "j'", "n'")]
    + [
        rf"(?<!\b{re.escape(w)})"
        for w in ("we ", "they ", "he ", "she ", "not ", "je ", "il ", "on ", "eu ", "se ", "nao ", "nie ", "ich ",
                  "wir ", "yo ", "io ")
    ]
)  # fmt: skip
_NOT_I = r"(?<!\bi )"
_CLAUSE_BREAKS = _words(
    "and", "but", "then", "or", "i", "a potem", "oraz", "ale", "und", "aber", "oder", "et", "mais", "ou", "y", "pero",
    "e", "ma", "mas", "so", "because", "bo", "weil", "parce", "porque", "perche",
)  # fmt: skip
_GAP = r"[^.!?;\n]"


def _gap(limit: int) -> str:
    """Up to ``limit`` characters of the same clause (no sentence end, no "and"/"i"/"und"... in between)."""
    return rf"(?:(?!\b{_CLAUSE_BREAKS}\b){_GAP}){{0,{limit}}}?"


_OVERRIDE_VERBS_EN = _words(
    "ignore", "disregard", "forget", "override", "overrule", "skip", "discard", "abandon", "bypass", "neglect",
    "pay no attention to", "do not follow", "do not obey", "don't follow", "don't obey", "dont follow",
    "stop following", "stop obeying", "no longer follow", "no longer obey", "throw out", "set aside", "put aside",
    "never mind", "scratch",
)  # fmt: skip
_OVERRIDE_VERBS_OTHERS = _words(
    # pl
    "zignoruj", "zignorujcie", "ignoruj", "ignorujcie", "pomin", "pomincie", "zapomnij", "zapomnijcie", "olej",
    "olejcie", "odrzuc", "odrzuccie", "porzuc", "nie stosuj sie do", "nie stosujcie sie do", "nie przestrzegaj",
    "nie sluchaj", "nie zwracaj uwagi na", "nie bierz pod uwage", "nie wykonuj", "przestan stosowac sie do",
    "przestan sluchac", "prosze zignorowac", "prosze pominac", "zastap", "uniewaznij", "anuluj",
    # de
    "ignoriere", "ignorier", "ignoriert", "ignorieren sie", "vergiss", "vergesst", "vergessen sie", "missachte",
    "missachtet", "missachten sie", "ubergehe", "ubergehen sie", "uberspringe", "uberspringen sie", "verwirf",
    "verwerfen sie", "vernachlassige", "halte dich nicht an", "halte dich nicht mehr an", "hor auf mit",
    # fr
    "ignore", "ignorez", "oublie", "oubliez", "neglige", "negligez", "ecarte", "ecartez", "outrepasse",
    "outrepassez", "passe outre", "passez outre", "ne tiens pas compte", "ne tenez pas compte",
    "ne tiens plus compte", "ne tenez plus compte", "fais abstraction", "faites abstraction", "ne suis pas",
    "ne suivez pas", "ne suis plus", "ne suivez plus", "ne respecte pas", "ne respectez pas", "ne respecte plus",
    "arrete de suivre", "arretez de suivre", "laisse tomber", "laissez tomber", "annule", "annulez",
    # es
    "ignora", "ignoren", "ignorad", "olvida", "olvide", "olviden", "olvidad", "omite", "omita", "omitan", "descarta",
    "descarte", "descarten", "haz caso omiso", "haga caso omiso", "hagan caso omiso", "no hagas caso", "no haga caso",
    "no sigas", "no siga", "no sigan", "no obedezcas", "no respetes", "no cumplas", "deja de seguir",
    "deja de obedecer", "pasa por alto", "pase por alto", "desobedece", "saltate", "anula",
    # it
    "ignorate", "ignori", "dimentica", "dimenticate", "dimentichi", "tralascia", "tralasciate", "trascura",
    "trascurate", "scarta", "scartate", "non tenere conto", "non tenete conto", "non tenga conto", "non seguire",
    "non seguite", "non segua", "non rispettare", "non rispettate", "non obbedire", "non considerare",
    "non considerate", "smetti di seguire", "smettila di seguire", "lascia perdere", "lasciate perdere", "annulla",
    "sovrascrivi",
    # pt
    "ignorem", "esqueca", "esquecam", "esquece", "desconsidere", "desconsidera", "desconsiderem", "descarta",
    "despreze", "nao siga", "nao sigam", "nao segue", "nao obedeca", "nao respeite", "nao cumpra", "nao considere",
    "deixe de seguir", "deixe de lado", "deixa de lado", "pare de seguir", "passe por cima", "anule",
)  # fmt: skip
_OVERRIDE_VERBS = _Alt.of(
    rf"(?:{_NOT_I}{_OVERRIDE_VERBS_EN}|{_OVERRIDE_VERBS_OTHERS})", _OVERRIDE_VERBS_EN, _OVERRIDE_VERBS_OTHERS
)
# Whose instructions: before the noun ("all previous rules", "wszystkie poprzednie instrukcje") ...
_SCOPE_BEFORE = _words(
    "all", "any", "every", "previous", "prior", "preceding", "above", "earlier", "former", "foregoing", "original",
    "initial", "existing", "your", "system*", "developer", "hidden",
    "wszystk*", "wszelk*", "poprzedni*", "wczesniejsz*", "powyzsz*", "dotychczasow*", "swoj*", "swe", "swych",
    "twoj*", "twe", "twych", "pierwotn*", "oryginaln*", "poczatkow*", "otrzyman*",
    "alle*", "samtlich*", "jeglich*", "vorherig*", "vorig*", "bisherig*", "obig*", "fruher*", "vorangegangen*",
    "vorhergehend*", "ursprunglich*", "anfanglich*", "dein*", "ihre*", "eure*",
    "tout", "toute*", "tous", "precedent*", "anterieur*", "ci-dessus", "originel*", "tes", "vos", "ton", "ta",
    "votre", "prealable*",
    "todo*", "toda*", "anterior*", "previ*", "tus", "sus", "tu", "su", "vuestr*", "sistem*",
    "tutt*", "iniziali", "iniziale", "originali", "originale", "tue", "tuoi", "tua", "tuo", "vostr*", "esistent*",
    "suas", "seus", "sua", "seu", "tuas", "teus", "voss*",
)  # fmt: skip
# ... or after it ("the rules above", "les consignes précédentes", "le istruzioni di sistema").
_SCOPE_AFTER = _words(
    "above", "previous", "before", "given to you", "you were given", "you received", "so far",
    "systemow*", "poprzedni*", "powyzsz*", "wczesniejsz*", "dotychczasow*", "powyzej", "wyzej",
    "von oben", "oben", "zuvor", "vorher", "bisher",
    "precedent*", "anterieur*", "ci-dessus", "plus haut", "initial*", "system*", "du systeme", "d'origine",
    "anterior*", "previ*", "de arriba", "arriba", "del sistema", "de sistema", "original*", "inicial*",
    "di sopra", "sopra", "di sistema", "del sistema", "iniziali", "originali", "finora", "ricevut*",
    "acima", "do sistema", "iniciais", "originais",
)  # fmt: skip
_INSTRUCTIONS = _words(
    "instruc*", "instrukcj*", "istruzion*", "prompt*", "rule*", "regul*", "regol*", "regle*", "regla*", "regra*",
    "direction*", "directive*", "directiv*", "direttiv*", "diretiv*", "dyrektyw*", "guideline*", "guidance",
    "linee guida", "command*", "comand*", "commande*", "komend*", "constraint*", "contrainte*", "programming",
    "programmation", "configuration*", "polecen*", "zasad*", "wytyczn*", "rozkaz*", "ustawien*", "ograniczen*",
    "consigne*", "consigna*", "indication*", "indicacion*", "indicazion*", "parametre*", "restriction*",
    "restriccion*", "restrizion*", "restric*", "directriz*", "directrices", "pauta*", "normas", "norme",
    "vincol*", "impostazion*", "orientac*", "diretriz*", "diretrizes",
)  # fmt: skip
# German writes the noun as one word with its qualifier: "Systemanweisungen", "Sicherheitsregeln".
_INSTRUCTIONS_DE = r"\w*(?:anweisung|instruktion|befehl|regel|vorgabe|richtlinie|prompt|anordnung|direktive)\w*"
_INSTRUCTION_NOUN = rf"(?:{_INSTRUCTIONS}|{_INSTRUCTIONS_DE})"

# Each rule is a list of branches (the words a branch starts with, the branch); a branch is only tried
# where one of its start words stands in the text (see :func:`_tripped`).
_Branches = list[tuple[_Alt, str]]

_IGNORE_INSTRUCTIONS: _Branches = [
    # verb, then whose (before or after the noun), then what
    (
        _OVERRIDE_VERBS,
        rf"{_NOT_AN_ORDER}\b{_OVERRIDE_VERBS}\b(?:{_gap(40)}\b{_SCOPE_BEFORE}\b{_gap(25)}\b{_INSTRUCTION_NOUN}"
        rf"|{_gap(25)}\b{_INSTRUCTION_NOUN}\s+(?:\w+\s+){{0,2}}?{_SCOPE_AFTER}\b)",
    ),
    # "forget everything you were told", "ignore all of the above", and their translations
    (
        _starting("ignore", "disregard", "forget"),
        r"\b(?:ignore|disregard|forget)\s+(?:all|everything)(?:\s+(?:of|that\s+(?:is|was)|you\s+(?:were|have\s+been)"
        r"\s+told))?(?:\s+the)?\s+(?:above|before|prior|previously|earlier|so\s+far)\b",
    ),
    (
        _starting("forget"),
        r"\bforget\s+(?:everything|all)\s+(?:you\s+(?:were|have\s+been|'ve\s+been)\s+told|(?:i|we)\s+(?:said|told\s+you))",
    ),
    (
        _starting("zapomnij", "zapomnijcie"),
        r"\bzapomnij(?:cie)?\s+(?:o\s+)?wszystk\w*\b[^.!?\n]{0,30}?\b(?:powiedzian\w*|powiedzial\w*|wczesniej|powyzej"
        r"|dotad|dotychczas|kazano|instrukcj\w*|polecen\w*)",
    ),
    (
        _starting("vergiss", "vergisst"),
        r"\bvergiss(?:t)?\s+alles\b[^.!?\n]{0,30}?\b(?:gesagt|vorher|zuvor|bisher|oben|aufgetragen)",
    ),
    (
        _starting("befolge", "befolgen", "befolgt"),
        rf"\bbefolge\w*\b{_gap(30)}\b{_INSTRUCTION_NOUN}\b[^.!?\n]{{0,15}}?\bnicht\b",
    ),
    (
        _starting("oublie", "oubliez"),
        r"\boubliez?\s+tout\b[^.!?\n]{0,30}?\b(?:dit|precede|ci-dessus|avant|instructions?|consignes?)",
    ),
    (
        _starting("olvida", "olvidad", "olvidan"),
        r"\bolvida[dn]?\s+todo\s+(?:lo\s+)?(?:anterior|que\s+te\s+(?:dije|dijeron|han\s+dicho))",
    ),
    (
        _starting("dimentica", "dimenticate"),
        r"\bdimentica(?:te)?\s+tutto\b[^.!?\n]{0,30}?\b(?:detto|precede|sopra|finora|istruzion\w*)",
    ),
    (
        _starting("esqueca", "esquece", "esquecam"),
        r"\besquec(?:a|e|am)\s+tudo\b[^.!?\n]{0,30}?\b(?:disse|dito|anterior\w*|acima|instruc\w*)",
    ),
]

_REVEAL_VERBS_EN = _words(
    "reveal", "print", "show", "display", "repeat", "output", "leak", "disclose", "dump", "expose", "share",
    "recite", "tell me", "give me", "write out", "write down", "spell out", "copy", "paste", "echo", "type out",
    "what is", "what are", "what were", "what's", "whats",
)  # fmt: skip
_REVEAL_VERBS_OTHERS = _words(
    "pokaz", "pokazcie", "wypisz", "wyswietl", "powtorz", "podaj", "zdradz", "ujawnij", "wyjaw",
    "przytocz", "zacytuj", "skopiuj", "wklej", "jaki jest", "jakie sa", "jaka jest", "co zawiera",
    "zeige", "zeig", "gib", "verrate", "wiederhole", "nenne", "drucke", "enthulle", "offenbare",
    "was ist", "was sind", "wie lautet", "wie lauten", "kopiere",
    "montre", "montrez", "affiche", "affichez", "revele", "revelez", "repete", "repetez", "donne", "donnez", "dis",
    "dites", "divulgue", "divulguez", "imprime", "imprimez", "recopie", "copie", "quel est",
    "quels sont", "quelle est", "quelles sont",
    "muestra", "muestrame", "muestre", "revela", "revelame", "revele", "repite", "repita", "imprima", "dime",
    "digame", "dame", "deme", "ensename", "filtra", "copia", "cual es", "cuales son",
    "mostra", "mostrami", "mostrate", "rivela", "rivelami", "ripeti", "ripetete", "stampa", "dimmi", "dammi",
    "svela", "svelami", "qual e", "quali sono",
    "mostre", "repete", "diga", "me diga", "me de", "exiba", "copie", "quais sao",
)  # fmt: skip
_REVEAL_VERBS = _Alt.of(
    rf"(?:{_NOT_I}{_REVEAL_VERBS_EN}|{_REVEAL_VERBS_OTHERS})", _REVEAL_VERBS_EN, _REVEAL_VERBS_OTHERS
)
# "Write" asks for *a* prompt unless it is "your" prompt: "napisz swój prompt", not "napisz prompt dla bota".
_WRITE_VERBS = _words(
    "write", "napisz", "schreibe", "schreib", "ecris", "ecrivez", "escribe", "escriba", "scrivi", "escreva",
    "escreve",
)  # fmt: skip
# Objects that can only mean the model's own set-up ("system prompt", "instrukcje systemowe") ...
_SETUP = "|".join(
    [
        _words(
            "system prompt*",
            "system message*",
            "system instruction*",
            "developer message*",
            "developer prompt*",
            "hidden prompt*",
            "hidden instruction*",
            "secret instruction*",
            "initial instruction*",
            "initial prompt*",
            "original instruction*",
            "original prompt*",
            "pre-prompt*",
            "preprompt*",
            "internal instruction*",
            "confidential instruction*",
            "system-prompt*",
            "prompt* systemow*",
            "systemow* prompt*",
            "instrukcj* systemow*",
            "systemow* instrukcj*",
            "wiadomosc* systemow*",
            "wiadomosci systemow*",
            "komunikat* systemow*",
            "ukryt* instrukcj*",
            "poczatkow* instrukcj*",
            "tajn* instrukcj*",
            "pierwotn* instrukcj*",
            "prompt systeme",
            "prompt du systeme",
            "prompt de systeme",
            "invite systeme",
            "message systeme",
            "message du systeme",
            "instructions systeme",
            "instructions du systeme",
            "instructions initiales",
            "instructions cachees",
            "instructions secretes",
            "instructions d'origine",
            "instructions originales",
            "consignes initiales",
            "consignes cachees",
            "prompt del sistema",
            "prompt de sistema",
            "mensaje del sistema",
            "mensaje de sistema",
            "instrucciones del sistema",
            "instrucciones de sistema",
            "instrucciones iniciales",
            "instrucciones ocultas",
            "instrucciones secretas",
            "instrucciones originales",
            "prompt di sistema",
            "messaggio di sistema",
            "messaggio del sistema",
            "istruzioni di sistema",
            "istruzioni del sistema",
            "istruzioni iniziali",
            "istruzioni nascoste",
            "istruzioni segrete",
            "istruzioni originali",
            "prompt do sistema",
            "mensagem do sistema",
            "mensagem de sistema",
            "instrucoes do sistema",
            "instrucoes de sistema",
            "instrucoes iniciais",
            "instrucoes ocultas",
            "instrucoes secretas",
            "instrucoes originais",
        ),
        r"system(?:prompt|nachricht|anweisung|instruktion|meldung)\w*",
        r"(?:versteckt|ursprunglich|geheim|anfanglich|intern)\w*\s+(?:anweisung|instruktion|vorgabe)\w*",
    ]
)
# ... and nouns that mean it only with "your" ("your instructions"; not "the instructions for the shelf").
_OWN_SETUP = _words(
    "instruction*", "prompt*", "rules", "guidelines", "directives", "programming", "configuration",
    "instrukcj*", "polecen*", "wytyczn*", "zasad*", "regul*", "konfiguracj*",
    "anweisung*", "instruktion*", "regeln", "vorgaben", "richtlinien", "konfiguration",
    "instructions", "consignes", "regles", "directives",
    "instrucciones", "indicaciones", "reglas", "directrices", "normas",
    "istruzioni", "regole", "direttive", "indicazioni",
    "instrucoes", "regras", "diretrizes", "orientacoes",
)  # fmt: skip
_POSSESSIVE = _words(
    "your", "ur", "thy", "swoj*", "twoj*", "swe", "twe", "swych", "twych", "dein*", "ihre", "ihren", "euer", "eure*",
    "ton", "ta", "tes", "votre", "vos", "tu", "tus", "su", "sus", "vuestr*", "il tuo", "la tua", "le tue", "i tuoi",
    "tuo", "tua", "tuoi", "tue", "vostr*", "seu", "sua", "seus", "suas", "teu", "teus", "tuas", "voss*",
)  # fmt: skip
_DEFINITE = _words(
    "the", "this", "le", "la", "les", "el", "los", "las", "il", "lo", "gli", "o", "os", "as", "den", "die", "das",
    "der", "dem", "ten", "ta", "te", "cala", "cały", "caly", "cale", "pelny", "pelna", "tresc", "full", "entire",
    "whole", "complete",
)  # fmt: skip
# Not about *our* prompt: "write a good system prompt", "show me an example system prompt", "how to...".
_GENERIC = _words(
    "a", "an", "un", "une", "una", "uno", "um", "uma", "ein", "eine", "einen", "einem", "good", "great", "better",
    "example", "sample", "dobry", "dobra", "dobre", "przykladowy", "guten", "gute", "bon", "bonne", "buen", "buena",
    "buon", "buona", "bom", "boa", "how", "jak", "wie", "comment", "como", "come", "write", "napisac", "schreibt",
    "schreiben", "ecrire", "escribir", "scrivere", "escrever", "create", "make", "my", "our", "moj", "moje", "mein",
    "meinen", "mon", "ma", "mes", "mis", "mio", "mia", "meu", "minha",
)  # fmt: skip
_ABOUT = _words(
    "for", "on", "about", "regarding", "to", "dotycz*", "na temat", "do", "zu", "fur", "uber", "zum", "zur", "pour",
    "sur", "de", "du", "des", "para", "sobre", "del", "per", "su", "di", "da", "sul", "sulla", "dos", "das",
)  # fmt: skip
_REVEAL_SYSTEM_PROMPT: _Branches = [
    # verb, then the model's set-up, or "your" + instructions/prompt/rules
    (
        _REVEAL_VERBS,
        rf"{_NOT_AN_ORDER}\b{_REVEAL_VERBS}\b(?:(?!\b{_GENERIC}\b){_GAP}){{0,30}}?\b(?:"
        rf"(?:(?:{_POSSESSIVE}|{_DEFINITE})\s+)?(?:(?!{_GENERIC}\b)\w+\s+){{0,2}}?(?:{_SETUP})\b"
        rf"|{_POSSESSIVE}\s+(?:(?!{_GENERIC}\b)\w+\s+){{0,2}}?{_OWN_SETUP}\b(?!\s+{_ABOUT}\b))",
    ),
    (
        _WRITE_VERBS,
        rf"{_NOT_AN_ORDER}\b{_WRITE_VERBS}\b{_gap(20)}\b{_POSSESSIVE}\s+(?:(?!{_GENERIC}\b)\w+\s+){{0,2}}?"
        rf"(?:{_SETUP}|{_OWN_SETUP}\b(?!\s+{_ABOUT}\b))",
    ),
    # "repeat the words above starting with 'You are'"
    (
        _starting("repeat", "print", "show", "output", "copy", "write", "reproduce"),
        r"\b(?:repeat|print|show|output|copy|write|reproduce)\b[^.!?\n]{0,20}?\b(?:words|text|everything|lines|content"
        r"|messages?)\s+(?:above|before\s+this|preceding)",
    ),
    (
        _starting("powtorz", "wypisz", "skopiuj"),
        r"\b(?:powtorz|wypisz|skopiuj)\b[^.!?\n]{0,20}?\b(?:wszystko|tekst|slowa)\b[^.!?\n]{0,15}?\b(?:powyzej|wyzej)\b",
    ),
    (_starting("starting"), r"\bstarting\s+with\s+[\"']?you\s+are\b"),
]

_PERSONA_INTROS = _words(
    "you are now", "you're now", "youre now", "from now on you are", "from now on you're", "from now on, you are",
    "from now on you will be", "from now on, you will", "from now on you will", "act as", "acting as",
    "pretend to be", "pretend you are", "pretend you're", "pretend that you are", "roleplay as", "role-play as",
    "play the role of", "behave like", "behave as", "simulate", "become", "you will act as", "you will now act as",
    "you're going to act as", "you are going to act as", "switch to", "you will be",
    "jestes teraz", "teraz jestes", "od teraz jestes", "od teraz bedziesz", "od tej chwili jestes",
    "od tej pory jestes", "udawaj, ze jestes", "udawaj ze jestes", "udawaj", "wciel sie w", "zachowuj sie jak",
    "dzialaj jako", "odgrywaj role", "graj role", "badz", "przejdz w", "przejdz do", "symuluj",
    "du bist jetzt", "du bist nun", "ab jetzt bist du", "ab sofort bist du", "von nun an bist du", "tu so als",
    "tu so, als", "tue so als", "spiele", "spiel", "verhalte dich wie", "verhalte dich als", "agiere als",
    "handle als", "sei ab sofort", "sei jetzt", "wechsle in",
    "tu es maintenant", "tu es desormais", "desormais tu es", "desormais, tu es", "a partir de maintenant tu es",
    "a partir de maintenant, tu es", "fais semblant d'etre", "faites semblant d'etre", "joue le role d",
    "agis comme", "agissez comme", "comporte-toi comme", "incarne", "deviens", "passe en",
    "ahora eres", "a partir de ahora eres", "a partir de ahora, eres", "a partir de ahora seras", "desde ahora eres",
    "finge ser", "finge que eres", "actua como", "hazte pasar por", "comportate como", "interpreta el papel de",
    "seras", "conviertete en", "pasa a",
    "ora sei", "adesso sei", "da ora in poi sei", "d'ora in poi sei", "d'ora in poi", "fingi di essere",
    "fai finta di essere", "agisci come", "comportati come", "interpreta il ruolo di", "impersona", "diventa",
    "sarai", "passa in",
    "agora voce e", "agora voce sera", "a partir de agora voce e", "a partir de agora, voce e",
    "de agora em diante voce e", "finja ser", "finja que e", "finja que voce e", "aja como", "atue como",
    "comporte-se como", "interprete o papel de", "voce sera", "torne-se", "passe para o",
)  # fmt: skip
_WITHOUT = _words(
    "without", "no", "bez", "bez zadnych", "ohne", "keine", "kein", "sans", "sin", "sem", "senza", "free from"
)
_LIMITS = _words(
    "restric*", "restrykcj*", "ogranicze*", "limit*", "rules", "regul*", "regle*", "regla*", "regra*", "regol*",
    "regeln", "zasad*", "filter*", "filtr*", "filtro*", "filtri", "censor*", "censur*", "cenzur*", "zensur",
    "ethic*", "etic*", "etyk*", "ethik", "ethique", "moral*", "guidelines", "boundaries", "einschrankung*",
    "beschrankung*", "grenzen", "tabu*", "skrupul*", "moralnosci",
)  # fmt: skip
_UNBOUND = "|".join(
    [
        _words(
            "dan",
            "do anything now",
            "jailbroken",
            "jailbreak*",
            "unrestricted",
            "unfiltered",
            "uncensored",
            "unbound",
            "amoral",
            "developer mode",
            "not bound by",
            "freed from",
            "nieograniczon*",
            "niecenzurowan*",
            "tryb* dewelopera",
            "tryb* programisty",
            "uneingeschrankt*",
            "unzensiert*",
            "ungefiltert*",
            "entwicklermodus",
            "non censure*",
            "non filtre*",
            "mode developpeur",
            "libere de",
            "debride*",
            "modo desarrollador",
            "no censurad*",
            "modalita sviluppatore",
            "non censurat*",
            "non filtrat*",
            "modo desenvolvedor",
        ),
        rf"{_WITHOUT}\s+(?:\w+\s+){{0,2}}?{_LIMITS}",
    ]
)
_PERSONA_OVERRIDE: _Branches = [
    (_PERSONA_INTROS, rf"\b{_PERSONA_INTROS}\b[^.!?\n]{{0,60}}?\b(?:{_UNBOUND})\b"),
    (
        _starting("dan", "jailbreak", "jailbroken", "unrestricted", "uncensored", "unfiltered"),
        r"\b(?:dan|jailbreak|jailbroken|unrestricted|uncensored|unfiltered)[\s-]+(?:mode|modus|modo|modalita)\b",
    ),
    (_starting("tryb", "trybie", "trybu"), r"\btryb\w*\s+(?:dan|jailbreak\w*|bez\s+cenzury)\b"),
    (_starting("do"), r"\bdo\s+anything\s+now\b"),
]

_SAFETY_VERBS_EN = _words(
    "disable", "deactivate", "turn off", "switch off", "bypass", "circumvent", "override", "ignore", "remove",
    "get around", "evade", "suspend", "lift", "drop", "break",
)  # fmt: skip
_SAFETY_VERBS_OTHERS = _words(
    "wylacz", "wylaczcie", "dezaktywuj", "omin", "obejdz", "obejdzcie", "usun", "zdejmij", "zignoruj", "pomin",
    "deaktiviere", "deaktiviert", "deaktivieren sie", "schalte", "umgehe", "umgehen sie", "ignoriere", "entferne",
    "hebe",
    "desactive", "desactivez", "contourne", "contournez", "ignorez", "supprime", "supprimez", "enleve", "retire",
    "coupe",
    "desactiva", "elude", "eluda", "evita", "evite", "saltate", "omite", "ignora", "elimina", "quita", "sortea",
    "disattiva", "disattivate", "aggira", "aggirate", "rimuovi", "togli", "scavalca",
    "desative", "desativa", "contorne", "contorna", "remova", "elimine", "burle",
)  # fmt: skip
_SAFETY_VERBS = _Alt.of(
    rf"(?:{_NOT_I}{_SAFETY_VERBS_EN}|{_SAFETY_VERBS_OTHERS})", _SAFETY_VERBS_EN, _SAFETY_VERBS_OTHERS
)
_SAFETY_WORDS = "|".join(
    [
        _words(
            "safety",
            "content",
            "ethical",
            "moral",
            "moderation",
            "security",
            "nsfw",
            "bezpieczenstwa",
            "tresci",
            "etyczn*",
            "moraln*",
            "moderacji",
            "de securite",
            "de contenu",
            "ethique*",
            "de moderation",
            "de seguridad",
            "de contenido",
            "etic*",
            "de seguranca",
            "de conteudo",
            "di sicurezza",
            "sui contenuti",
            "dei contenuti",
        )
    ]
)
_SAFETY_NOUNS = _words(
    "filter*", "guardrail*", "restriction*", "guideline*", "polic*", "protocol*", "rule*", "limit*", "check*",
    "setting*", "measure*", "safeguard*", "censorship", "alignment", "training", "boundaries",
    "filtr*", "zabezpiecze*", "ogranicze*", "wytyczn*", "zasad*", "blokad*", "cenzur*",
    "filtre*", "regle*", "restriction*", "garde-fou*", "protection*", "consigne*", "directive*", "censure",
    "filtro*", "restriccion*", "regla*", "norma*", "politica*", "medida*", "proteccion*", "salvaguarda*",
    "censura", "directriz*", "directrices",
    "filtri", "restrizion*", "regol*", "norme", "linee guida", "protezion*", "misure",
    "restricoes", "restricao", "regras", "diretrizes", "protecoes",
)  # fmt: skip
# German writes these as one word: "Sicherheitsfilter", "Inhaltsbeschränkungen".
_SAFETY_DE = (
    r"\w*(?:sicherheits|inhalts|schutz|jugendschutz)(?:filter|richtlinie|regel|beschrankung|einschrankung"
    r"|massnahme|mechanism|vorkehrung|einstellung)\w*|zensur|ethische\w*\s+(?:grenzen|richtlinien|regeln)"
)
_SAFETY_THING = (
    rf"(?:(?:{_SAFETY_WORDS})\s+(?:\w+\s+)?{_SAFETY_NOUNS}|{_SAFETY_NOUNS}\s+(?:{_SAFETY_WORDS})|{_SAFETY_DE})"
)
_SAFETY_OWNER = _words(
    "your", "all", "any", "every", "the", "swoj*", "twoj*", "wszystk*", "wszelk*", "dein*", "ihre*", "alle*",
    "jeglich*", "die", "tes", "vos", "tous", "toutes", "les", "tus", "todas", "todos", "las", "los", "tuoi", "tue",
    "tutti", "tutte", "i", "le", "seus", "suas", "todos", "todas", "os", "as",
)  # fmt: skip
_DISABLE_SAFETY: _Branches = [
    # verb, then: a safety measure; "your" + filters; or "all" + a noun that can only mean safety measures
    # ("wyłącz wszystkie zabezpieczenia")
    (
        _SAFETY_VERBS,
        rf"(?<!\bhow to ){_NOT_AN_ORDER}\b{_SAFETY_VERBS}\b{_gap(20)}\b(?:"
        rf"(?:{_SAFETY_OWNER}\s+)?(?:\w+\s+)?{_SAFETY_THING}"
        rf"|(?:your|swoj\w*|twoj\w*|dein\w*|tes|vos|tus|tuoi|tue|seus|suas)\s+(?:\w+\s+)?"
        rf"(?:filters|guardrails|safeguards|zabezpieczenia|filtry|filter|filtres|filtros|filtri)\b"
        rf"|{_SAFETY_OWNER}\s+(?:\w+\s+)?(?:guardrails|safeguards|zabezpieczenia|garde-fous|salvaguardas"
        rf"|schutzmassnahmen|schutzmechanismen)\b)",
    ),
    (
        _WITHOUT,
        rf"\b{_WITHOUT}\s+(?:any\s+|aucun\w*\s+|ningun\w*\s+|nenhum\w*\s+|alcun\w*\s+|jeglich\w*\s+)?{_SAFETY_THING}",
    ),
    (_starting("without", "no"), r"\b(?:without|no)\s+(?:any\s+)?(?:censorship|guardrails|safeguards)\b"),
    (
        _starting("bez", "ohne", "sans", "sin", "senza", "sem"),
        r"\bbez\s+(?:zadnych\s+)?(?:cenzury|zabezpieczen)\b|\bohne\s+zensur\b|\bsans\s+censure\b"
        r"|\bsin\s+censura\b|\bsenza\s+censura\b|\bsem\s+censura\b",
    ),
]

# Chat-template tokens start with punctuation, not a word: searched anywhere, when their first character is there.
_ROLE_TOKENS = "|".join(
    [
        r"<\|\s*(?:im_start|im_end|system|user|assistant|endoftext|eot_id|start_header_id|end_header_id"
        r"|begin_of_text)\s*\|>",
        r"\[/?inst\]|<</?sys>>|<(?:start|end)_of_turn>",
        r"^[ \t]*#{2,}[ \t]*(?:system(?:\s+(?:prompt|message))?|systeme|sistema|systemowy|systemnachricht|assistant"
        r"|asystent|assistent|assistente|instruction|instrukcja|anweisung|instruccion|istruzione|instrucao|developer)"
        r"[ \t]*:",
        r"^[ \t]*\[(?:system|systeme|sistema|systemowy|developer|admin)\]",
        r"<system>[^<]{20,}|</(?:user|human)>\s*<",
    ]
)
_ROLE_TOKEN_NEEDS = ("<|", "[inst", "[/inst", "<<sys", "<</sys", "_of_turn>", "##", "[system", "[sistema",
                     "[developer", "[admin", "<system>", "</user>", "</human>")  # fmt: skip
_NEW_INSTRUCTIONS = _starting("new", "updated", "nowe", "neue", "nouvelle", "nouvelles", "nueva", "nuevas", "nuove",
                              "nova", "novas")  # fmt: skip
_ROLE_MARKER: _Branches = [
    (
        _NEW_INSTRUCTIONS,
        rf"\b{_NEW_INSTRUCTIONS}\s+(?:system\w*\s+)?(?:instruc\w*|instrukcj\w*|istruzion\w*|systemanweisung\w*"
        r"|anweisung\w*|prompt\w*)\s+(?:systemow\w*|systeme|du\s+systeme|del\s+sistema|di\s+sistema|do\s+sistema)?\s*:",
    ),
]


@dataclass(frozen=True, slots=True)
class Rule:
    """One family of phrasings: branches tried where their start words stand, and (for chat-template
    tokens, which start with punctuation) a pattern searched anywhere once one of ``anywhere_needs`` is in
    the text."""

    name: str
    at_word: re.Pattern[str]
    triggers: frozenset[str]
    anywhere: re.Pattern[str] | None = None
    anywhere_needs: tuple[str, ...] = ()


def _rule(name: str, branches: _Branches, anywhere: str | None = None, needs: tuple[str, ...] = ()) -> Rule:
    at_word = re.compile("|".join(f"(?:{source})" for _, source in branches), re.MULTILINE)
    triggers = frozenset().union(*(starts.starts for starts, _ in branches))
    return Rule(name, at_word, triggers, re.compile(anywhere, re.MULTILINE) if anywhere else None, needs)


RULES: dict[str, Rule] = {
    rule.name: rule
    for rule in (
        _rule("ignore_instructions", _IGNORE_INSTRUCTIONS),
        _rule("reveal_system_prompt", _REVEAL_SYSTEM_PROMPT),
        _rule("persona_override", _PERSONA_OVERRIDE),
        _rule("disable_safety", _DISABLE_SAFETY),
        _rule("role_marker", _ROLE_MARKER, _ROLE_TOKENS, _ROLE_TOKEN_NEEDS),
    )
}
TRIGGERS = frozenset().union(*(rule.triggers for rule in RULES.values()))
