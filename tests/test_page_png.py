"""The report page as a browser shows it: headless Chromium renders `index.html` to a PNG, which must hold
text and the plots (not a blank page, not broken-image icons).

Needs a `chromium` binary (Debian's `chromium` package; `.ci/run` installs it); skips, saying so, without.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from matplotlib import image

from search.leaderboard import report
from tests.test_report import study_env  # noqa: F401  (the fixture: a real study with leaderboard rows)

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM = next((path for name in BROWSERS if (path := shutil.which(name))), None)
WIDTH, HEIGHT = 1280, 2400
C0_BLUE = np.array([31, 119, 180]) / 255  # matplotlib's first colour: the plots' points and bars

pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason=f"no Chromium binary on PATH ({', '.join(BROWSERS)}): `apt-get install chromium` to run it",
)


def _screenshot(page: Path, png: Path, *, profile: Path) -> None:
    # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
    args = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
        f"--user-data-dir={profile}", f"--window-size={WIDTH},{HEIGHT}", f"--screenshot={png}",
        page.as_uri(),
    ]  # fmt: skip
    done = subprocess.run(
        args, capture_output=True, text=True, timeout=120, env={**os.environ, "HOME": str(profile)}
    )
    assert done.returncode == 0 and png.is_file(), done.stderr[-2000:]


def test_report_page_renders_text_and_plots(study_env, tmp_path: Path) -> None:  # noqa: F811
    index = report.write_report(
        study=study_env["study"], storage=study_env["storage"], db_url=study_env["db_url"], out=tmp_path / "r"
    )
    png = tmp_path / "page.png"
    _screenshot(index, png, profile=tmp_path / "profile")
    pixels = image.imread(png)[..., :3]  # floats in [0, 1]
    assert pixels.shape[:2] == (HEIGHT, WIDTH)
    ink = (pixels.max(axis=2) < 0.6).mean()  # dark pixels: text, axes, table borders
    assert ink > 0.005, f"the page is blank ({ink:.4%} dark pixels)"
    blue = (np.abs(pixels - C0_BLUE).max(axis=2) < 0.08).mean()
    assert blue > 0.001, f"no plot drawn ({blue:.4%} of the page in the plots' blue): images missing?"
    top = pixels[: HEIGHT // 8]  # the title and the summary table come first
    assert (top.max(axis=2) < 0.6).mean() > 0.005
