"""The HTML report in headless Chromium (Debian's chromium package): every image loads."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from reports import build_report


PROBE = """<script>window.addEventListener('load', () => {
  const imgs = [...document.images];
  document.body.setAttribute('data-images', imgs.length);
  document.body.setAttribute('data-loaded', imgs.filter(i => i.complete && i.naturalWidth > 0).length);
});</script>"""


def _apt_install() -> subprocess.CompletedProcess:
    return subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "chromium"],
                          capture_output=True, text=True, timeout=900,
                          env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


@pytest.fixture(scope="session")
def chromium() -> str:
    """The chromium binary; installed with apt-get when missing, skipped when that fails."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if shutil.which("apt-get") is None:
        pytest.skip("chromium is not installed and there is no apt-get to install it")
    try:
        proc = _apt_install()
        if proc.returncode != 0:  # a fresh machine may have no package lists yet
            subprocess.run(["apt-get", "update"], capture_output=True, timeout=600)
            proc = _apt_install()
    except (OSError, subprocess.TimeoutExpired) as e:
        pytest.skip(f"could not install chromium with apt-get: {e}")
    found = shutil.which("chromium")
    if proc.returncode != 0 or not found:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [""]
        pytest.skip(f"could not install chromium with apt-get (rc {proc.returncode}): {tail[0]}")
    return found


def test_every_image_loads_in_headless_chromium(tmp_path, run_a, run_b, study_url, chromium):
    out = tmp_path / "out"
    report = build_report([run_a, run_b], out, storage=study_url, study_name="dyno", formats=("html",))
    html = (out / "report.html").read_text()
    probe = out / "probe.html"  # the report itself has no script; a copy carries the check
    probe.write_text(html.replace("</body>", PROBE + "</body>"))
    proc = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu",
                           "--disable-background-networking", "--disable-component-update", "--disable-sync",
                           "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    body = re.search(r"<body[^>]*>", proc.stdout)
    assert body, proc.stdout[:500]
    images = re.search(r'data-images="(\d+)"', body.group(0))
    loaded = re.search(r'data-loaded="(\d+)"', body.group(0))
    assert images and loaded, body.group(0)
    assert int(images.group(1)) == len(report.figures) == 9
    assert int(loaded.group(1)) == len(report.figures)
