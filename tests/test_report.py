"""``picbench report``: a self-contained page built from a real run folder (positionic-open samples,
images composed from DreamBench photos), checked as HTML and rendered in headless Chromium."""

from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from picbench.benches import built_bench_dir
from picbench.benches.jsonl import write_bench_jsonl
from picbench.benches.positionic import build_open
from picbench.cli import app
from picbench.html import REFERENCE_PX, SUBJECT_COLOURS, THUMBNAIL_PX
from picbench.imaging import load_rgb
from picbench.paths import resolve_in_root
from picbench.records import Bench, Score, SubjectScore
from picbench.report import build_report, write_report
from picbench.results import RunResult, load_result, save_result

runner = CliRunner()
FAILED_ID_REASON = "generation: method returned a 256x256 image, expected 512x512"


class PageParts(HTMLParser):
    """The tags a test looks at: img, rect (with the text of its <title>), table rows, the smoke banner."""

    def __init__(self) -> None:
        super().__init__()
        self.imgs: list[dict] = []
        self.rects: list[dict] = []
        self.rows = 0
        self.banner = False
        self._in_title_of: dict | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = dict(attrs)
        if tag == "img":
            self.imgs.append(a)
        elif tag == "rect":
            self.rects.append(a)
        elif tag == "title" and self.rects and "label" not in self.rects[-1]:
            self._in_title_of = self.rects[-1]
        elif tag == "tr":
            self.rows += 1
        elif tag == "div" and a.get("class") == "smoke":
            self.banner = True

    def handle_data(self, data: str) -> None:
        if self._in_title_of is not None:
            self._in_title_of["label"] = data
            self._in_title_of = None


def parse(page: str) -> PageParts:
    parts = PageParts()
    parts.feed(page)
    return parts


def pixel_box(box: tuple[float, float, float, float], size: int, shift: int) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = (v * size for v in box)
    return (x0 + shift, y0 + shift, min(x1 + shift, size), min(y1 + shift, size))


@pytest.fixture(scope="module")
def open_bench(data_dir: Path) -> Bench:
    return build_open(data_dir)


@pytest.fixture()
def run_dir(template_run: Path, tmp_path: Path, open_bench: Bench) -> Path:
    """A fresh copy of the template run, with positionic-open built where ``load_bench`` finds it."""
    write_bench_jsonl(open_bench, built_bench_dir() / f"{open_bench.name}.jsonl")
    return Path(shutil.copytree(template_run, tmp_path / "run"))


