"""Lucene-like English analyzer, so our BM25 sees the same terms as Pyserini/Anserini.

Anserini's ``DefaultEnglishAnalyzer`` (what Pyserini indexes BEIR and MS MARCO with) is
``StandardTokenizer -> EnglishPossessiveFilter -> LowerCaseFilter -> StopFilter(33 words)
-> PorterStemFilter``. Each stage is reproduced here:

* :func:`tokenize` transcribes the word rules of Lucene's ``StandardTokenizerImpl.jflex``
  (UAX#29 word boundaries) into one ``regex`` pattern built from Unicode ``Word_Break``
  properties: letters joined across ``. ' :`` ("u.s.a", "don't"), digits joined across
  ``. , ;`` ("1.5", "1,000"), letters and digits glued together ("h1n1", "1.5mg"),
  underscores joining anything, hyphens and other punctuation splitting; CJK ideographs and
  hiragana are one token per character; South-East-Asian runs one token; emoji are tokens.
* possessive ``'s`` / ``’s`` / ``＇s`` removal, per-code-point lower-casing (Java's
  ``Character.toLowerCase``, so no context-dependent final sigma), Lucene's 33-word
  ``ENGLISH_STOP_WORDS_SET``;
* :func:`porter_stem` is a line-by-line port of Lucene's ``PorterStemmer.java`` (Martin
  Porter's reference implementation), *not* Snowball's "porter": Lucene keeps the
  reference code's departures from the 1980 paper (``-bli -> -ble`` instead of
  ``-abli -> -able``, an extra ``-logi -> -log`` rule) and leaves words of one or two
  characters unstemmed ("us", "ms"), where PyStemmer's ``porter`` gives "u", "m".

Known, deliberate approximations (none matters for English IR collections): the JFlex
scanner takes the *longest* of its rules at each position, the regex takes the first
alternative that matches (word rule before emoji rule); Unicode property tables come
from the installed ``regex`` module rather than Lucene's pinned Unicode version; tokens
longer than 255 characters are cut into 255-character pieces as Lucene's scanner buffer
does.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import ClassVar

import regex

__all__ = [
    "ENGLISH_STOP_WORDS",
    "LuceneEnglishAnalyzer",
    "analyze",
    "porter_stem",
    "tokenize",
]

_STOP_WORDS_TEXT = """
a an and are as at be but by for if in into is it no not of on or such that the their then there
these they this to was will with
"""
ENGLISH_STOP_WORDS: frozenset[str] = frozenset(_STOP_WORDS_TEXT.split())
"""Lucene's ``EnglishAnalyzer.ENGLISH_STOP_WORDS_SET`` (33 words), Anserini's default."""

MAX_TOKEN_LENGTH = 255
"""``StandardTokenizer``'s default ``maxTokenLength``: longer tokens are split."""

# ----------------------------------------------------------------------------------------
# StandardTokenizer: macros of StandardTokenizerImpl.jflex (Lucene 8/9), same names.
_X = r"[\p{WB=Format}\p{WB=Extend}\p{WB=ZWJ}]*"  # WB4: X (Extend | Format | ZWJ)* -> X
_X_SANS_PRES = r"(?:(?![\uFE0E\uFE0F])[\p{WB=Format}\p{WB=Extend}\p{WB=ZWJ}])*"
_AHLETTER = rf"[\p{{WB=ALetter}}\p{{WB=Hebrew_Letter}}]{_X}"
_NUMERIC = rf"[\p{{WB=Numeric}}\uFF10-\uFF19]{_X}"  # + full-width digits (HalfAndFullForms & Nd)
_KATAKANA = rf"\p{{WB=Katakana}}{_X}"
_MIDLETTER = rf"[\p{{WB=MidLetter}}\p{{WB=MidNumLet}}\p{{WB=Single_Quote}}]{_X}"
_MIDNUMERIC = rf"[\p{{WB=MidNum}}\p{{WB=MidNumLet}}\p{{WB=Single_Quote}}]{_X}"
_EXTENDNUMLET = rf"\p{{WB=ExtendNumLet}}{_X}"
_HEBREW = rf"\p{{WB=Hebrew_Letter}}{_X}"
_SQUOTE = rf"\p{{WB=Single_Quote}}{_X}"
_DQUOTE = rf"\p{{WB=Double_Quote}}{_X}"

