"""Every ```python (or ```py) block of README.md and docs/*.md runs at tiny settings on CPU (one test each, id file:line).

Snippets are written for real use: they name real model folders, photos and "cuda". To run them here, each file
may declare plain text substitutions in `SUBSTITUTIONS` below (the only mechanism; keep it short). A "to" text
may name a prepared asset as `{name}` (see `snippet_assets`: a saved tiny HonestFace folder, aligned faces of the
bundled photos, a bundled photo). Every substitution must still match its file, so the table cannot go stale.

A block that cannot run even so (e.g. a signature listing) carries a visible marker in the doc, on the line right
before its fence:

    <!-- snippet: no-run (the reason) -->

The reason is required; a no-run block must still parse as Python. Shell blocks (```bash) are not checked here.
"""

from __future__ import annotations

import ast
import inspect
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]

# file (relative to the repository root) -> {text in the doc's snippets: text the test runs instead}
SUBSTITUTIONS: dict[str, dict[str, str]] = {
    "README.md": {
        '"runs/honestface/final"': '"{tiny_honestface}"',  # a trained model folder -> the saved tiny one
        '"cuda"': '"cpu"',
        '"lq1.png"': '"{face_a}"',  # aligned low-quality faces and their references -> aligned bundled faces
        '"lq2.png"': '"{face_b}"',
        '"ref_a.png"': '"{face_a}"',
        '"ref_b.png"': '"{face_b}"',
        '"people/"': '"{people}/"',  # a folder of many people's aligned faces
        '"group.jpg"': '"{photo}"',  # a whole photo -> a bundled photo with one face
    },
}

FENCE = re.compile(r"^```(\S*)\s*$")
MARKER = re.compile(r"<!--\s*snippet:(.*?)-->")
NO_RUN = re.compile(r"^\s*no-run\s*\((.*)\)\s*$")


@dataclass(frozen=True)
class Snippet:
    file: str  # relative to the repository root
    line: int  # 1-based line of the opening fence
    code: str
    no_run: str | None  # the reason of a no-run marker, else None

    @property
    def id(self) -> str:
        return f"{self.file}:{self.line}"


def extract_snippets(path: Path) -> list[Snippet]:
    """Every ```python block of one Markdown file, with the no-run marker on the line before its fence."""
    lines = path.read_text(encoding="utf-8").splitlines()
    rel = path.relative_to(REPO_ROOT).as_posix()
    snippets, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == "```"), None)
        if end is None:
            raise AssertionError(f"{rel}:{i + 1}: unclosed code fence")
        if m.group(1) in ("python", "py", "python3"):
            marker = MARKER.search(lines[i - 1]) if i > 0 else None
            reason = None
            if marker:
                no_run = NO_RUN.match(marker.group(1))
                reason = no_run.group(1).strip() if no_run else f"<malformed marker: {marker.group(0)}>"
            snippets.append(Snippet(rel, i + 1, "\n".join(lines[i + 1:end]) + "\n", reason))
        i = end + 1
    return snippets


SNIPPETS = [s for path in DOC_FILES for s in extract_snippets(path)]
RUNNABLE = [s for s in SNIPPETS if s.no_run is None]


def substituted(snippet: Snippet, assets: dict[str, str]) -> str:
    code = snippet.code
    for old, new in SUBSTITUTIONS.get(snippet.file, {}).items():
        code = code.replace(old, new.format(**assets))
    return code


