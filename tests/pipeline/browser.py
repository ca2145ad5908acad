"""Open a report in real headless Chromium and measure what it drew (tests and bench script)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")


def find_chromium() -> str | None:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def screenshot(html: Path, png: Path, width: int = 1000, height: int = 4000) -> Path:
    """Render `html` (a local file) in headless Chromium and save a PNG of the page."""
    chromium = find_chromium()
    if chromium is None:
        raise FileNotFoundError("chromium not found (Debian: apt-get install -y chromium)")
    png.unlink(missing_ok=True)
    command = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--hide-scrollbars",
        "--allow-file-access-from-files",
        f"--user-data-dir={png.parent / '.chromium-profile'}",
        f"--window-size={width},{height}",
        f"--screenshot={png}",
        html.resolve().as_uri(),
    ]
    subprocess.run(command, check=True, capture_output=True, timeout=120)
    if not png.is_file():
        raise RuntimeError(f"chromium wrote no screenshot at {png}")
    return png


def colored_pixels(png: Path) -> int:
    """Pixels that are clearly colored (not white, gray or black): plot lines, bars, heatmaps.

    Text and tables of the page are gray-scale, so a page whose images did not load has ~none.
    """
    import matplotlib.image

    rgb = matplotlib.image.imread(png)[..., :3].astype(np.float32)
    saturation = rgb.max(axis=-1) - rgb.min(axis=-1)
    return int((saturation > 0.2).sum())
