"""Finds user-visible strings that are not marked for translation (tests/test_i18n.py).

Templates (every templates/**/*.html): after removing comments, `{% translate %}` and
`{% blocktranslate %}...{% endblocktranslate %}`, `<script>`/`<style>` bodies and every
other template tag and variable, any text left between HTML tags that contains a letter is
unmarked, unless its words are all UNITS (symbols that are the same in every language:
MiB, ms, s, UTC...). So is a letter in a user-visible attribute (title, placeholder, alt,
aria-label, aria-description, the value of a button or submit input) and a literal argument of
`yesno` / `default` that is not written `_("...")`.

Scripts (static/portal/*.js, static/audit/*.js): a string literal is user-visible when it
contains a letter and either a space or a capital letter, unless it is
- an argument of gettext / ngettext / pgettext / npgettext / interpolate's format (those
  are the catalogue's), or
- technical: a CSS selector (starts with `#`, `.`, `[`, or is `tag[...]`), a path or URL
  (starts with `/` or `http`), an HTTP method, a date/number format option, only UNITS
  (" ms", " MiB"), or
- on ALLOWED_JS (exact literals: words that are the same in every language, like "API").
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE_DIR = ROOT / "templates"
SCRIPT_GLOBS = ["static/portal/*.js", "static/audit/*.js"]

LETTER = re.compile(r"[^\W\d_]")
VISIBLE_ATTRIBUTES = ("title", "placeholder", "alt", "aria-label", "aria-description")

# Exact script literals that are no sentence in any language (units, names, symbols).
ALLOWED_JS = {
    "use strict",
    # class lists and a canvas font: CSS, not text
    "badge badge-",
    "badge ",
    " not-converging",
    "outcome-title outcome-",
    "11px sans-serif",
    "API",
    "MiB",
    "GiB",
    "KiB",
    "TiB",
    "B",
    "MiB/s",
    "JSON",
    "CSV",
}
# Unit symbols and fixed prefixes, written the same in every language (SI, IEC, ISO 8601).
UNITS = {"B", "KiB", "MiB", "GiB", "TiB", "MiB/s", "ms", "s", "min", "h", "UTC", "mig_"}
_WORD = re.compile(r"[^\W\d_][\w/]*")


def _only_units(text: str) -> bool:
    return all(word in UNITS for word in _WORD.findall(text))


# yesno into data attributes for the scripts: values, not words.
TECHNICAL_FILTER_LITERALS = {"true,false"}
HTTP_METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"}
# Literals handed to the DOM or to Intl, never shown: keys and values of those APIs.
TECHNICAL_JS = re.compile(
    r"""^(
        [#.\[] .*                                   # selectors
      | [a-z][\w-]*(\[[^\]]*\]|[.#:][\w-].*|\s*>\s*.*|,\s*[\w#.\[].*)  # tag[attr], a.b, ul > li
      | /.* | https?:.* | wss?:.*                   # paths and URLs
      | (\[[^\]]+\]\s*)+                           # several attribute selectors
      | Content-Type | X-CSRFToken | Accept(-Language)? | Retry-After
      | Escape | Enter | ArrowDown | ArrowUp | Tab | Home | End   # KeyboardEvent.key
      | DOMContentLoaded
    )$""",
    re.X,
)


# --- templates ---------------------------------------------------------------------

_COMMENT_BLOCK = re.compile(r"{%\s*comment\s*%}.*?{%\s*endcomment\s*%}", re.S)
_TEMPLATE_COMMENT = re.compile(r"{#.*?#}", re.S)
_HTML_COMMENT = re.compile(r"<!--.*?-->", re.S)
_BLOCKTRANSLATE = re.compile(
    r"{%\s*blocktrans(late)?\b.*?%}.*?{%\s*endblocktrans(late)?\s*%}", re.S
)
_SCRIPT_STYLE = re.compile(r"<(script|style)\b[^>]*>.*?</\1>", re.S | re.I)
_TAG = re.compile(r"{%.*?%}|{{.*?}}", re.S)
_HTML_TAG = re.compile(r"<[^>]*>", re.S)
_HTML_TAG_WITH_TEMPLATE = re.compile(r"<[a-zA-Z](?:{%.*?%}|{{.*?}}|[^>])*>", re.S)
_ENTITY = re.compile(r"&[a-zA-Z]+;|&#\d+;")
_ATTRIBUTE = re.compile(r"""([\w:-]+)\s*=\s*("([^"]*)"|'([^']*)')""")
_FILTER_LITERAL = re.compile(r"""\|\s*(yesno|default|default_if_none)\s*:\s*("[^"]*"|'[^']*')""")


def _has_letter(text: str) -> bool:
    return bool(LETTER.search(text))


def _looks_like_words(literal: str, filter_name: str) -> bool:
    if not _has_letter(literal):
        return False
    # yesno's words are shown; a default is a word only with a space or a capital.
    return filter_name == "yesno" or " " in literal or literal != literal.lower()


