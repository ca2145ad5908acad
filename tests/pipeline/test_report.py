"""`sslspeech report`: results.json keys, report.html with every plot, and the page as real
headless Chromium draws it."""

from __future__ import annotations

import json
import re

import pytest

from sslspeech.cli import main
from sslspeech.pipeline.report import write_report

from .browser import colored_pixels, find_chromium, screenshot
from .fake_run import make_fake_run


def test_results_json_has_the_keys_of_the_issue(tmp_path):
    run = make_fake_run(tmp_path / "run")
    write_report(run)
    results = json.loads((run / "results.json").read_text())
    assert results["wall_seconds"] == 60.5
    abx = results["abx"]
    assert abx["mfcc"] == 0.10
    assert abx["it1_layers"] == pytest.approx([0.09, 0.085, 0.09])
    assert abx["it1_best"] == pytest.approx(0.085)
    assert abx["it2_best"] == pytest.approx(0.075)
    assert results["best_layer"] == {"it1": 2, "it2": 2}
    assert results["pnmi"] == {"it1_targets": 0.3, "it2_targets": pytest.approx(0.4)}


def test_report_html_references_every_plot(tmp_path, capsys):
    run = make_fake_run(tmp_path / "run")
    assert main(["report", str(run)]) == 0
    assert capsys.readouterr().out.strip() == str(run / "report.html")
    page = (run / "report.html").read_text()
    images = re.findall(r'<img src="([^"]+)"', page)
    assert images == [
        "report/loss.png",
        "report/abx.png",
        "report/quality.png",
        "report/heatmap_it1_targets.png",
        "report/heatmap_it2_targets.png",
    ]
    for image in images:
        assert (run / image).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "max_steps = 200" in page, "the training configs are shown"
    assert "[mfcc]" in page, "the recipe is shown"


def test_report_of_a_directory_that_is_no_run_is_an_error(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 1
    assert "not a pipeline run directory" in capsys.readouterr().err


# `.ci/run` installs Debian's chromium, so CI always runs this; the skip only spares developer
# machines without a browser (bench/report_screenshot.py is the same check by hand).
@pytest.mark.skipif(
    find_chromium() is None,
    reason="needs Chromium to render the page (Debian: apt-get install -y chromium)",
)
def test_chromium_shows_the_plots(tmp_path):
    run = make_fake_run(tmp_path / "run")
    report = write_report(run)
    with_images = colored_pixels(screenshot(report, tmp_path / "report.png"))
    # The same page with image sources pointing nowhere: what a page with broken plots shows.
    broken = run / "broken.html"
    broken.write_text(report.read_text().replace('src="report/', 'src="missing/'))
    without_images = colored_pixels(screenshot(broken, tmp_path / "broken.png"))
    assert without_images < 500
    assert with_images > 50_000, f"only {with_images} colored pixels: were the plots drawn?"