# WB5-WB13b: one alternative of the WORD_TYPE rule.
_CORE = (
    rf"(?:{_KATAKANA}(?:(?:{_EXTENDNUMLET})*{_KATAKANA})*"
    rf"|(?:{_HEBREW}(?:{_SQUOTE}|{_DQUOTE}{_HEBREW})"
    rf"|{_NUMERIC}(?:(?:(?:{_EXTENDNUMLET})*|{_MIDNUMERIC}){_NUMERIC})*"
    rf"|{_AHLETTER}(?:(?:(?:{_EXTENDNUMLET})*|{_MIDLETTER}){_AHLETTER})*"
    r")+)"
)
_WORD = rf"(?:{_EXTENDNUMLET})*{_CORE}(?:(?:{_EXTENDNUMLET})+{_CORE})*(?:{_EXTENDNUMLET})*"

# EMOJI_TYPE (Lucene 8+): emoji characters, presentation/modifier/ZWJ/tag sequences,
# key caps and flag pairs. "Accidental" emoji (digits, # *, (c) (r) tm) are not emoji chars.
_EMOJI_CHAR = (
    r"(?:\p{Extended_Pictographic}"
    r"|(?![0-9#*\u00A9\u00AE\u2122\u3030\u303D\p{WB=Regional_Indicator}\p{Emoji_Modifier}])\p{Emoji})"
)
_EMOJI_SEQ = (
    rf"(?:\p{{WB=ZWJ}}*{_EMOJI_CHAR}{_X_SANS_PRES}\uFE0F?"
    rf"|(?:\p{{WB=ZWJ}}*\p{{Emoji_Modifier_Base}}{_X_SANS_PRES})?\p{{Emoji_Modifier}}{_X_SANS_PRES})"
)
_EMOJI = (
    rf"(?:{_EMOJI_SEQ}(?:[\U000E0020-\U000E007E]+\U000E007F|(?:\p{{WB=ZWJ}}{_EMOJI_SEQ})*)"
    rf"|[0-9#*]{_X_SANS_PRES}\uFE0F?\u20E3{_X_SANS_PRES}"
    rf"|\p{{WB=Regional_Indicator}}{_X}\p{{WB=Regional_Indicator}}{_X})"
)
_SOUTHEAST_ASIAN = rf"(?:\p{{Line_Break=Complex_Context}}{_X})+"
_IDEOGRAPHIC = rf"\p{{Script=Han}}{_X}"
_HIRAGANA = rf"\p{{Script=Hiragana}}{_X}"

_TOKEN_RE = regex.compile(
    rf"{_WORD}|{_EMOJI}|{_SOUTHEAST_ASIAN}|{_IDEOGRAPHIC}|{_HIRAGANA}",
    regex.VERSION1,
)
"""Everything else (whitespace, punctuation, symbols) is skipped, as the JFlex ``[^]`` rule."""

# The same grammar restricted to ASCII, where the Word_Break classes are: ALetter [A-Za-z],
# Numeric [0-9], MidLetter ':', MidNumLet '.', Single_Quote "'", MidNum ',' ';',
# ExtendNumLet '_' (no Extend/Format, Hebrew or emoji characters). Three times faster with
# the stdlib engine; tests check it agrees with the full pattern on ASCII input.
_ASCII_CORE = r"(?:[0-9](?:_*[0-9]|[,;.'][0-9])*|[A-Za-z](?:_*[A-Za-z]|[:.'][A-Za-z])*)+"
_ASCII_TOKEN_RE = re.compile(rf"_*{_ASCII_CORE}(?:_+{_ASCII_CORE})*_*")


def tokenize(text: str) -> list[str]:
    """StandardTokenizer-like tokens of ``text`` (original case; no filtering)."""
    tokens = (_ASCII_TOKEN_RE if text.isascii() else _TOKEN_RE).findall(text)
    if any(len(tok) > MAX_TOKEN_LENGTH for tok in tokens):
        tokens = [tok[i : i + MAX_TOKEN_LENGTH] for tok in tokens for i in range(0, len(tok), MAX_TOKEN_LENGTH)]
    return tokens


