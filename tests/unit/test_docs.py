"""The user docs keep to the facts: README's performance figures come from docs/BENCHMARKS.md, and
no user doc sends a reader to an internal issue number.

The convention: README quotes benchmark figures only inside one marked block,

    <!-- benchmark figures: ... -->
    `make bench` of 2026-11-26 11:34 UTC ...: ... 43,199 msgs/s ...
    <!-- end of benchmark figures -->

in which every number (and the run's date) must appear in docs/BENCHMARKS.md; outside it, README
states no throughput, latency percentile or memory figure at all. A new benchmark run updates
BENCHMARKS.md, and this test then points at each README figure that no longer matches.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
BENCHMARKS = ROOT / "docs" / "BENCHMARKS.md"
USER_DOCS = [README, *sorted((ROOT / "docs").glob("*.md"))]

BEGIN = "<!-- benchmark figures:"
END = "<!-- end of benchmark figures -->"
NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
DATE = re.compile(r"\b\d{4}-\d{2}-\d{2}\b")
# What a performance claim looks like: a rate, a size in MB (memory), a latency percentile.
FIGURE = re.compile(
    r"\d[\d,.]*(?:\s*k)?(?:\s+[\w-]+){0,3}?\s*(?:msgs?|messages|readings|points|rows|queries)/s\b"
    r"|\d[\d,.]*\s*MB\b|\bp(?:50|90|95|99)\b"
)
# "issue 4", "Issue #2's", "issues 3/4", "#12" (not a heading, an anchor or an HTML entity).
ISSUE = re.compile(r"\bissues?\s*#?\d+|(?<![\w&#/])#\d+\b", re.IGNORECASE)


def split_block(text: str) -> tuple[str, str]:
    """(the marked block without its two comment lines, the text outside it)."""
    assert text.count(BEGIN) == 1 and text.count(END) == 1, "README needs exactly one marked figures block"
    head, rest = text.split(BEGIN, 1)
    block, tail = rest.split(END, 1)
    block = block.split("-->", 1)[1]  # the rest of the opening comment
    return block, head + tail


def numbers(text: str) -> set[str]:
    return set(NUMBER.findall(text))


def figures_not_in(block: str, source: str) -> list[str]:
    return sorted(numbers(block) - numbers(source))


def figures_outside(text: str) -> list[str]:
    return [m.group(0) for m in FIGURE.finditer(text)]


def issue_references(text: str) -> list[str]:
    return [m.group(0) for m in ISSUE.finditer(text)]


def test_every_figure_in_readme_comes_from_benchmarks() -> None:
    block, _ = split_block(README.read_text())
    source = BENCHMARKS.read_text()
    assert FIGURE.search(block), "the block holds the performance figures"
    assert figures_not_in(block, source) == [], "README figures not in docs/BENCHMARKS.md"
    dates = DATE.findall(block)
    assert dates, "the block names the date of the benchmark run"
    assert all(d in source for d in dates), dates


def test_readme_states_no_performance_figure_outside_the_block() -> None:
    _, outside = split_block(README.read_text())
    assert figures_outside(outside) == []


@pytest.mark.parametrize("path", USER_DOCS, ids=lambda p: p.name)
def test_user_docs_name_no_internal_issue_numbers(path: Path) -> None:
    assert issue_references(path.read_text()) == [], path


# --- the checks themselves catch what they are for -----------------------------------------------


def test_the_checks_catch_a_stale_or_invented_figure() -> None:
    source = "| burst | **43,199 msgs/s** | p99 0.129 s | 84 MB |"
    assert figures_not_in("43,199 msgs/s; p99 0.13 s; 75 MB", source) == ["0.13", "75"]
    assert figures_not_in("43,199 msgs/s, 84 MB", source) == []
    old_readme = (
        "- **Bounded memory**: ~75 MB RSS under any load\n- **Fast**: 16,000–19,000 single-reading "
        "msgs/s and 70,000–95,000 readings/s in batches; p99 publish→stored 0.29 s"
    )
    assert figures_outside(old_readme) == [
        "75 MB",
        "19,000 single-reading msgs/s",
        "95,000 readings/s",
        "p99",
    ]
    assert figures_outside("InfluxDB down for 20 s; a 100,000-message burst; 1 GiB queue") == []
    with pytest.raises(AssertionError):
        split_block("no block here")


def test_the_checks_catch_issue_numbers() -> None:
    found = issue_references("EDGE (issue 3); the ACL of issue 4; Issue #2's targets; see #12; issues 3/4")
    assert found == ["issue 3", "issue 4", "Issue #2", "#12", "issues 3"]
    clean = "## Heading\n[link](QUERY.md#which-aggregate) &#169; `x_p99` issued by the CA; 4 issues"
    assert issue_references(clean) == []
