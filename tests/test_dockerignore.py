"""lib/dockerignore: Docker's .dockerignore rules, and a build context filtered by them."""

from __future__ import annotations

import io
import tarfile

import pytest

from lib import dockerignore


def excluded(patterns: str, path: str) -> bool:
    return dockerignore.Matcher(dockerignore.read(patterns)).excluded(path)


def test_it_reads_patterns_as_the_docker_cli_does():
    text = "\ufeff# a comment\n\n  *.log  \n!keep.log\n/abs/dir/\n./x/../y\n! spaced\n #not one\n"
    assert dockerignore.read(text) == ["*.log", "!keep.log", "abs/dir", "y", "!spaced",
                                       "#not one"]


@pytest.mark.parametrize(("patterns", "path", "out"), [
    ("*.log", "a.log", True),
    ("*.log", "sub/a.log", False),  # * never crosses a /
    ("**/*.log", "sub/deep/a.log", True),
    ("**/*.log", "a.log", True),  # ** is any number of directories, none too
    ("secret", "secret/inner/file", True),  # a parent directory that matches
    ("se?ret", "secret", True),
    ("se?ret", "se/ret", False),
    ("[ab].txt", "b.txt", True),
    ("[ab].txt", "c.txt", False),
    ("docs/**", "docs/a/b", True),
    ("a\\*b", "a*b", True),
    ("a\\*b", "axb", False),
    ("*.log\n!keep.log", "keep.log", False),
    ("*.log\n!keep.log\nkeep.log", "keep.log", True),  # the last match wins
    ("secret\n!secret/public", "secret/public/x", False),
    ("secret\n!secret/public", "secret/private", True),
    ("!nothing", "nothing", False),  # an exception alone excludes nothing
    ("a.b", "axb", False),  # . is a dot, not a regex's any character
])
def test_it_matches_like_docker(patterns, path, out):
    assert excluded(patterns, path) is out


def test_a_broken_pattern_is_refused():
    with pytest.raises(dockerignore.DockerignoreError):
        dockerignore.Matcher(["[unclosed"])


def tar_of(files: dict[str, str], dirs: tuple[str, ...] = ()) -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:") as tar:
        for name in dirs:
            info = tarfile.TarInfo(name + "/")
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    return buffer


def names(buffer: io.BytesIO) -> set[str]:
    buffer.seek(0)
    with tarfile.open(fileobj=buffer, mode="r:") as tar:
        return {m.name.rstrip("/") for m in tar.getmembers()}


def test_it_leaves_out_what_the_file_excludes_and_keeps_the_dockerfile():
    source = tar_of({
        ".dockerignore": "*\n!app\n!app/**\napp/cache\n",
        "Dockerfile": "FROM x\n", "secret.env": "TOKEN=1", "app/main.py": "print()",
        "app/cache/big": "x" * 100,
    }, dirs=("app", "app/cache"))
    out = io.BytesIO()

    left_out = dockerignore.filter_context(source, out, dockerfile="Dockerfile")

    assert names(out) == {".dockerignore", "Dockerfile", "app", "app/main.py"}
    assert left_out == 3
    out.seek(0)
    with tarfile.open(fileobj=out, mode="r:") as tar:
        assert tar.extractfile("app/main.py").read() == b"print()"


def test_an_excluded_directory_stays_for_a_file_an_exception_keeps():
    source = tar_of({".dockerignore": "conf\n!conf/public.txt\n", "conf/public.txt": "p",
                     "conf/private.txt": "s"}, dirs=("conf",))
    out = io.BytesIO()
    dockerignore.filter_context(source, out, dockerfile="Dockerfile")
    assert names(out) == {".dockerignore", "conf", "conf/public.txt"}


def test_without_a_dockerignore_nothing_is_copied():
    out = io.BytesIO()
    assert dockerignore.filter_context(tar_of({"a": "1"}), out, dockerfile="Dockerfile") is None
    assert out.getvalue() == b""
    assert dockerignore.filter_context(tar_of({".dockerignore": "# only\n", "a": "1"}), out,
                                       dockerfile="Dockerfile") is None


def test_a_huge_dockerignore_is_refused():
    source = tar_of({".dockerignore": "x\n" * (dockerignore.MAX_BYTES // 2 + 1)})
    with pytest.raises(dockerignore.DockerignoreError):
        dockerignore.filter_context(source, io.BytesIO(), dockerfile="Dockerfile")


@pytest.mark.parametrize(("patterns", "path", "out"), [
    ("[^R]*.env", "prod.env", True),  # [^...] negates, as in Go's filepath.Match
    ("[^R]*.env", "Rprod.env", False),
    ("[a-c]x", "bx", True),
    ("[a-c]x", "dx", False),
    ("a**b", "a/x/b", True),  # ** not followed by / is any number of directories, then b
    ("**", "any/thing/at/all", True),
])
def test_classes_and_stars_match_like_docker(patterns, path, out):
    assert excluded(patterns, path) is out


def test_a_pattern_of_many_stars_is_matched_without_backtracking():
    # A regex would backtrack for O(n^k) steps here; the walk takes a few thousand.
    matcher = dockerignore.Matcher(dockerignore.read("*a" * 40 + "*b\n"))

    assert matcher.excluded("a" * 4000) is False
    assert matcher.excluded("a" * 4000 + "b") is True


def test_too_many_or_too_long_patterns_are_refused():
    with pytest.raises(dockerignore.DockerignoreError, match="more than"):
        dockerignore.Matcher([f"p{n}" for n in range(dockerignore.MAX_PATTERNS + 1)])
    with pytest.raises(dockerignore.DockerignoreError, match="longer than"):
        dockerignore.Matcher(["x" * (dockerignore.MAX_PATTERN_CHARS + 1)])


def test_a_dockerignore_that_is_a_symlink_is_refused_not_skipped():
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:") as tar:
        info = tarfile.TarInfo(".dockerignore")
        info.type, info.linkname = tarfile.SYMTYPE, "rules/ignore"
        tar.addfile(info)
    buffer.seek(0)

    with pytest.raises(dockerignore.DockerignoreError, match="not a regular file"):
        dockerignore.filter_context(buffer, io.BytesIO(), dockerfile="Dockerfile")


def test_applying_the_rules_stops_at_its_time_bound(monkeypatch):
    monkeypatch.setattr(dockerignore, "MAX_SECONDS", -1)  # already past it at the first path
    context = tar_of({".dockerignore": "*.log\n", "a.log": "x", "Dockerfile": "FROM x"})

    with pytest.raises(dockerignore.DockerignoreError, match="took more than"):
        dockerignore.filter_context(context, io.BytesIO(), dockerfile="Dockerfile")