# ----------------------------------------------------------------------------------------
# Filters.
_POSSESSIVE_QUOTES = ("'", "\u2019", "\uff07")


def strip_possessive(token: str) -> str:
    """Lucene's ``EnglishPossessiveFilter``: drop a trailing ``'s`` / ``'S`` (three apostrophes)."""
    if len(token) >= 2 and token[-1] in "sS" and token[-2] in _POSSESSIVE_QUOTES:
        return token[:-2]
    return token


def _java_lower(token: str) -> str:
    """Per-code-point lower-casing as Java's ``Character.toLowerCase`` (Lucene's LowerCaseFilter).

    Python's ``str.lower`` applies context rules (final sigma) and full mappings (U+0130 ->
    "i" + combining dot); Java maps each code point to exactly one.
    """
    if token.isascii():
        return token.lower()
    out = []
    for ch in token:
        low = ch.lower()
        out.append(low if len(low) == 1 else ("i" if ch == "\u0130" else ch))
    return "".join(out)


# ----------------------------------------------------------------------------------------
# Lucene's PorterStemmer.java, ported step by step (method names and step numbers as there).


class _PorterStemmer:
    """Martin Porter's reference stemmer as shipped in Lucene (``o.a.l.analysis.en``)."""

    __slots__ = ("b", "j", "k")

    def __init__(self, word: str) -> None:
        self.b = list(word)
        self.k = len(word) - 1
        self.j = 0

    def cons(self, i: int) -> bool:
        ch = self.b[i]
        if ch in "aeiou":
            return False
        if ch == "y":
            return True if i == 0 else not self.cons(i - 1)
        return True

    def m(self) -> int:
        n, i, j = 0, 0, self.j
        while True:
            if i > j:
                return n
            if not self.cons(i):
                break
            i += 1
        i += 1
        while True:
            while True:
                if i > j:
                    return n
                if self.cons(i):
                    break
                i += 1
            i += 1
            n += 1
            while True:
                if i > j:
                    return n
                if not self.cons(i):
                    break
                i += 1
            i += 1

    def vowelinstem(self) -> bool:
        return any(not self.cons(i) for i in range(self.j + 1))

    def doublec(self, j: int) -> bool:
        return j >= 1 and self.b[j] == self.b[j - 1] and self.cons(j)

    def cvc(self, i: int) -> bool:
        if i < 2 or not self.cons(i) or self.cons(i - 1) or not self.cons(i - 2):
            return False
        return self.b[i] not in "wxy"

    def ends(self, s: str) -> bool:
        o = self.k - len(s) + 1
        if o < 0 or "".join(self.b[o : self.k + 1]) != s:
            return False
        self.j = self.k - len(s)
        return True

    def setto(self, s: str) -> None:
        o = self.j + 1
        self.b[o : self.k + 1] = list(s)
        self.k = self.j + len(s)

    def r(self, s: str) -> None:
        if self.m() > 0:
            self.setto(s)

    def step1(self) -> None:
        b = self.b
        if b[self.k] == "s":
            if self.ends("sses"):
                self.k -= 2
            elif self.ends("ies"):
                self.setto("i")
            elif b[self.k - 1] != "s":
                self.k -= 1
        if self.ends("eed"):
            if self.m() > 0:
                self.k -= 1
        elif (self.ends("ed") or self.ends("ing")) and self.vowelinstem():
            self.k = self.j
            if self.ends("at"):
                self.setto("ate")
            elif self.ends("bl"):
                self.setto("ble")
            elif self.ends("iz"):
                self.setto("ize")
            elif self.doublec(self.k):
                ch = b[self.k]
                self.k -= 1
                if ch in "lsz":
                    self.k += 1
            elif self.m() == 1 and self.cvc(self.k):
                self.setto("e")

    def step2(self) -> None:
        if self.ends("y") and self.vowelinstem():
            self.b[self.k] = "i"

    _STEP3: ClassVar[dict[str, tuple[tuple[str, str], ...]]] = {
        "a": (("ational", "ate"), ("tional", "tion")),
        "c": (("enci", "ence"), ("anci", "ance")),
        "e": (("izer", "ize"),),
        "l": (("bli", "ble"), ("alli", "al"), ("entli", "ent"), ("eli", "e"), ("ousli", "ous")),
        "o": (("ization", "ize"), ("ation", "ate"), ("ator", "ate")),
        "s": (("alism", "al"), ("iveness", "ive"), ("fulness", "ful"), ("ousness", "ous")),
        "t": (("aliti", "al"), ("iviti", "ive"), ("biliti", "ble")),
        "g": (("logi", "log"),),
    }
    _STEP4: ClassVar[dict[str, tuple[tuple[str, str], ...]]] = {
        "e": (("icate", "ic"), ("ative", ""), ("alize", "al")),
        "i": (("iciti", "ic"),),
        "l": (("ical", "ic"), ("ful", "")),
        "s": (("ness", ""),),
    }
    _STEP5: ClassVar[dict[str, tuple[str, ...]]] = {
        "a": ("al",),
        "c": ("ance", "ence"),
        "e": ("er",),
        "i": ("ic",),
        "l": ("able", "ible"),
        "n": ("ant", "ement", "ment", "ent"),
        "s": ("ism",),
        "t": ("ate", "iti"),
        "u": ("ous",),
        "v": ("ive",),
        "z": ("ize",),
    }

    def _replace_first(self, rules: tuple[tuple[str, str], ...]) -> None:
        for suffix, repl in rules:
            if self.ends(suffix):
                self.r(repl)
                return

    def step3(self) -> None:
        if self.k == 0:
            return
        self._replace_first(self._STEP3.get(self.b[self.k - 1], ()))

    def step4(self) -> None:
        self._replace_first(self._STEP4.get(self.b[self.k], ()))

    def step5(self) -> None:
        if self.k == 0:
            return
        key = self.b[self.k - 1]
        if key == "o":
            matched = (self.ends("ion") and self.j >= 0 and self.b[self.j] in "st") or self.ends("ou")
        else:
            matched = any(self.ends(suffix) for suffix in self._STEP5.get(key, ()))
        if matched and self.m() > 1:
            self.k = self.j

    def step6(self) -> None:
        self.j = self.k
        if self.b[self.k] == "e":
            a = self.m()
            if a > 1 or (a == 1 and not self.cvc(self.k - 1)):
                self.k -= 1
        if self.b[self.k] == "l" and self.doublec(self.k) and self.m() > 1:
            self.k -= 1

    def stem(self) -> str:
        if self.k > 1:
            self.step1()
            self.step2()
            self.step3()
            self.step4()
            self.step5()
            self.step6()
        return "".join(self.b[: self.k + 1])


