"""Status colours in both themes reach 4.5:1 (WCAG 2 AA for normal text), computed from the
relative luminance; and the theme file Streamlit draws the badges from agrees with the palette
jobq colours its table cells with (jobq.web.views.STATUS_PALETTES)."""

from __future__ import annotations

import tomllib

import pytest
from seeding import REPO

from jobq.web import views

AA_NORMAL_TEXT = 4.5
CONFIG = REPO / "src" / "jobq" / "web" / ".streamlit" / "config.toml"


def relative_luminance(color: str) -> float:
    """WCAG 2 relative luminance of ``#rrggbb``."""
    channels = [int(color.lstrip("#")[i : i + 2], 16) / 255 for i in (0, 2, 4)]
    r, g, b = (c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: str, b: str) -> float:
    hi, lo = sorted((relative_luminance(a), relative_luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def test_the_formula_matches_known_ratios() -> None:
    assert contrast("#000000", "#ffffff") == pytest.approx(21.0)
    assert contrast("#777777", "#ffffff") == pytest.approx(4.48, abs=0.01)  # the classic near miss
    assert contrast("#c96a00", "#ffffff") < AA_NORMAL_TEXT  # the old PROCESSING orange: refused


@pytest.mark.parametrize("theme", views.THEMES)
def test_every_status_colour_reaches_4_5_to_1_on_its_badge_and_on_the_page(theme: str) -> None:
    palette = views.STATUS_PALETTES[theme]
    page_text, page = palette["page"]
    assert contrast(page_text, page) >= AA_NORMAL_TEXT
    low = {}
    for name in set(views.STATUS_COLORS.values()) | {c for c, _ in views.CELL_COLORS.values()}:
        text, badge = palette[name]
        low[name] = min(contrast(text, badge), contrast(text, page))  # a badge, and a table cell
    assert min(low.values()) >= AA_NORMAL_TEXT, low


@pytest.mark.parametrize("theme", views.THEMES)
def test_the_theme_file_draws_badges_in_the_tested_colours(theme: str) -> None:
    table = tomllib.loads(CONFIG.read_text())["theme"][theme]
    palette = views.STATUS_PALETTES[theme]
    assert (table["textColor"], table["backgroundColor"]) == palette["page"]
    for name in set(views.STATUS_COLORS.values()):
        assert (table[f"{name}TextColor"], table[f"{name}BackgroundColor"]) == palette[name], name