@pytest.fixture(scope="module")
def template_run(tmp_path_factory: pytest.TempPathFactory, data_dir: Path, open_bench: Bench) -> Path:
    """A run folder as ``picbench run`` writes it: 2 single + 2 multi samples whose images are the
    subjects' reference photos pasted into their boxes (back to front), detections shifted by a few
    pixels, the last multi subject undetected, and one failed generation."""
    samples = [s for s in open_bench.samples if s.split == "single"][:2] + [s for s in open_bench.samples if s.split == "multi"][:3]
    out = tmp_path_factory.mktemp("template") / "run"
    (out / "images").mkdir(parents=True)
    lines = []
    for index, sample in enumerate(samples):
        if index == len(samples) - 1:
            score = Score(sample.id, 0, {}, failures=(FAILED_ID_REASON,), smoke=True)
            lines.append({**score.to_dict(), "image": None})
            continue
        canvas = Image.new("RGB", (sample.width, sample.height), (200, 200, 200))
        for sub in sorted(sample.subjects, key=lambda s: -(s.depth or 0)):
            x0, y0, x1, y1 = (round(v * sample.width) for v in sub.box)
            canvas.paste(load_rgb(resolve_in_root(data_dir, sub.references[0])).resize((x1 - x0, y1 - y0)), (x0, y0))
        image = f"images/{sample.id}.png"
        canvas.save(out / image)
        subjects = []
        for k, sub in enumerate(sample.subjects):
            undetected = sample.split == "multi" and k == len(sample.subjects) - 1
            detected = None if undetected else pixel_box(sub.box, sample.width, 6 + k)
            subjects.append(
                SubjectScore(
                    sub.name,
                    {"clip_i": 0.6 + 0.05 * k, "dino": 0.4 + 0.02 * index, "iou": 0.0 if undetected else 0.9},
                    detected,
                    0.0 if undetected else 0.9,
                )
            )
        score = Score(sample.id, 0, {"clip_i": 0.65, "iou": 0.7}, tuple(subjects), smoke=True)
        lines.append({**score.to_dict(), "image": image})
    (out / "samples.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    metrics = {"clip_i": 0.6512, "clip_i.single": 0.6, "clip_i.multi": 0.7025, "iou.single": 0.9, "iou.multi": 0.55, "ap.multi": 0.3333}
    save_result(
        RunResult(
            "paste",
            "1",
            {"background": "grey"},
            open_bench.name,
            open_bench.version,
            open_bench.content_hash(),
            (0,),
            metrics,
            {"n_items": 5, "n_failures": 1},
            True,
            {"picbench_version": "0.1.0", "git": {"commit": "c0ffee", "dirty": False}},
        ),
        out,
    )
    return out


def set_result(run_dir: Path, **changes: object) -> None:
    data = load_result(run_dir).to_dict() | changes
    (run_dir / "results.json").write_text(json.dumps(data), encoding="utf-8")


def test_page_is_self_contained_with_boxes_tables_and_plots(run_dir: Path, data_dir: Path, open_bench: Bench) -> None:
    page = build_report(run_dir, data_dir=data_dir)
    for external in ('src="http', "href=", "<link", "@import", "url(", "<script"):
        assert external not in page
    parts = parse(page)
    assert parts.banner and "SMOKE RUN" in page
    scores = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    shown = [s for s in scores if s["image"]]
    references = [img for img in parts.imgs if img.get("class") == "ref"]
    generated = [img for img in parts.imgs if img.get("class") not in ("ref", "plot")]
    assert len(generated) == len(shown)  # one image per generation, each beside its subjects' references
    assert len(parts.imgs) == 1 + len(generated) + len(references)  # and the per-subject plot
    subjects_shown = [sub for s in shown for sub in open_bench.sample(s["sample_id"]).subjects]
    assert [img["title"].split(":")[0] for img in references] == [sub.name for sub in subjects_shown]
    assert references[0]["style"] == f"border-color:{SUBJECT_COLOURS[0]}"
    decoded = [Image.open(io.BytesIO(base64.b64decode(img["src"].split(",", 1)[1]))) for img in parts.imgs]
    assert decoded[0].width > 200 and all(max(im.size) <= THUMBNAIL_PX for im in decoded[1:])
    assert all(max(Image.open(io.BytesIO(base64.b64decode(img["src"].split(",", 1)[1]))).size) <= REFERENCE_PX for img in references)
    targets = [r for r in parts.rects if r["label"].endswith(": target")]
    detected = [r for r in parts.rects if r["label"].endswith(": detected")]
    expected_targets = [(sub, s) for s in shown for sub in open_bench.sample(s["sample_id"]).subjects]
    assert len(targets) == len(expected_targets)
    assert len(detected) == sum(1 for s in shown for sub in s["subjects"] if sub["detected_box"])
    assert all("stroke-dasharray" in r for r in detected) and not any("stroke-dasharray" in r for r in targets)
    for rect, (sub, _) in zip(targets, expected_targets):
        assert rect["label"] == f"{sub.name}: target"
        assert float(rect["x"]) == pytest.approx(sub.box[0] * 512, abs=0.06)
        assert float(rect["width"]) == pytest.approx((sub.box[2] - sub.box[0]) * 512, abs=0.11)
    offset = 0
    for s in shown:  # within each image, subject k gets colour k
        n = len(open_bench.sample(s["sample_id"]).subjects)
        assert [r["stroke"] for r in targets[offset : offset + n]] == SUBJECT_COLOURS[:n]
        offset += n
    assert "(not detected)" in page
    for value in ("0.6512", "0.7025", "0.5500", "0.3333"):
        assert value in page
    assert FAILED_ID_REASON in page and scores[-1]["sample_id"] in page
    names = {sub["name"] for s in shown for sub in s["subjects"]}
    assert all(f"<th>{name}</th>" in page for name in names)
    assert "c0ffee" in page


def test_no_banner_for_a_real_run(run_dir: Path, data_dir: Path) -> None:
    set_result(run_dir, smoke=False)
    lines = [json.loads(line) | {"smoke": False} for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    (run_dir / "samples.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    page = build_report(run_dir, data_dir=data_dir)
    assert not parse(page).banner and "SMOKE" not in page


def test_unloadable_or_changed_bench_is_a_warning(run_dir: Path, data_dir: Path) -> None:
    set_result(run_dir, bench="no-such-bench")
    page = build_report(run_dir, data_dir=data_dir)
    parts = parse(page)
    assert "could not be loaded" in page and "no-such-bench" in page
    assert not any(r["label"].endswith(": target") for r in parts.rects)
    assert any(r["label"].endswith(": detected") for r in parts.rects)
    set_result(run_dir, bench="positionic-open", bench_hash="0" * 64)
    assert "has changed since this run" in build_report(run_dir, data_dir=data_dir)


def test_a_corrupt_image_is_shown_as_such(run_dir: Path, data_dir: Path) -> None:
    first = json.loads((run_dir / "samples.jsonl").read_text().splitlines()[0])
    broken = run_dir / first["image"]
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    page = build_report(run_dir, data_dir=data_dir, max_images=2)
    assert "corrupt or truncated" in page and broken.name in page
    assert "showing 2 of 5" in page


def test_cli_writes_the_page_and_names_bad_input(run_dir: Path, data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "site" / "report.html"
    result = runner.invoke(app, ["report", str(run_dir / "results.json"), "--out", str(out), "--data-dir", str(data_dir)])
    assert result.exit_code == 0, result.output
    assert out.is_file() and "<h1>picbench report: paste on positionic-open" in out.read_text(encoding="utf-8")
    missing = runner.invoke(app, ["report", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x.html")])
    assert missing.exit_code == 2 and "no results file" in missing.output and not (tmp_path / "x.html").exists()


PROBE = """<script>
window.addEventListener('load', () => {
  const probe = document.createElement('pre');
  probe.id = 'probe';
  probe.textContent = JSON.stringify({
    images: [...document.images].map(i => i.complete ? i.naturalWidth : -1),
    tables: [...document.querySelectorAll('table')].filter(t => !t.closest('details')).map(t => Math.round(t.getBoundingClientRect().height)),
    boxes: [...document.querySelectorAll('svg rect')].map(r => Math.round(r.getBoundingClientRect().width)),
    banner: Math.round(document.querySelector('.smoke').getBoundingClientRect().height),
  });
  document.body.appendChild(probe);
});
</script>"""


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.skip("chromium is not installed (Debian: apt-get install -y chromium); the page's rendering is not checked")
    return found


def test_page_renders_in_headless_chromium(run_dir: Path, data_dir: Path, tmp_path: Path) -> None:
    chromium = _chromium()
    page = write_report(run_dir, tmp_path / "report.html", data_dir=data_dir)
    probed = tmp_path / "probed.html"
    probed.write_text(page.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")
    flags = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1280,1800",
    ]
    dom = subprocess.run([*flags, "--virtual-time-budget=5000", "--dump-dom", probed.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    probe = json.loads(dom.stdout.split('<pre id="probe">', 1)[1].split("</pre>", 1)[0].replace("&quot;", '"'))
    assert len(probe["images"]) == len(parse(page.read_text(encoding="utf-8")).imgs) > 5 and all(width > 0 for width in probe["images"]), (
        probe
    )
    assert len(probe["tables"]) >= 3 and all(height > 20 for height in probe["tables"]), probe
    assert len(probe["boxes"]) > 5 and all(width > 0 for width in probe["boxes"]), probe
    assert probe["banner"] > 20
    shot = tmp_path / "shot.png"
    grab = subprocess.run([*flags, f"--screenshot={shot}", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert grab.returncode == 0 and shot.is_file(), grab.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert pixels.shape[:2] == (1800, 1280) and pixels.std() > 20
    banner_red = (abs(pixels - [0xC6, 0x28, 0x28]).sum(axis=2) < 30).sum()
    assert banner_red > 5000  # the smoke banner is on screen


def test_results_without_samples_give_the_aggregate_only(run_dir: Path, data_dir: Path) -> None:
    (run_dir / "samples.jsonl").unlink()
    page = build_report(run_dir / "results.json", data_dir=data_dir)
    parts = parse(page)
    assert "only the aggregate table" in page and parts.imgs == [] and parts.rects == []
    assert "0.6512" in page and parts.banner


def _dump_dom(chromium: str, page: Path, tmp_path: Path) -> str:
    flags = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1400,1800",
    ]
    dom = subprocess.run([*flags, "--virtual-time-budget=5000", "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    return json.loads(dom.stdout.split('<pre id="probe">', 1)[1].split("</pre>", 1)[0].replace("&quot;", '"'))


def second_run(run_dir: Path, tmp_path: Path) -> Path:
    """The same generations under another method name and lower scores: a second column."""
    other = Path(shutil.copytree(run_dir, tmp_path / "other"))
    set_result(other, method="gligen", metrics={**load_result(run_dir).metrics, "clip_i": 0.5}, intervals={"clip_i": [0.45, 0.55]})
    lines = [json.loads(line) for line in (other / "samples.jsonl").read_text().splitlines()]
    for line in lines:
        line["metrics"] = {k: (v - 0.1 if isinstance(v, float) else v) for k, v in line["metrics"].items()}
    (other / "samples.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return other


def test_comparison_page_puts_references_first_then_a_column_per_run(
    run_dir: Path, data_dir: Path, tmp_path: Path, open_bench: Bench
) -> None:
    other = second_run(run_dir, tmp_path)
    out = tmp_path / "compare.html"
    result = runner.invoke(app, ["report", str(run_dir), str(other), "--out", str(out), "--data-dir", str(data_dir)])
    assert result.exit_code == 0, result.output
    page = out.read_text(encoding="utf-8")
    assert "<script" not in page and "picbench comparison: paste vs gligen" in page
    header = page.split('<table class="compare"><thead><tr>', 1)[1].split("</tr>", 1)[0]
    assert header == "<th>sample</th><th>references</th><th>paste</th><th>gligen</th>"
    rows = page.split('<table class="compare">', 1)[1].split("<tbody>", 1)[1].split("</tbody>", 1)[0].split("<tr>")[1:]
    scores = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == len(scores)
    first = open_bench.sample(scores[0]["sample_id"])
    assert rows[0].count('class="ref"') == len(first.subjects) and rows[0].index('class="ref"') < rows[0].index('class="frame"')
    assert rows[0].count('class="frame"') == 2 and "clip_i 0.650" in rows[0] and "clip_i 0.550" in rows[0]
    assert FAILED_ID_REASON in rows[-1]
    assert '0.5000 <span class="ci">[0.4500, 0.5500]</span>' in page  # the aggregates side by side, with intervals


COMPARE_PROBE = """<script>
window.addEventListener('load', () => {
  const probe = document.createElement('pre');
  probe.id = 'probe';
  probe.textContent = JSON.stringify({
    images: [...document.images].map(i => i.complete ? i.naturalWidth : -1),
    cells: [...document.querySelectorAll('table.compare tbody tr')].map(r => r.children.length),
    boxes: [...document.querySelectorAll('table.compare svg rect')].map(r => Math.round(r.getBoundingClientRect().width)),
  });
  document.body.appendChild(probe);
});
</script>"""


def test_comparison_page_renders_in_headless_chromium_with_every_image_loaded(run_dir: Path, data_dir: Path, tmp_path: Path) -> None:
    chromium = _chromium()
    from picbench.report import build_comparison

    page = build_comparison([run_dir, second_run(run_dir, tmp_path)], data_dir=data_dir)
    probed = tmp_path / "probed.html"
    probed.write_text(page.replace("</body>", COMPARE_PROBE + "</body>"), encoding="utf-8")
    probe = _dump_dom(chromium, probed, tmp_path)
    assert len(probe["images"]) == page.count("<img ") > 8 and all(width > 0 for width in probe["images"]), probe
    assert probe["cells"] and all(n == 4 for n in probe["cells"]), probe
    assert len(probe["boxes"]) > 10 and all(width > 0 for width in probe["boxes"]), probe


SORT_PROBE = """<script>
window.addEventListener('load', () => {
  const table = document.querySelector('table.leaderboard.measured');
  const header = [...table.querySelectorAll('thead th')].find(th => th.textContent.startsWith('clip_i '));
  const order = () => [...table.tBodies[0].rows].map(r => r.children[0].textContent);
  const before = order();
  header.click();
  const down = order();
  header.click();
  const up = order();
  const probe = document.createElement('pre');
  probe.id = 'probe';
  probe.textContent = JSON.stringify({before, down, up, reported: document.querySelectorAll('table.leaderboard.reported tbody tr').length});
  document.body.appendChild(probe);
});
</script>"""


def test_leaderboard_page_is_sortable_in_headless_chromium(tmp_path: Path) -> None:
    chromium = _chromium()
    runs = []
    for method, clip_i in (("alpha", 0.70), ("beta", 0.85), ("gamma", 0.60)):
        result = RunResult(
            method,
            "1",
            {},
            "dreambench",
            "1",
            "h",
            (0,),
            {"clip_i": clip_i, "missing": 0.1},
            {"n_items": 4},
            False,
            higher_is_better={"clip_i": True, "missing": False},
            intervals={"clip_i": (clip_i - 0.02, clip_i + 0.02)},
        )
        save_result(result, tmp_path / method)
        runs.append(str(tmp_path / method))
    out = tmp_path / "board.html"
    reported = Path(__file__).resolve().parents[1] / "leaderboards" / "paper_reported.csv"
    result = runner.invoke(app, ["leaderboard", "export", *runs, str(reported), "--format", "html", "--out", str(out)])
    assert result.exit_code == 0, result.output
    page = out.read_text(encoding="utf-8")
    assert "<h2>Measured</h2>" in page and "<h2>Reported" in page and "missing &darr;" in page and "clip_i &uarr;" in page
    assert "[0.830, 0.870]" in page
    probed = tmp_path / "probed.html"
    probed.write_text(page.replace("</body>", SORT_PROBE + "</body>"), encoding="utf-8")
    probe = _dump_dom(chromium, probed, tmp_path)
    assert probe["down"] == ["beta", "alpha", "gamma"] and probe["up"] == ["gamma", "alpha", "beta"], probe
    assert probe["reported"] >= 1


def test_cli_default_of_max_images_is_the_report_module_s():
    from picbench.cli.report import DEFAULT_MAX_IMAGES as cli_default
    from picbench.report import DEFAULT_MAX_IMAGES

    assert cli_default == DEFAULT_MAX_IMAGES


def test_single_run_page_shows_the_intervals(run_dir: Path, data_dir: Path) -> None:
    set_result(run_dir, intervals={"clip_i": [0.64, 0.66], "clip_i.multi": [0.69, 0.71]})
    page = build_report(run_dir, data_dir=data_dir)
    assert '0.6512 <span class="ci">[0.6400, 0.6600]</span>' in page and '0.7025 <span class="ci">[0.6900, 0.7100]</span>' in page
    assert "<th>clip_i</th>" in page and "0.6000" in page  # a value without an interval still shows
