# Refresh the catalogues after adding or changing a translatable string, from
# the repository root:
#
#   .venv/bin/python manage.py makemessages -l en -l ru \
#       --ignore='.venv/*' --ignore='var/*' --ignore='tests/*' --ignore='bench/*' \
#       --add-location=file
#
# then translate every empty or "#, fuzzy" entry in locale/ru/LC_MESSAGES/django.po
# (and remove its fuzzy flag). English is the source language: its msgstrs stay
# empty. `make messages` compiles the .mo files, which are not committed.
"""Berth's English and Russian message catalogues: complete, in step with the code, and used.

The .po files are read with the small parser below rather than polib, to keep
the dev dependencies as they are.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client

REPO_ROOT = Path(__file__).resolve().parent.parent
LOCALE_DIR = REPO_ROOT / "locale"
LANGS = ("en", "ru")

# The arguments of the command in the comment above; the sync test runs exactly these.
MAKEMESSAGES_ARGS = [
    "makemessages", "-l", "en", "-l", "ru",
    "--ignore=.venv/*", "--ignore=var/*", "--ignore=tests/*", "--ignore=bench/*",
    "--add-location=file",
]
# What the --ignore flags leave out; the sync test copies the rest of the tree (bar
# dot-directories and build leftovers), so a new app's strings are checked too.
NOT_SOURCE = {".venv", "var", "tests", "bench"}

RU_PLURAL_FORMS = (
    "nplurals=3; plural=(n%10==1 && n%100!=11 ? 0 : n%10>=2 && n%10<=4 && "
    "(n%100<10 || n%100>=20) ? 1 : 2);"
)
CLOSED_SOCKET = "unix:///nonexistent/closed.sock"


def po_path(lang: str, locale_dir: Path = LOCALE_DIR) -> Path:
    return locale_dir / lang / "LC_MESSAGES" / "django.po"


# --- a small .po parser --------------------------------------------------------

@dataclass
class Entry:
    msgid: str
    msgctxt: str | None = None
    msgid_plural: str | None = None
    # msgstr, or msgstr[0], msgstr[1], … for a plural entry.
    msgstrs: list[str] = field(default_factory=list)
    flags: set[str] = field(default_factory=set)
    obsolete: bool = False
    line: int = 0

    @property
    def key(self) -> tuple[str | None, str]:
        return (self.msgctxt, self.msgid)

    @property
    def is_header(self) -> bool:
        return self.msgid == "" and self.msgctxt is None

    @property
    def is_fuzzy(self) -> bool:
        return "fuzzy" in self.flags

    def __str__(self) -> str:
        context = f" (context {self.msgctxt!r})" if self.msgctxt is not None else ""
        return f"{self.msgid!r}{context}"


_ESCAPE = re.compile(r'\\(?:([0-7]{1,3})|x([0-9A-Fa-f]{1,2})|(.))', re.DOTALL)
_SIMPLE_ESCAPES = {
    "n": b"\n", "t": b"\t", "r": b"\r", "a": b"\a", "b": b"\b", "f": b"\f", "v": b"\v",
    '"': b'"', "\\": b"\\", "'": b"'", "?": b"?",
}
_KEYWORD = re.compile(r'^(msgctxt|msgid_plural|msgid|msgstr(?:\[(\d+)\])?)\s+(".*)$')


def unquote(quoted: str, line: int) -> str:
    """The text of one C-style quoted PO string; octal and hex escapes are UTF-8 bytes."""
    quoted = quoted.strip()
    if len(quoted) < 2 or not (quoted.startswith('"') and quoted.endswith('"')):
        raise ValueError(f"line {line}: not a quoted string: {quoted}")
    body = quoted[1:-1]
    out = bytearray()
    pos = 0
    for match in _ESCAPE.finditer(body):
        out += body[pos:match.start()].encode()
        octal, hexa, char = match.groups()
        if octal:
            out.append(int(octal, 8) & 0xFF)
        elif hexa:
            out.append(int(hexa, 16))
        elif char in _SIMPLE_ESCAPES:
            out += _SIMPLE_ESCAPES[char]
        else:
            raise ValueError(f"line {line}: unknown escape \\{char}")
        pos = match.end()
    out += body[pos:].encode()
    return out.decode("utf-8")


def parse_po(text: str) -> list[Entry]:
    """Every entry of a .po file, the header (msgid "") and obsolete (#~) ones included."""
    entries: list[Entry] = []
    fields: dict[str, str] = {}
    plural_strs: dict[int, str] = {}
    flags: set[str] = set()
    obsolete = False
    start = 0
    current: tuple[str, int | None] | None = None  # the keyword a "…" line continues

    def finish() -> None:
        nonlocal fields, plural_strs, flags, obsolete, current
        if "msgid" in fields:
            if plural_strs:
                msgstrs = [plural_strs[i] for i in sorted(plural_strs)]
            else:
                msgstrs = [fields.get("msgstr", "")]
            entries.append(Entry(
                msgid=fields["msgid"], msgctxt=fields.get("msgctxt"),
                msgid_plural=fields.get("msgid_plural"), msgstrs=msgstrs,
                flags=flags, obsolete=obsolete, line=start,
            ))
        elif fields or plural_strs:
            raise ValueError(f"line {start}: an entry without msgid")
        fields, plural_strs, flags, obsolete, current = {}, {}, set(), False, None

    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        is_obsolete = line.startswith("#~")
        if is_obsolete:
            line = line[2:].strip()
            if line.startswith("|"):  # a previous msgid of an obsolete entry
                continue
        if not line:  # blank lines are only whitespace; a new entry starts at its first line
            continue
        if line.startswith("#"):
            # A comment after a msgstr starts the next entry (even without a blank line).
            if "msgstr" in fields or plural_strs:
                finish()
            if line.startswith("#,"):
                flags |= {flag.strip() for flag in line[2:].split(",") if flag.strip()}
            continue
        if line.startswith('"'):
            if current is None:
                raise ValueError(f"line {number}: a string continues nothing")
            name, index = current
            if index is None:
                fields[name] += unquote(line, number)
            else:
                plural_strs[index] += unquote(line, number)
            continue
        match = _KEYWORD.match(line)
        if not match:
            raise ValueError(f"line {number}: cannot parse {raw!r}")
        keyword, index, value = match.groups()
        if keyword in {"msgctxt", "msgid"} and ("msgstr" in fields or plural_strs):
            finish()
        if keyword in {"msgctxt", "msgid"} and "msgid" not in fields and "msgctxt" not in fields:
            start = number
        obsolete = obsolete or is_obsolete
        if index is not None:
            plural_strs[int(index)] = unquote(value, number)
            current = ("msgstr", int(index))
        else:
            if keyword in fields:
                raise ValueError(f"line {number}: a second {keyword}")
            fields[keyword] = unquote(value, number)
            current = (keyword, None)
    finish()
    return entries


def read_po(path: Path) -> list[Entry]:
    return parse_po(path.read_text(encoding="utf-8"))


def messages(entries: Iterable[Entry]) -> list[Entry]:
    """The live messages: no header, no obsolete entries."""
    return [e for e in entries if not e.is_header and not e.obsolete]


def header(entries: Iterable[Entry]) -> tuple[Entry, dict[str, str]]:
    entry = next(e for e in entries if e.is_header and not e.obsolete)
    values = {}
    for line in entry.msgstrs[0].splitlines():
        name, _, value = line.partition(":")
        values[name.strip()] = value.strip()
    return entry, values


# --- placeholders --------------------------------------------------------------

_PERCENT = re.compile(
    r"%(?:\((?P<name>[^)]*)\))?[#0 +\-]*(?:\*|\d+)?(?:\.(?:\*|\d+))?[diouxXeEfFgGcrsa%]"
)
_BRACE = re.compile(r"\{\{.*?\}\}|\{[\w.\[\]]*(?:![rsa])?(?::[^{}]*)?\}")


def placeholders(text: str, *, percent: bool = True) -> tuple[frozenset, tuple, frozenset]:
    """(named %(x)s, positional %s/%d in order, {x} and {{ x }}) found in `text`."""
    named, positional = set(), []
    if percent:
        for match in _PERCENT.finditer(text):
            token = match.group()
            if token == "%%":
                continue
            if match.group("name") is not None:
                named.add(token)
            else:
                positional.append(token)
    braces = frozenset(m.group() for m in _BRACE.finditer(text))
    return frozenset(named), tuple(positional), braces


def translation_problems(entry: Entry, nplurals: int) -> list[str]:
    """Why `entry` is not a usable translation; [] when it is."""
    problems = []
    if entry.is_fuzzy:
        problems.append(f"{entry} is marked fuzzy (msgfmt skips it)")
    if entry.msgid_plural is not None and len(entry.msgstrs) != nplurals:
        problems.append(f"{entry} has {len(entry.msgstrs)} plural forms, not {nplurals}")
    if any(not s for s in entry.msgstrs):
        problems.append(f"{entry} is not translated")
        return problems
    percent = "no-python-format" not in entry.flags
    # Every Russian plural form serves several numbers (form 0 is 1, 21, 31…),
    # so each one carries the placeholders of msgid_plural.
    source = entry.msgid_plural if entry.msgid_plural is not None else entry.msgid
    expected = placeholders(source, percent=percent)
    for index, msgstr in enumerate(entry.msgstrs):
        found = placeholders(msgstr, percent=percent)
        if found != expected:
            form = f"msgstr[{index}]" if entry.msgid_plural is not None else "msgstr"
            problems.append(
                f"{entry}: {form} {msgstr!r} has placeholders {_show(found)}, "
                f"the source has {_show(expected)}"
            )
    return problems


def _show(found: tuple[frozenset, tuple, frozenset]) -> str:
    named, positional, braces = found
    return repr(sorted(named) + list(positional) + sorted(braces))


# --- the parser itself -----------------------------------------------------------

SAMPLE_PO = r'''# A translator comment
msgid ""
msgstr ""
"Language: ru\n"
"Plural-Forms: nplurals=3; plural=0;\n"

#: a.py
#, python-format
msgid ""
"Two %(n)d "
"lines"
msgstr "Две %(n)d строки"

#, fuzzy, python-format
msgctxt "button"
msgid "Say \"hi\"\tnow\\"
msgstr "Скажи \"привет\"\n"
#: next.py
msgid "A tab\x41 and \101"
msgid_plural "Tabs"
msgstr[0] "один"
msgstr[1] ""
msgstr[2] "\320\274\320\275\320\276\320\263\320\276"

#~ msgid "Gone"
#~ msgstr "Ушло"
'''


def test_parser_reads_multiline_context_plural_fuzzy_escapes_and_obsolete():
    entries = parse_po(SAMPLE_PO)
    assert [e.msgid for e in entries] == [
        "", "Two %(n)d lines", 'Say "hi"\tnow\\', "A tabA and A", "Gone",
    ]
    head, values = header(entries)
    assert values == {"Language": "ru", "Plural-Forms": "nplurals=3; plural=0;"}
    two = entries[1]
    assert two.msgstrs == ["Две %(n)d строки"] and two.flags == {"python-format"}
    assert two.line == 9
    hi = entries[2]
    assert hi.msgctxt == "button" and hi.is_fuzzy and hi.msgstrs == ['Скажи "привет"\n']
    tabs = entries[3]
    assert tabs.msgid_plural == "Tabs" and tabs.msgstrs == ["один", "", "много"]
    assert not tabs.flags  # the #, fuzzy above belonged to the previous entry
    gone = entries[4]
    assert gone.obsolete and gone.msgstrs == ["Ушло"]
    assert [e.msgid for e in messages(entries)] == [
        "Two %(n)d lines", 'Say "hi"\tnow\\', "A tabA and A",
    ]
    assert translation_problems(two, 3) == []
    assert len(translation_problems(hi, 3)) == 1  # fuzzy
    assert translation_problems(tabs, 3) == [f"{tabs} is not translated"]


def test_placeholder_check_catches_a_changed_or_dropped_placeholder():
    good = Entry(msgid="%(n)d of %(total)d", msgstrs=["%(total)d: %(n)d"])
    renamed = Entry(msgid="%(n)d of %(total)d", msgstrs=["%(n)d из %(all)d"])
    positional = Entry(msgid="%s then %d", msgstrs=["%d, затем %s"])
    braces = Entry(msgid="Hello {name} and {{ user }}", msgstrs=["Привет, {name}"])
    percent_sign = Entry(msgid="100%% done", msgstrs=["готово на 100%%"])
    plural = Entry(msgid="one file", msgid_plural="%(count)d files",
                   msgstrs=["%(count)d файл", "%(count)d файла", "файлов"])
    assert translation_problems(good, 3) == []
    assert translation_problems(percent_sign, 3) == []
    assert len(translation_problems(renamed, 3)) == 1
    assert len(translation_problems(positional, 3)) == 1
    assert len(translation_problems(braces, 3)) == 1
    assert translation_problems(plural, 3) == [
        "'one file': msgstr[2] 'файлов' has placeholders [], the source has ['%(count)d']",
    ]


# --- (a) the committed catalogues --------------------------------------------------

@pytest.fixture(scope="module")
def gettext_tools() -> None:
    missing = [tool for tool in ("msgfmt", "xgettext", "msgmerge") if not shutil.which(tool)]
    if missing:
        pytest.fail(f"GNU gettext is needed ({', '.join(missing)} missing): run `make host`")


@pytest.mark.parametrize("lang", LANGS)
def test_catalogue_exists_with_its_header(lang):
    path = po_path(lang)
    assert path.is_file(), f"{path} is missing: run the makemessages command in this file"
    entry, values = header(read_po(path))
    assert not entry.is_fuzzy, f"{path}: the header is marked fuzzy"
    assert values.get("Language") == lang
    assert values.get("Content-Type") == "text/plain; charset=UTF-8"
    if lang == "ru":
        assert values.get("Plural-Forms") == RU_PLURAL_FORMS


@pytest.mark.parametrize("lang", LANGS)
def test_catalogue_compiles(lang, gettext_tools, tmp_path):
    """msgfmt --check: the header, the plural forms and the python-format strings agree."""
    result = subprocess.run(
        ["msgfmt", "--check", "-o", str(tmp_path / "django.mo"), str(po_path(lang))],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stderr


def test_english_and_russian_catalogues_hold_the_same_messages():
    en = {e.key for e in messages(read_po(po_path("en")))}
    ru = {e.key for e in messages(read_po(po_path("ru")))}
    assert sorted(en - ru, key=str) == [], "only in the English catalogue"
    assert sorted(ru - en, key=str) == [], "only in the Russian catalogue"


def test_every_russian_message_is_translated_without_fuzzy_or_placeholder_changes():
    entries = read_po(po_path("ru"))
    assert messages(entries), "the Russian catalogue has no messages"
    problems = [
        f"line {e.line}: {problem}"
        for e in messages(entries) for problem in translation_problems(e, 3)
    ]
    assert not problems, "locale/ru/LC_MESSAGES/django.po:\n" + "\n".join(problems)


# --- (b) the catalogues are in step with the code -------------------------------------

def _copy_source(destination: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.mo", "*.egg-info")
    for item in REPO_ROOT.iterdir():
        if item.name.startswith(".") or item.name in NOT_SOURCE or item.name.endswith(".egg-info"):
            continue
        if item.is_dir():
            shutil.copytree(item, destination / item.name, ignore=ignore)
        elif item.is_file():
            shutil.copy2(item, destination / item.name)


@pytest.fixture(scope="module")
def regenerated(gettext_tools, tmp_path_factory) -> dict[str, list[Entry]]:
    """The catalogues as makemessages makes them now from a copy of the source tree."""
    source = tmp_path_factory.mktemp("source")
    _copy_source(source)
    env = os.environ | {
        "DJANGO_SETTINGS_MODULE": "berth.settings",
        "BERTH_DATA_DIR": str(tmp_path_factory.mktemp("data")),
    }
    result = subprocess.run(
        [sys.executable, "manage.py", *MAKEMESSAGES_ARGS],
        cwd=source, env=env, capture_output=True, text=True, check=False, timeout=300,
    )
    assert result.returncode == 0, f"makemessages failed:\n{result.stdout}\n{result.stderr}"
    return {lang: read_po(po_path(lang, source / "locale")) for lang in LANGS}


def test_no_string_in_the_code_lacks_a_russian_translation(regenerated):
    problems = [p for e in messages(regenerated["ru"]) for p in translation_problems(e, 3)]
    assert not problems, (
        "strings in the code without a Russian translation; run the makemessages command "
        "at the top of tests/test_translations.py and translate them in "
        "locale/ru/LC_MESSAGES/django.po:\n" + "\n".join(problems)
    )


@pytest.mark.parametrize("lang", LANGS)
def test_catalogue_holds_exactly_the_strings_of_the_code(regenerated, lang):
    committed = {e.key: e for e in messages(read_po(po_path(lang)))}
    current = {e.key: e for e in messages(regenerated[lang])}
    new = [str(current[k]) for k in current.keys() - committed.keys()]
    gone = [str(committed[k]) for k in committed.keys() - current.keys()]
    assert not new and not gone, (
        f"locale/{lang}/LC_MESSAGES/django.po is out of step with the code; run the "
        "makemessages command at the top of tests/test_translations.py.\n"
        f"New in the code: {new}\nNo longer in the code: {gone}"
    )


# --- (c) a page in Russian is in Russian ------------------------------------------------

@pytest.fixture
def compiled_locale(gettext_tools, tmp_path, settings) -> Path:
    """The committed .po files compiled afresh, so no stale .mo in the tree is tested."""
    locale_dir = tmp_path / "locale"
    for lang in LANGS:
        mo = locale_dir / lang / "LC_MESSAGES" / "django.mo"
        mo.parent.mkdir(parents=True)
        subprocess.run(["msgfmt", "-o", str(mo), str(po_path(lang))], check=True)
    settings.LOCALE_PATHS = [locale_dir]  # also clears Django's translation caches
    return locale_dir


def russian(msgid: str) -> str:
    entry = next(e for e in messages(read_po(po_path("ru"))) if e.msgid == msgid)
    assert entry.msgstrs[0] and entry.msgstrs[0] != msgid
    return entry.msgstrs[0]


@pytest.fixture
def viewer_client(client: Client, viewer, workload, monkeypatch) -> Client:
    monkeypatch.setenv("DOCKER_HOST", CLOSED_SOCKET)  # the unreachable-engine banner, always
    client.force_login(viewer)
    return client


def test_dashboard_is_in_russian_with_the_russian_language_cookie(
    compiled_locale, viewer_client
):
    viewer_client.cookies[settings.LANGUAGE_COOKIE_NAME] = "ru"
    response = viewer_client.get("/")
    assert response.status_code == 200
    html = response.content.decode()
    assert '<html lang="ru">' in html
    assert f"<h1>{russian('Workloads')}</h1>" in html
    assert russian("Workloads") == "Рабочие нагрузки"
    # Templates, the engine banner and a model's (lazy) choice label.
    for msgid in ("Project / stage", "The Docker engine is unreachable: deploys will fail "
                  "until it is back.", "Never deployed"):
        assert russian(msgid) in html
    assert "Workloads" not in html and "Never deployed" not in html


def test_dashboard_is_in_english_without_a_language_choice(compiled_locale, viewer_client):
    html = viewer_client.get("/").content.decode()
    assert '<html lang="en">' in html
    assert "<h1>Workloads</h1>" in html
    assert russian("Workloads") not in html


def test_the_language_switcher_turns_the_pages_russian(compiled_locale, viewer_client):
    response = viewer_client.post("/i18n/setlang/", {"language": "ru", "next": "/"})
    assert response.status_code == 302
    assert viewer_client.cookies[settings.LANGUAGE_COOKIE_NAME].value == "ru"
    html = viewer_client.get("/").content.decode()
    assert f"<h1>{russian('Workloads')}</h1>" in html
