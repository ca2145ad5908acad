"""Open a run's report.html in real headless Chromium and check that its plots are drawn.

    python bench/report_screenshot.py RUN_DIR [--out report.png]

Prints one JSON line: the screenshot path, its size, and how many clearly colored pixels the
page shows (plot lines, bars, heatmaps; text and tables are gray), with and without the images.
Needs Chromium (Debian: apt-get install -y chromium).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.pipeline.browser import colored_pixels, screenshot


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--out", type=Path, help="screenshot PNG (default RUN_DIR/report.png)")
    args = parser.parse_args()
    report = args.run_dir / "report.html"
    out = (args.out or args.run_dir / "report.png").absolute()
    shot = screenshot(report, out, height=6000)
    broken = args.run_dir / ".report_without_images.html"
    broken.write_text(report.read_text().replace('src="report/', 'src="missing/'))
    without = colored_pixels(screenshot(broken, out.with_name(".report_without_images.png")))
    broken.unlink()
    colored = colored_pixels(shot)
    print(
        json.dumps(
            {
                "figure": "report_screenshot",
                "screenshot": str(shot),
                "bytes": shot.stat().st_size,
                "colored_pixels": colored,
                "colored_pixels_without_images": without,
                "plots_shown": colored > 50_000 and without < 500,
            }
        )
    )
    return 0 if colored > 50_000 else 1


if __name__ == "__main__":
    raise SystemExit(main())