def porter_stem(word: str) -> str:
    """Lucene's ``PorterStemFilter`` on one lower-cased term (words of <= 2 chars unchanged)."""
    return _PorterStemmer(word).stem() if len(word) > 2 else word


# ----------------------------------------------------------------------------------------


class LuceneEnglishAnalyzer:
    """Anserini's ``DefaultEnglishAnalyzer``; results per surface token are cached (corpora
    repeat a small vocabulary, so the Python stemmer runs once per distinct word).
    """

    def __init__(self, stopwords: Iterable[str] = ENGLISH_STOP_WORDS, stem: bool = True) -> None:
        self.stopwords = frozenset(stopwords)
        self.stem = stem
        self._cache: dict[str, str | None] = {}

    def term(self, token: str) -> str | None:
        """The indexed term for one tokenizer token, or None when the stop filter drops it."""
        cached = self._cache.get(token, "")
        if cached != "":
            return cached
        word = _java_lower(strip_possessive(token))
        result: str | None
        result = None if not word or word in self.stopwords else porter_stem(word) if self.stem else word
        self._cache[token] = result
        return result

    def __call__(self, text: str) -> list[str]:
        """Analyzed terms of ``text`` in order (repeats kept: they are term frequencies)."""
        cache = self._cache
        out: list[str] = []
        for token in tokenize(text):
            term = cache[token] if token in cache else self.term(token)
            if term is not None:
                out.append(term)
        return out

    def analyze_many(self, texts: Iterable[str]) -> list[list[str]]:
        return [self(text) for text in texts]


_DEFAULT = LuceneEnglishAnalyzer()


def analyze(text: str) -> list[str]:
    """Terms of ``text`` under the default (Pyserini) English analyzer."""
    return _DEFAULT(text)
