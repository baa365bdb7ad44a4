"""The analyzer must produce Lucene's EnglishAnalyzer terms (what Pyserini indexes)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resrank.retrieval import analyzer as an
from resrank.retrieval.analyzer import ENGLISH_STOP_WORDS, LuceneEnglishAnalyzer, analyze, porter_stem, tokenize


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("Hello, world!", ["Hello", "world"]),
        # letters join across . ' : (MidNumLet / Single_Quote / MidLetter); trailing dot dropped
        ("the U.S.A. e.g. don't x:y", ["the", "U.S.A", "e.g", "don't", "x:y"]),
        # digits join across . , ; ; letters and digits glue together
        ("1.5 1,000 3;4 1.5mg h1n1 2nd", ["1.5", "1,000", "3;4", "1.5mg", "h1n1", "2nd"]),
        # a letter-dot-digit sequence is not joined (no WB rule for ALetter . Numeric)
        ("a.1 1.a", ["a", "1", "1", "a"]),
        # hyphens, slashes, brackets, operators split
        ("covid-19 IL-6/IL-10 (p<0.05) TNF-α", ["covid", "19", "IL", "6", "IL", "10", "p", "0.05", "TNF", "α"]),
        # underscore (ExtendNumLet) joins anything; a bare underscore is no token
        ("foo_bar _x_ ___ a__1", ["foo_bar", "_x_", "a__1"]),
        # StandardTokenizer knows no URLs: host and path pieces
        ("see http://www.example.com/a_b?q=1", ["see", "http", "www.example.com", "a_b", "q", "1"]),
        # ideographs and hiragana one per character, katakana runs together
        ("中文 ひら カタカナ", ["中", "文", "ひ", "ら", "カタカナ"]),
        # emoji are tokens (Lucene 8+); superscripts are not letters or digits
        ("ok 👍🏽 m² ©", ["ok", "👍🏽", "m", "©"]),
        # combining marks stay inside the word (WB4)
        ("nai\u0308ve", ["nai\u0308ve"]),
        ("", []),
    ],
)
def test_tokenize_follows_standard_tokenizer(text: str, tokens: list[str]) -> None:
    assert tokenize(text) == tokens


def test_long_tokens_are_split_at_255_characters() -> None:
    assert tokenize("a" * 600) == ["a" * 255, "a" * 255, "a" * 90]


def test_stopwords_are_lucenes_33_words() -> None:
    assert len(ENGLISH_STOP_WORDS) == 33
    assert {"a", "the", "their", "with", "will", "such"} <= ENGLISH_STOP_WORDS
    assert "from" not in ENGLISH_STOP_WORDS  # not in Lucene's list (it is in NLTK's)


@pytest.mark.parametrize(
    ("text", "terms"),
    [
        ("The cats are running", ["cat", "run"]),
        # possessive removal before lower-casing, all three apostrophes, any case
        ("John's JOHN'S synuclein’s", ["john", "john", "synuclein"]),
        ("It's what it is", ["what"]),  # it's -> it -> stopword
        ("Generalization of HYPOTHESES", ["gener", "hypothes"]),
        ("ΣΊΣΥΦΟΣ", ["σίσυφοσ"]),  # per-code-point lower case: no final sigma
        ("İstanbul", ["istanbul"]),  # Java maps U+0130 to a plain i
    ],
)
def test_analyze_lowercases_drops_stopwords_and_stems(text: str, terms: list[str]) -> None:
    assert analyze(text) == terms


@pytest.mark.parametrize(
    ("word", "stem"),
    [
        # Porter's paper examples
        ("caresses", "caress"),
        ("ponies", "poni"),
        ("ties", "ti"),
        ("cats", "cat"),
        ("feed", "feed"),
        ("agreed", "agre"),
        ("plastered", "plaster"),
        ("motoring", "motor"),
        ("hopping", "hop"),
        ("filing", "file"),
        ("relational", "relat"),
        ("conditional", "condit"),
        ("oscillators", "oscil"),
        ("adjustment", "adjust"),
        # Lucene (reference implementation) departures from the 1980 paper / Snowball "porter"
        ("possibly", "possibl"),  # -bli -> -ble, then -ible removed
        ("archaeology", "archaeolog"),  # -logi -> -log
        ("us", "us"),  # words of <= 2 characters are not stemmed
        ("ms", "ms"),
    ],
)
def test_porter_stem_matches_lucene(word: str, stem: str) -> None:
    assert porter_stem(word) == stem


def test_porter_agrees_with_snowball_porter_except_documented_departures() -> None:
    """PyStemmer's "porter" is the paper's algorithm; Lucene differs only on -bli, -logi, <= 2 chars."""
    stemmer = pytest.importorskip("Stemmer").Stemmer("porter")
    text = """
        connection connections connective connected connecting generalizations oscillator happiness
        running runner ran runs relate relativity electrical electricity hopefulness goodness
        formality sensitivity sensibility rational national nationalize vietnamization predication
        operator feudalism decisiveness hopefulness callousness formaliti sensitiviti triplicate
        formative formalize electriciti electrical hopeful goodness revival allowance inference
        airliner gyroscopic adjustable defensible irritant replacement adjustment dependent adoption
        homologou communism activate angulariti homologous effective bowdlerize probate rate cease
        controll roll biology biologies analogously sensibly conformabli radically differently
        vilely
    """
    words = text.split()
    for word in words:
        ours, theirs = porter_stem(word), stemmer.stemWord(word)
        if ours != theirs:
            assert len(word) <= 2 or "bli" in word or "logi" in word or "logy" in word or "bly" in word, word


def test_analyzer_cache_does_not_change_results() -> None:
    text = "Running runners ran; the runner's run."
    fresh = LuceneEnglishAnalyzer()
    first = fresh(text)
    assert fresh(text) == first == analyze(text)
    assert LuceneEnglishAnalyzer(stem=False)(text) == ["running", "runners", "ran", "runner", "run"]
    assert LuceneEnglishAnalyzer(stopwords=())("the cat") == ["the", "cat"]


_ASCII_ALPHABET = "aZ09.,;:'_\"- /x"


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=_ASCII_ALPHABET, max_size=40))
def test_ascii_fast_path_agrees_with_full_grammar(text: str) -> None:
    assert an._ASCII_TOKEN_RE.findall(text) == an._TOKEN_RE.findall(text)
