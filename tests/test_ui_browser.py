"""The web app in a real browser: Debian's chromium driven by Playwright, against `golive ui` run as a user runs it.

Each test saves a screenshot of every page it visits under test-artifacts/ui/TEST/.
"""

from __future__ import annotations

import datetime
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest

from conftest import TESTS, free_port

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = TESTS.parent / "test-artifacts" / "ui"

playwright_api = pytest.importorskip("playwright.sync_api")
if not Path(CHROMIUM).exists():
    pytest.skip("Debian's chromium is not installed (make test installs it)", allow_module_level=True)


class UI:
    """`golive ui` in a process of its own."""

    def __init__(self, home: Path, port: int | None = None) -> None:
        self.home, self.port = home, port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(home.parent / f"ui-{time.monotonic_ns()}.log", "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "golive", "ui", "--home", str(home), "--port", str(self.port)],
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            start_new_session=True,
        )
        line = self.proc.stdout.readline()  # printed once it listens
        assert line.startswith(f"golive ui: {self.url}/"), line

    def kill9(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(40)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.log.close()


class Shots:
    def __init__(self, name: str) -> None:
        self.folder = ARTIFACTS / name
        self.folder.mkdir(parents=True, exist_ok=True)
        for old in self.folder.glob("*.png"):
            old.unlink()
        self.n = 0

    def __call__(self, page, what: str) -> None:
        self.n += 1
        page.screenshot(path=str(self.folder / f"{self.n:02d}-{what}.png"), full_page=True)


@pytest.fixture(scope="module")
def mnist_pt(tmp_path_factory) -> Path:
    """The talk's MNIST network, saved as TorchScript: a file a user uploads as it is."""
    import torch

    from zoo import MnistCNN

    path = tmp_path_factory.mktemp("mnist") / "mnist.pt"
    torch.manual_seed(0)
    torch.jit.trace(MnistCNN().eval(), torch.randn(1, 1, 28, 28)).save(str(path))
    return path


@pytest.fixture
def browser():
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def ui(tmp_path):
    server = UI(tmp_path / "home")
    yield server
    server.stop()


def convert_mnist(page, ui: UI, mnist_pt: Path, shot) -> str:
    page.goto(ui.url + "/convert")
    page.set_input_files("#model-file", str(mnist_pt))
    page.wait_for_selector("#model-status:has-text('uploaded')")
    assert page.inner_text("#framework-guess") == "framework: pytorch (guessed from the file)"
    page.fill("#convert\\.inputs", "x:float32[batch,1,28,28]")
    shot(page, "convert-form")
    page.click("#submit")
    page.wait_for_url("**/jobs/*")
    return page.url.rsplit("/", 1)[1]


def start_perf(page, ui: UI, job_id: str, budget: int, shot) -> str:
    page.goto(f"{ui.url}/perf?job={job_id}")
    page.fill("#tune\\.budget", str(budget))
    shot(page, "perf-form")
    page.click("#submit")
    page.wait_for_url("**/jobs/*")
    return page.url.rsplit("/", 1)[1]


def watch_log(page, until: str, timeout: float = 240) -> list[int]:
    """The log's length each time it changed, until the job's state is ``until``."""
    lengths, end = [], time.monotonic() + timeout
    while time.monotonic() < end:
        n = len(page.inner_text("#log"))
        if not lengths or n != lengths[-1]:
            lengths.append(n)
        state = page.inner_text("#state")
        if state == until:
            return lengths
        assert state not in ("failed", "cancelled", "interrupted") or state == until, page.inner_text("#job-error")
        time.sleep(0.1)
    raise AssertionError(f"the job did not reach {until} (state {page.inner_text('#state')})")


def test_convert_watch_visualize_tune_and_download(browser, ui, mnist_pt, tmp_path):
    import golive

    shot = Shots("convert_watch_visualize_tune_and_download")
    context = browser.new_context(accept_downloads=True)
    requests: list[str] = []
    context.on("request", lambda r: requests.append(r.url))
    page = context.new_page()
    page.clock.install(time=datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC))

    job_id = convert_mnist(page, ui, mnist_pt, shot)
    watch_log(page, "succeeded")
    page.wait_for_selector("#verify-table")
    assert page.inner_text("#verify-verdict") == "passed"
    assert "export: exporting to ONNX" in page.inner_text("#log")
    shot(page, "convert-job")

    page.goto(ui.url + "/jobs")
    assert page.inner_text(f"tr[data-job='{job_id}'] .state") == "succeeded"
    shot(page, "job-monitor")

    page.goto(ui.url + "/visualize")
    shot(page, "visualize-pick")
    page.select_option("#model-pick", f"job-{job_id}")
    page.click("text=Show")
    page.wait_for_selector("#summary")
    netron = page.frame_locator("#netron")
    netron.locator("#canvas g.node").first.wait_for(timeout=60000)
    assert netron.locator("#canvas").is_visible()
    for op, n in {"Conv": 2, "Gemm": 2, "LogSoftmax": 1}.items():  # Netron replaces window.eval: no evaluate() here
        assert netron.locator("#canvas g.node", has_text=op).count() == n, op
        assert netron.locator("#canvas g.node", has_text=op).first.is_visible()
    assert not netron.locator("text=Please update").is_visible()
    assert "Conv" in page.inner_text("#ops")
    shot(page, "visualize")

    perf_id = start_perf(page, ui, job_id, 6, shot)
    lengths = watch_log(page, "succeeded")
    assert len([n for n in lengths if n > 0]) >= 3, lengths  # the log grew while the job ran, without reloading the page
    page.wait_for_selector("#tune-summary")
    assert "All candidates, ranked" in page.inner_text("#results")
    results = page.inner_text("#results")
    assert results.index("faster than the baseline") < results.index("Conversion")  # the speed-up and chart first
    assert "golive.load_session(" in page.inner_text("#snippet")
    shot(page, "perf-job")
    with page.expect_download() as download:
        page.click("#best-zip")
    archive = tmp_path / "best.zip"
    download.value.save_as(archive)
    zipfile.ZipFile(archive).extractall(tmp_path / "downloaded")
    session = golive.load_session(tmp_path / "downloaded" / "best")
    x = np.random.default_rng(0).standard_normal((2, 1, 28, 28)).astype(np.float32)
    assert session.run(None, {"x": x})[0].shape == (2, 10)

    page.goto(f"{ui.url}/visualize?model=best-{perf_id}")
    netron.locator("#canvas g.node").first.wait_for(timeout=60000)
    shot(page, "visualize-best")

    # a second, shorter Perf Test of the same model; the Job Monitor sums them up and compares them side by side
    second_id = start_perf(page, ui, job_id, 3, shot)
    watch_log(page, "succeeded")
    page.goto(ui.url + "/jobs")
    assert "2 of 2 Perf Tests succeeded" in " ".join(page.inner_text("#jobs-overview").split())
    assert "fastest so far" in page.inner_text("#top-speedup")
    shot(page, "job-monitor-two-perf-tests")
    page.check(f"input[value='{perf_id}']")
    page.check(f"input[value='{second_id}']")
    page.click("text=Compare selected Perf Tests")
    page.wait_for_selector("#compare-overview")
    assert page.locator("#compare-overview .stat").count() == 2 and page.locator("#compare-overview .winner").count() == 1
    assert page.locator("#compare td.fastest").count() >= 1
    shot(page, "compare")
    hosts = {urlsplit(u).hostname for u in requests if not u.startswith(("data:", "blob:"))}
    assert hosts == {"127.0.0.1"}, sorted(u for u in requests if urlsplit(u).hostname != "127.0.0.1")
    context.close()