@pytest.fixture(scope="module")
def snippet_assets(tiny_honestface_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """What the substitutions may name: the tiny HonestFace folder, two FFHQ-aligned faces of different people at
    the tiny model's 64 px (astronaut, Grace Hopper), a folder holding both, and a whole photo (Grace Hopper)."""
    from honestface.data.samples import astronaut, grace_hopper
    from honestface.face import build_detector, extract_faces
    from honestface.io import write_image

    root = tmp_path_factory.mktemp("snippet_assets")
    detector = build_detector("mtcnn")
    assets = {"tiny_honestface": tiny_honestface_dir.as_posix(), "people": (root / "people").as_posix()}
    for key, photo in (("face_a", astronaut()), ("face_b", grace_hopper())):
        crop = extract_faces(photo, detector, size=64, rule="largest")[0].crop
        assets[key] = write_image(root / f"{key}.png", crop).as_posix()
        write_image(root / "people" / f"{key}.png", crop)
    assets["photo"] = write_image(root / "photo.jpg", grace_hopper()).as_posix()
    return assets


def test_snippets_are_found():
    """The extractor sees the README's Python examples (an extractor that finds nothing would pass every doc)."""
    files = {s.file for s in SNIPPETS}
    assert "README.md" in files
    assert len([s for s in RUNNABLE if s.file == "README.md"]) >= 2


def test_no_run_markers_have_a_reason_and_parse():
    """Every snippet marker is a no-run marker with a reason, sits right before a ```python fence, and its block is
    still valid Python."""
    for path in DOC_FILES:
        lines = path.read_text(encoding="utf-8").splitlines()
        rel = path.relative_to(REPO_ROOT).as_posix()
        for n, line in enumerate(lines):
            marker = MARKER.search(line)
            if marker is None:
                continue
            no_run = NO_RUN.match(marker.group(1))
            assert no_run and no_run.group(1).strip(), f"{rel}:{n + 1}: write `<!-- snippet: no-run (reason) -->`"
            assert n + 1 < len(lines) and lines[n + 1].strip() == "```python", \
                f"{rel}:{n + 1}: a snippet marker must be on the line right before a ```python fence"
    for s in SNIPPETS:
        if s.no_run is not None:
            ast.parse(s.code, filename=s.id)


@pytest.mark.parametrize("old", [(f, old) for f, table in SUBSTITUTIONS.items() for old in table],
                         ids=lambda x: f"{x[0]}:{x[1]}")
def test_substitutions_match_their_file(old):
    """A substitution whose text no longer appears in its file's runnable snippets is stale: remove it."""
    file, text = old
    assert any(text in s.code for s in RUNNABLE if s.file == file), f"{file}: no runnable snippet contains {text}"


@pytest.mark.parametrize("snippet", RUNNABLE, ids=lambda s: s.id)
def test_snippet_runs(snippet: Snippet, snippet_assets: dict[str, str], tmp_path: Path,
                      monkeypatch: pytest.MonkeyPatch, one_thread):
    """The block runs as written (after its file's substitutions) in an empty working folder; tracebacks show the
    doc's own line numbers."""
    monkeypatch.chdir(tmp_path)
    code = "\n" * snippet.line + substituted(snippet, snippet_assets)
    exec(compile(code, snippet.id, "exec"), {"__name__": "__docs_snippet__"})  # noqa: S102


def test_mfa_constructor_listing_matches_the_code():
    """docs/losses.md lists MaskedFaceAlignmentLoss's constructor defaults and its call (a no-run block): every
    keyword and default there is the code's, and none is missing."""
    from honestface.losses.mfa import MaskedFaceAlignmentLoss

    block = next(s for s in SNIPPETS if s.file == "docs/losses.md" and "MaskedFaceAlignmentLoss(" in s.code)
    calls = {node.func.id: node for node in ast.walk(ast.parse(block.code))
             if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)}
    for name, func in (("MaskedFaceAlignmentLoss", MaskedFaceAlignmentLoss.__init__),
                       ("mfa", MaskedFaceAlignmentLoss.forward)):
        params = {k: p for k, p in inspect.signature(func).parameters.items() if k != "self"}
        listed = {kw.arg: kw.value for kw in calls[name].keywords}
        positional = [a.id for a in calls[name].args if isinstance(a, ast.Name)]
        assert set(listed) | set(positional) == set(params), f"{block.id}: {name} lists other arguments"
        for key, value in listed.items():
            assert ast.literal_eval(value) == params[key].default, f"{block.id}: {name}({key}=...) default differs"
