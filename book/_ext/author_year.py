"""One citation style in the text and in the lists: author and year.

sphinxcontrib-bibtex's own `author_year` reference style writes "[Elman, 1990]" in the text,
while its bibliography styles label the list entries "[Elm90]" (alpha) or "[1]" (plain): a
reader cannot match the two by eye. This extension registers

- the pybtex label style `author_year` ("Elman, 1990", "Schuster and Paliwal, 1997",
  "Bengio et al., 1994"; "2000a", "2000b" when one list holds two works that would get the
  same label) and the formatting style `rnnbook` (pybtex's plain style sorted by author,
  year and title, with those labels), set in _config.yml as `bibtex_default_style`;
- the reference style `rnnbook`, set as `bibtex_reference_style`: a citation shows the
  label of the entry it links to, in parentheses, several separated by "; ".

So a citation reads "(Elman, 1990)" and the list entry it links to starts with
"Elman, 1990" (book.css hides the list's square brackets).
"""
import dataclasses
import re
from collections import Counter

import pybtex.plugin
from pybtex.style.formatting.plain import Style as PlainStyle
from pybtex.style.labels import BaseLabelStyle
from pybtex.style.sorting.author_year_title import SortingStyle
from sphinxcontrib.bibtex.plugin import register_plugin
from sphinxcontrib.bibtex.style.referencing import BracketStyle
from sphinxcontrib.bibtex.style.referencing.label import LabelReferenceStyle

_BRACES = re.compile(r"[{}]")
_ACCENTS = {r'\"u': "ü", r'\"e': "ë", r"\'i": "í", r"\'e": "é", r"\c{c}": "ç", r"\c{C}": "Ç",
            r'\"o': "ö", r'\"a': "ä"}


def _plain(text):
    """A BibTeX name as text: the accents the book's .bib uses, without braces."""
    for tex, char in _ACCENTS.items():
        text = text.replace("{" + tex + "}", char).replace(tex, char)
    return _BRACES.sub("", text)


def _surname(person):
    return _plain(" ".join(person.prelast_names + person.last_names))


def _authors(entry):
    persons = entry.persons.get("author") or entry.persons.get("editor") or []
    names = [_surname(p) for p in persons]
    if not names:
        return _plain(entry.fields.get("organization", entry.key))
    if len(names) == 1:
        return names[0]
    if len(names) == 2:
        return f"{names[0]} and {names[1]}"
    return f"{names[0]} et al."


class AuthorYearLabelStyle(BaseLabelStyle):
    """Labels "Author, Year", "A and B, Year", "A et al., Year"; a, b, ... after the year
    when two entries of one list would otherwise share a label."""

    def format_labels(self, sorted_entries):
        entries = list(sorted_entries)
        base = [f"{_authors(e)}, {e.fields.get('year', 'n.d.')}" for e in entries]
        count, seen = Counter(base), Counter()
        for label in base:
            if count[label] > 1:
                seen[label] += 1
                yield label + "abcdefghijklmnopqrstuvwxyz"[seen[label] - 1]
            else:
                yield label


class Style(PlainStyle):
    """pybtex's plain entries, sorted by author, year and title, labelled author-year."""
    default_label_style = AuthorYearLabelStyle
    default_sorting_style = SortingStyle


@dataclasses.dataclass
class ReferenceStyle(LabelReferenceStyle):
    """Citations show the entry's label in parentheses: "(Elman, 1990; Jordan, 1986)"."""
    bracket_parenthetical: BracketStyle = dataclasses.field(
        default_factory=lambda: BracketStyle(left="(", right=")", sep="; "))
    bracket_textual: BracketStyle = dataclasses.field(
        default_factory=lambda: BracketStyle(left="(", right=")", sep="; "))


def setup(app):
    pybtex.plugin.register_plugin("pybtex.style.labels", "author_year", AuthorYearLabelStyle)
    pybtex.plugin.register_plugin("pybtex.style.formatting", "rnnbook", Style)
    register_plugin("sphinxcontrib.bibtex.style.referencing", "rnnbook", ReferenceStyle)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