def test_cancel_a_running_job(browser, ui, mnist_pt):
    shot = Shots("cancel_a_running_job")
    page = browser.new_page()
    job_id = convert_mnist(page, ui, mnist_pt, shot)
    watch_log(page, "succeeded")
    shot(page, "convert-job")
    start_perf(page, ui, job_id, 300, shot)
    page.wait_for_selector("#state.running")
    page.wait_for_function("document.querySelector('#log').textContent.includes('tune:')")
    shot(page, "running")
    page.click("#cancel")
    page.wait_for_selector("#state.cancelled", timeout=60000)
    assert page.inner_text("#job-error") == "cancelled on request"
    assert page.is_visible("#retry") and not page.is_visible("#cancel")
    shot(page, "cancelled")


def test_a_job_interrupted_by_a_killed_server_completes_on_retry(browser, tmp_path, mnist_pt):
    shot = Shots("interrupted_by_a_killed_server")
    home = tmp_path / "home"
    server = UI(home)
    try:
        page = browser.new_page()
        job_id = convert_mnist(page, server, mnist_pt, shot)
        watch_log(page, "succeeded")
        shot(page, "convert-job")
        perf_id = start_perf(page, server, job_id, 5, shot)
        page.wait_for_function("document.querySelector('#log').textContent.includes('tune:')", timeout=120000)
        shot(page, "running")
        server.kill9()
    finally:
        server.stop()
    server = UI(home, port=server.port)  # started again on the same home
    try:
        page.goto(f"{server.url}/jobs/{perf_id}")
        page.wait_for_selector("#state.interrupted")
        assert "interrupted" in page.inner_text("#job-error")
        shot(page, "interrupted")
        page.click("#retry")
        page.wait_for_selector("#state:not(.interrupted)")
        watch_log(page, "succeeded")
        page.wait_for_selector("#tune-summary")
        assert page.inner_text("#attempt") == "2"
        shot(page, "retried")
    finally:
        server.stop()


