"""The hardware report rewrites only its marked README block (benches/hw_sections.update_readme)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benches"))

from hw_sections import BEGIN, END, update_readme  # noqa: E402


def test_rewrites_the_marked_block_only(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\nbefore\n\n{BEGIN}\nold table\n{END}\n\nafter\n")
    update_readme(readme, "| new | table |", tmp_path / "benches" / "results" / "hw")
    text = readme.read_text()
    assert "old table" not in text and "| new | table |" in text
    assert text.startswith("# x\n\nbefore\n\n") and text.endswith(f"{END}\n\nafter\n")
    assert "(benches/results/hw/hw_report.md)" in text
    update_readme(readme, "| newer |", tmp_path / "benches" / "results" / "hw")  # idempotent shape
    assert readme.read_text().count(BEGIN) == 1 and "| new | table |" not in readme.read_text()


def test_appends_a_section_when_the_markers_are_missing(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# x\n")
    update_readme(readme, "| t |", tmp_path / "out")
    text = readme.read_text()
    assert "## Hardware report" in text and BEGIN in text and END in text and "| t |" in text
