"""The HTML robustness report in a real headless browser (Chromium from Debian's packages).

A screenshot is taken and is not blank; every table lays out with a non-zero size; every
image decodes (naturalWidth > 0); the page logs no console error and throws nothing. The
probe is a script added to a copy of the report (the report itself has no script); a copy
with a broken image must fail the same probe. Chromium is installed when missing (apt-get);
the tests skip, saying why, only when that is impossible.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

PROBE = """<script>
window.__errors = [];
window.addEventListener("error", function (e) { window.__errors.push(String(e.message || e.type)); }, true);
var __error = console.error;
console.error = function () { window.__errors.push(Array.prototype.join.call(arguments, " ")); __error.apply(console, arguments); };
window.addEventListener("load", function () {
  var r = {tables: [], images: [], errors: window.__errors};
  document.querySelectorAll("table").forEach(function (t) {
    var b = t.getBoundingClientRect(); r.tables.push({rows: t.rows.length, w: b.width, h: b.height});
  });
  document.querySelectorAll("img").forEach(function (i) {
    r.images.push({alt: i.alt, w: i.naturalWidth, h: i.naturalHeight, complete: i.complete});
  });
  var pre = document.createElement("pre"); pre.id = "mg-probe"; pre.textContent = JSON.stringify(r);
  document.body.appendChild(pre);
});
</script>"""


def _install_chromium() -> str | None:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found or shutil.which("apt-get") is None or os.geteuid() != 0:
        return found
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
        if subprocess.run(
            command, env=env, capture_output=True, timeout=900, check=False
        ).returncode:
            return None
    return shutil.which("chromium")


@pytest.fixture(scope="module")
def chromium() -> str:
    found = _install_chromium()
    if found is None:
        pytest.skip("no Chromium, and `apt-get install -y chromium` was not possible here")
    return found


def _browser(chromium: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            f"--user-data-dir={profile}", "--virtual-time-budget=5000", *args,
        ],
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip


def probe(chromium: str, report: Path, work: Path) -> dict[str, Any]:
    probed = work / f"probed-{report.name}"
    probed.write_text(report.read_text().replace("<head>", "<head>" + PROBE, 1))
    done = _browser(chromium, work / "profile", "--dump-dom", probed.as_uri())
    match = re.search(r'<pre id="mg-probe">(.*?)</pre>', done.stdout, re.S)
    assert match, f"the probe did not run: {done.stderr[-2000:]}"
    result: dict[str, Any] = json.loads(match.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    return result


def failures(result: dict[str, Any]) -> list[str]:
    found = [f"console/page error: {e}" for e in result["errors"]]
    found += [
        f"table {i} has no size" for i, t in enumerate(result["tables"]) if not t["w"] or not t["h"]
    ]
    found += [
        f"image {i['alt']!r} did not decode"
        for i in result["images"]
        if not i["w"] or not i["complete"]
    ]
    if not result["tables"]:
        found.append("no tables")
    if not result["images"]:
        found.append("no images")
    return found


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from modelguard import zoo
    from modelguard.modelcard import export_model_dir
    from modelguard.robustness.config import EvalConfig
    from modelguard.robustness.evaluate import evaluate_model_dir
    from modelguard.robustness.report import write_outputs

    work = tmp_path_factory.mktemp("report")
    classes = [str(i) for i in range(10)]
    export_model_dir(zoo.digits_mlp(), work / "model", factory="modelguard.zoo:digits_mlp",
                     input_shape=(1, 8, 8), classes=classes, name="browser-check")  # fmt: skip
    config = EvalConfig(attacks=["fgsm", "pgd"], eps=[0.05, 0.1], limit=24, soundness=False)
    result = evaluate_model_dir(work / "model", config)
    outputs = write_outputs(result, work / "out")
    return Path(outputs["html"])


def test_report_renders_in_chromium(chromium: str, report: Path, tmp_path: Path) -> None:
    result = probe(chromium, report, tmp_path)
    assert failures(result) == []
    assert len(result["tables"]) >= 3 and len(result["images"]) >= 2
    shot = tmp_path / "report.png"
    done = _browser(chromium, tmp_path / "profile", "--window-size=1280,2400",
                    f"--screenshot={shot}", report.as_uri())  # fmt: skip
    assert shot.is_file(), done.stderr[-2000:]
    from PIL import Image

    with Image.open(shot) as image:
        assert image.size == (1280, 2400)
        low, high = image.convert("L").getextrema()
    assert high - low > 100, "the screenshot is blank"


def test_probe_catches_a_broken_image_and_a_script_error(
    chromium: str, report: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.html"
    html = report.read_text()
    html = re.sub(
        r'src="data:image/png;base64,[^"]{20}', 'src="data:image/png;base64,AAAA', html, count=1
    )
    html = html.replace("</body>", "<script>undefinedFunction();</script></body>", 1)
    broken.write_text(html)
    found = failures(probe(chromium, broken, tmp_path))
    assert any("did not decode" in f for f in found), found
    assert any("undefinedFunction" in f for f in found), found