def test_profile_a_job_and_see_the_hottest_node(browser, ui, tmp_path):
    """Profile from the job page: a job on the queue; the graph is drawn with the planted dominant MatMul in the
    hottest colour, a click shows its figures, the switch and the Visualize page show it too; nothing leaves 127.0.0.1."""
    from golive.profiling import _HEAT
    from test_profile import _dominant

    shot = Shots("profile_a_job")
    context = browser.new_context()
    requests: list[str] = []
    context.on("request", lambda r: requests.append(r.url))
    page = context.new_page()
    # the Profile action runs at batch 1: a MatMul of 2048 x 2048 weights stays dominant even when the other test
    # process makes one run of a cheap node slow (at 1024 a spike once outweighed it)
    model = _dominant(tmp_path / "dominant.onnx", size=2048)
    page.goto(ui.url + "/convert")
    page.set_input_files("#model-file", str(model))
    page.wait_for_selector("#model-status:has-text('uploaded')")
    page.click("#submit")
    page.wait_for_url("**/jobs/*")
    watch_log(page, "succeeded")
    page.wait_for_selector("#profile-job")
    shot(page, "converted")
    converted = page.url
    page.click("#profile-job")
    page.wait_for_url(lambda url: url != converted)
    watch_log(page, "succeeded")
    page.wait_for_selector("#profile .pnode")
    hot = page.locator(".pnode[data-name='big_matmul']")
    assert hot.get_attribute("data-fill") == _HEAT[-1]  # the hottest colour is the dominant node's
    fills = page.locator(".pnode").evaluate_all("nodes => nodes.map(n => n.dataset.fill)")
    assert fills.count(_HEAT[-1]) == 1
    hot.click()
    panel = page.inner_text("#profile-panel")
    assert "big_matmul (MatMul)" in panel and "% of the time" in panel and "ms mean" in panel
    shot(page, "profile")
    profiled_job = page.url.rsplit("/", 1)[1]
    page.goto(f"{ui.url}/visualize?model=job-{profiled_job}")
    page.wait_for_selector("#profile .pnode[data-name='big_matmul']")
    shot(page, "visualize-profile")
    hosts = {urlsplit(u).hostname for u in requests if not u.startswith(("data:", "blob:"))}
    assert hosts == {"127.0.0.1"}, sorted(u for u in requests if urlsplit(u).hostname != "127.0.0.1")
    context.close()


def test_every_page_on_a_fresh_home_says_what_to_do_first(browser, ui):
    """Empty states on a new home, screenshotted page by page for a reviewer: each says what to do first."""
    shot = Shots("every_page_fresh")
    page = browser.new_page()
    expected = {
        "/jobs": ("#empty-jobs", "No jobs yet"),
        "/perf": ("#empty-perf", "No converted model yet"),
        "/visualize": ("#empty-visualize", "No model to show yet"),
    }
    for url, (selector, text) in expected.items():
        page.goto(ui.url + url)
        assert text in page.inner_text(selector)
        shot(page, url.strip("/"))
    page.goto(ui.url + "/convert")
    assert page.locator("details summary", has_text="Advanced settings").is_visible()
    assert not page.locator("#convert\\.opset").is_visible()  # the advanced fields wait behind their summary
    shot(page, "convert")
    # the stylesheet is golive's own, served from this server: no external font or CDN
    assert page.evaluate("getComputedStyle(document.querySelector('#submit')).backgroundColor") == "rgb(31, 95, 174)"


def test_convert_waits_for_its_upload_and_shows_a_hugging_face_task(browser, ui, tmp_path):
    """Convert clicked while the model is still uploading: the form says so, waits, and submits the upload (it
    answered "no model given" before). The upload, a Hugging Face folder as a .zip, shows the task golive guessed."""
    from hf_zoo import hf_folder

    shot = Shots("convert_waits_for_its_upload")
    folder = hf_folder("vit", tmp_path / "src")
    archive = tmp_path / "vit.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for p in folder.iterdir():
            z.write(p, f"vit/{p.name}")
    page = browser.new_page()
    held = []
    page.route("**/api/uploads*", lambda route: held.append(route))  # the upload waits until the test lets it go
    page.goto(ui.url + "/convert")
    page.set_input_files("#model-file", str(archive))
    page.wait_for_selector("#model-status:has-text('uploading')")
    page.click("#submit")
    page.wait_for_selector("#form-error:has-text('waiting for the upload')")
    shot(page, "waiting-for-upload")
    assert page.url.endswith("/convert") and held  # nothing submitted yet
    held[0].continue_()
    page.wait_for_url("**/jobs/*")
    watch_log(page, "succeeded")
    page.wait_for_selector("#task")
    assert "image-classification" in page.inner_text("#task")
    shot(page, "converted")
    page.goto(ui.url + "/convert")
    page.unroute("**/api/uploads*")
    page.set_input_files("#model-file", str(archive))
    page.wait_for_selector("#model-status:has-text('uploaded')")
    guess = page.inner_text("#framework-guess")
    assert "Hugging Face folder: ViTForImageClassification: task image-classification" in " ".join(guess.split()), guess
    first = page.eval_on_selector("select[name='convert.task']", "select => select.options[0].textContent")
    assert first == "(default: guessed image-classification)", first
    shot(page, "task-guessed")