def _unmarked_attributes(tag: str) -> list[str]:
    found = []
    tag = _TAG.sub("", tag)  # a translate tag in a value leaves nothing; a variable neither
    attributes = {
        m.group(1).lower(): m.group(3) or m.group(4) or "" for m in _ATTRIBUTE.finditer(tag)
    }
    names = [name for name in VISIBLE_ATTRIBUTES if name in attributes]
    kind = attributes.get("type", "").lower()
    if tag.lower().startswith(("<button", "<input")) and kind in ("submit", "button", "reset"):
        names.append("value")
    for name in names:
        value = _TAG.sub("", _ENTITY.sub("", attributes.get(name, "")))
        if _has_letter(value):
            found.append(f"{name}={value.strip()!r}")
    return found


def template_problems(source: str) -> list[str]:
    """The unmarked user-visible strings of one template."""
    problems: list[str] = []
    for m in _FILTER_LITERAL.finditer(source):
        words = m.group(2)[1:-1]
        if words in TECHNICAL_FILTER_LITERALS or not _looks_like_words(words, m.group(1)):
            continue
        problems.append(f"|{m.group(1)}:{m.group(2)} (write {m.group(1)}:_({m.group(2)}))")
    text = _COMMENT_BLOCK.sub(" ", source)
    text = _TEMPLATE_COMMENT.sub(" ", text)
    text = _HTML_COMMENT.sub(" ", text)
    text = _BLOCKTRANSLATE.sub(" ", text)
    text = _SCRIPT_STYLE.sub(" ", text)
    # Attributes first: template tags may hold ">" and quotes, so they are read as a whole.
    for tag in _HTML_TAG_WITH_TEMPLATE.finditer(text):
        problems.extend(_unmarked_attributes(tag.group(0)))
    text = _TAG.sub(" ", text)
    text = _HTML_TAG.sub("\n", text)
    text = _ENTITY.sub(" ", text)
    for piece in text.split("\n"):
        if _has_letter(piece) and not _only_units(piece):
            problems.append(piece.strip())
    return problems


# --- scripts -----------------------------------------------------------------------

_JS_TOKEN = re.compile(
    r"""
    (?P<comment>//[^\n]*|/\*.*?\*/)
  | (?P<string>"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*'|`(?:\\.|[^`\\])*`)
  | (?P<regex>(?<=[(,=:!&|?;{}\n])\s*/(?![/*])(?:\\.|\[[^\]\n]*\]|[^/\\\n\[])+/[gimsuy]*)
  | (?P<word>[A-Za-z_$][\w$]*)
  | (?P<open>\()
  | (?P<close>\))
    """,
    re.S | re.X,
)
GETTEXT_FUNCTIONS = {"gettext", "ngettext", "pgettext", "npgettext", "gettext_noop"}
_INTL_OPTION = re.compile(
    r"^(numeric|2-digit|short|long|narrow|medium|full|decimal|percent|unit|"
    r"byte|kilobyte|megabyte|gigabyte|second|auto|always|never)$"
)


def _literal_value(token: str) -> str:
    return token[1:-1]


def _is_technical(value: str) -> bool:
    if value in ALLOWED_JS or value in HTTP_METHODS:
        return True
    if _INTL_OPTION.match(value) or _only_units(re.sub(r"\$\{[^}]*\}", " ", value)):
        return True
    # "input[name], select[name]": a list of selectors
    return all(TECHNICAL_JS.match(part.strip()) for part in value.split(","))


def _looks_visible(value: str) -> bool:
    # Template literal parts between ${...} are code, not text.
    text = re.sub(r"\$\{[^}]*\}", " ", value)
    if not _has_letter(text):
        return False
    # A space anywhere (also "libvirt: " + reason, a sentence made by concatenation).
    return " " in text or any(ch.isupper() for ch in text)


def script_problems(source: str) -> list[str]:
    """The unmarked user-visible string literals of one script."""
    problems: list[str] = []
    # A stack of open parentheses: True when that call is a gettext-family call.
    stack: list[bool] = []
    last_word = ""
    for m in _JS_TOKEN.finditer(source):
        kind = m.lastgroup
        if kind == "word":
            last_word = m.group(0)
            continue
        if kind == "open":
            stack.append(last_word in GETTEXT_FUNCTIONS)
        elif kind == "close":
            if stack:
                stack.pop()
        elif kind == "string":
            value = _literal_value(m.group(0))
            inside_gettext = any(stack)
            if not inside_gettext and _looks_visible(value) and not _is_technical(value):
                problems.append(value)
        last_word = ""
    return problems


def all_problems() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in sorted(TEMPLATE_DIR.rglob("*.html")):
        problems = template_problems(path.read_text())
        if problems:
            found[str(path.relative_to(ROOT))] = problems
    for pattern in SCRIPT_GLOBS:
        for path in sorted(ROOT.glob(pattern)):
            problems = script_problems(path.read_text())
            if problems:
                found[str(path.relative_to(ROOT))] = problems
    return found


if __name__ == "__main__":
    for name, problems in all_problems().items():
        print(f"== {name} ({len(problems)})")
        for problem in problems:
            print("   ", problem)
