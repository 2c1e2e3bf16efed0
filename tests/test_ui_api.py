"""The web app's routes through FastAPI's test client: real job store, real workers, real run folders.

Every refusal the app makes is checked with the status and message it answers with.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

from conftest import relu_onnx

pytest.importorskip("fastapi")

from fastapi.testclient import TestClient

from golive import jobs
from golive.web import Settings, create_app

BASE = "http://127.0.0.1:8800"
SAME_ORIGIN = {"origin": BASE}


def client(home: Path, **settings) -> TestClient:
    return TestClient(create_app(Settings(home=home, **settings)), base_url=BASE)


def upload(c: TestClient, name: str, data: bytes, purpose: str = "model"):
    return c.post(f"/api/uploads?name={name}&purpose={purpose}", content=data, headers=SAME_ORIGIN)


def uploads_left(home: Path) -> list[str]:
    root = home / "uploads"
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    """A home with a converted ONNX job and two Perf Test jobs of it (different budgets), run by a real worker."""
    home = tmp_path_factory.mktemp("ui") / "home"
    c = client(home)
    model = relu_onnx(tmp_path_factory.mktemp("src") / "relu.onnx")
    data = tmp_path_factory.mktemp("data") / "x.npz"
    np.savez(data, x=np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32))
    up = upload(c, "relu.onnx", model.read_bytes()).json()
    assert up["framework"] == "onnx"
    dup = upload(c, "x.npz", data.read_bytes(), "data").json()
    r = c.post(
        "/api/jobs/convert",
        json={"model": {"upload": up["id"]}, "data": {"upload": dup["id"]}, "verify": {"dim_sizes": "batch=2,5"}},
        headers=SAME_ORIGIN,
    )
    assert r.status_code == 201, r.text
    convert_id = r.json()["id"]
    jobs.run_worker(home=home, exit_when_idle=True)
    assert jobs.get(convert_id, home=home).state == "succeeded"
    perf = []
    for budget in ("2", "3"):
        r = c.post("/api/jobs/perf", json={"job": convert_id, "tune": {"budget": budget, "transforms": []}}, headers=SAME_ORIGIN)
        assert r.status_code == 201, r.text
        perf.append(r.json()["id"])
        jobs.run_worker(home=home, exit_when_idle=True)  # one at a time: both tune the same convert folder
    assert [jobs.get(p, home=home).state for p in perf] == ["succeeded", "succeeded"]
    return {"home": home, "convert": convert_id, "perf": perf, "client": c}


# ---------------------------------------------------------------- pages and routes


def test_every_page_renders(done):
    c, cid, pid = done["client"], done["convert"], done["perf"][0]
    pages = {
        "/jobs": "Job Monitor",
        "/convert": "Convert",
        "/perf": "Perf Test",
        "/visualize": "Model Visualize",
        f"/jobs/{cid}": "Verification",
        f"/jobs/{pid}": "Tune report",
        f"/visualize?model=job-{cid}": "Operators",
        f"/visualize?model=best-{pid}": "Operators",
        f"/perf?job={cid}": cid,
    }
    for url, text in pages.items():
        r = c.get(url)
        assert r.status_code == 200 and text in r.text, url
    assert c.get("/", follow_redirects=False).headers["location"] == "/jobs"


def test_perf_test_from_the_menu_preselects_the_newest_converted_model(done):
    import re

    c, cid = done["client"], done["convert"]
    page = c.get("/perf").text  # no ?job=: the menu's link
    chosen = re.findall(r'<option value="([0-9a-f]+)" selected>', page)
    assert chosen == [cid]
    assert '<option value="">(upload an ONNX model instead)</option>' in page  # still offered


def test_the_form_fields_come_from_the_spec_declarations(done):
    from golive.spec import ConvertOptions, TuneOptions, help_for

    c = done["client"]
    convert, perf = c.get("/convert").text, c.get("/perf").text
    for field in ("inputs", "dynamic", "opset", "exporter"):
        assert help_for(ConvertOptions, field).replace("'", "&#39;") in convert
    for field in ("budget", "objective", "transforms", "fixed_shape"):
        assert help_for(TuneOptions, field).replace("'", "&#39;") in perf
    assert 'value="auto"' in perf  # TuneOptions' default budget, not a second copy of it
    assert 'value="int8_dynamic"' in perf  # the transform registry


def test_job_page_shows_the_verify_table_and_downloads(done):
    c, cid = done["client"], done["convert"]
    page = c.get(f"/jobs/{cid}").text
    assert 'id="verify-table"' in page and "passed" in page
    info = c.get(f"/api/jobs/{cid}").json()
    assert info["state"] == "succeeded" and info["kind"] == "convert" and info["attempts"][0]["state"] == "succeeded"
    model = c.get(f"/jobs/{cid}/files/model.onnx")
    assert model.status_code == 200 and model.content == (Path(info["run_dir"]) / "model.onnx").read_bytes()
    assert c.get(f"/jobs/{cid}/files/golive.json").json()["framework"] == "onnx"
    job_json = c.get(f"/jobs/{cid}/files/job.json").json()
    assert job_json["source"].endswith("model.onnx") and job_json.get("tune") is None  # its Perf Tests wrote elsewhere
    assert "attempt 1 of job" in c.get(f"/jobs/{cid}/log").text
    summary = c.get(f"/api/models/job-{cid}/summary").json()
    assert summary["op_types"] == {"Relu": 1} and summary["inputs"][0]["shape"] == ["batch", 4]
    assert c.get(f"/models/job-{cid}/model.onnx").content == model.content


def test_perf_job_shows_the_report_and_best_zip_loads(done, tmp_path):
    import golive

    c, pid = done["client"], done["perf"][0]
    page = c.get(f"/jobs/{pid}").text
    for part in ("Tune report", "All candidates, ranked", "<svg", "Chosen session settings", "golive.load_session("):
        assert part in page
    report = c.get(f"/jobs/{pid}/files/report.json").json()
    assert report["best"]["status"] == "passed"
    z = c.get(f"/jobs/{pid}/best.zip")
    assert z.status_code == 200 and z.headers["content-type"] == "application/zip"
    zipfile.ZipFile(io.BytesIO(z.content)).extractall(tmp_path)
    session = golive.load_session(tmp_path / "best")
    x = np.array([[-1, 2, -3, 4]], np.float32)
    np.testing.assert_array_equal(session.run(None, {"x": x})[0], np.maximum(x, 0))


def test_events_stream_the_log_progress_and_end(done):
    c, cid = done["client"], done["convert"]
    with c.stream("GET", f"/api/jobs/{cid}/events") as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        text = "".join(r.iter_text())
    events = [block.split("\n") for block in text.strip().split("\n\n")]
    kinds = [lines[0].removeprefix("event: ") for lines in events]
    assert kinds[0] == "log" and "progress" in kinds and kinds[-2:] == ["state", "end"]
    assert json.loads(events[-2][1].removeprefix("data: "))["state"] == "succeeded"
    assert "golive.jobs.progress" in json.loads(events[0][1].removeprefix("data: "))


def test_compare_shows_candidates_side_by_side(done):
    c, (a, b) = done["client"], done["perf"]
    page = c.get(f"/compare?job={a}&job={b}").text
    assert f"job {a}" in page and f"job {b}" in page and "budget 2 s" in page and "budget 3 s" in page
    assert page.count(" ★</td>") == 2  # one best per Perf Test
    # headline figures per test, the fastest test marked, each row's fastest cell green
    assert 'id="compare-overview"' in page and page.count('class="stat winner"') == 1 and "<b>fastest</b>" in page
    assert 'class="passed fastest"' in page
    from golive.web.views import _relative  # the bars: latencies, or negated throughputs

    assert _relative(2.0, 4.0) == 0.5 and _relative(-100.0, -50.0) == 0.5 and _relative(2.0, 2.0) == 1.0
    jobs_page = c.get("/jobs").text
    assert 'id="jobs-overview"' in jobs_page and 'id="top-speedup"' in jobs_page
    text = " ".join(re.sub(r"<[^>]+>", "", jobs_page).split())
    assert re.search(r"\b\d+ of \d+ Perf Tests succeeded", text) and re.search(r"\d+ of \d+ conversions? succeeded", text)
    r = c.get(f"/compare?job={a}")
    assert r.status_code == 400 and "two or more" in r.text
    r = c.get(f"/compare?job={a}&job={done['convert']}")
    assert r.status_code == 400 and "has no tune report" in r.text


def test_compare_perf_tests_of_one_upload_but_not_of_two_models(done, tmp_path):
    from onnx import TensorProto, helper, save

    c, home = done["client"], done["home"]
    relu = relu_onnx(tmp_path / "relu.onnx").read_bytes()
    graph = helper.make_graph(
        [helper.make_node("Sigmoid", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
    )
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "sigmoid.onnx")
    ids = []
    for name, data in (("relu.onnx", relu), ("relu.onnx", relu), ("sigmoid.onnx", (tmp_path / "sigmoid.onnx").read_bytes())):
        up = upload(c, name, data).json()
        r = c.post(
            "/api/jobs/perf", json={"model": {"upload": up["id"]}, "tune": {"budget": "2", "transforms": []}}, headers=SAME_ORIGIN
        )
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    jobs.run_worker(home=home, exit_when_idle=True)
    assert [jobs.get(i, home=home).state for i in ids] == ["succeeded"] * 3
    assert c.get(f"/compare?job={ids[0]},{ids[1]}").status_code == 200  # two uploads of one model
    r = c.get(f"/compare?job={ids[0]}&job={ids[2]}")
    assert r.status_code == 400 and "tuned different models" in r.text


def test_cancel_and_retry(done):
    c, home, cid = done["client"], done["home"], done["convert"]
    r = c.post("/api/jobs/perf", json={"job": cid, "tune": {"budget": "3"}}, headers=SAME_ORIGIN)
    queued = r.json()["id"]
    r = c.post(f"/api/jobs/{queued}/cancel", headers=SAME_ORIGIN)
    assert r.status_code == 200 and r.json()["state"] == "cancelled"
    r = c.post(f"/api/jobs/{queued}/retry", headers=SAME_ORIGIN)
    assert r.json()["state"] == "queued"
    c.post(f"/api/jobs/{queued}/cancel", headers=SAME_ORIGIN)
    r = c.post(f"/api/jobs/{cid}/retry", headers=SAME_ORIGIN)
    assert r.status_code == 409 and "only failed, cancelled or interrupted" in r.json()["hint"]
    assert jobs.get(queued, home=home).state == "cancelled"


def test_netron_is_served_offline_and_never_expires(done):
    c = done["client"]
    r = c.get("/netron/index.html")
    assert r.status_code == 200 and 'name="date"' not in r.text and 'name="version"' in r.text
    assert "connect-src 'self'" in r.headers["content-security-policy"]
    assert "consent=" in r.headers["set-cookie"]
    assert c.get("/netron/browser.js").status_code == 200
    assert c.get("/netron/view.js").headers["content-type"].startswith(("text/javascript", "application/javascript"))
    for sneaky in ("/netron//index.html", "/netron/%2e/index.html", "/netron/./index.html"):
        r = c.get(sneaky)
        assert r.status_code == 404 or ('name="date"' not in r.text and "connect-src" in r.headers["content-security-policy"]), (
            sneaky
        )


def test_pages_cannot_be_framed_by_other_sites(done):
    r = done["client"].get("/jobs")
    assert r.headers["x-frame-options"] == "SAMEORIGIN" and "frame-ancestors 'self'" in r.headers["content-security-policy"]


# ---------------------------------------------------------------- refusals


def test_unknown_things_are_404(done):
    c, cid = done["client"], done["convert"]
    for url, text in [
        ("/jobs/ffffffffffff", "no job"),
        ("/api/jobs/ffffffffffff", "no job"),
        (f"/jobs/{cid}/files/secret.txt", "no file"),
        (f"/jobs/{cid}/files/report.json", "has no report.json"),
        (f"/jobs/{cid}/best.zip", "no tuned best/"),
        ("/models/job-../model.onnx", "no model"),
        ("/visualize?model=bogus", "no model"),
        ("/models/upload-0123456789abcdef0123456789abcdef/model.onnx", "no upload"),
    ]:
        r = c.get(url)
        assert r.status_code == 404 and text in r.text, (url, r.status_code, r.text[:200])


def test_host_header_must_name_the_server(tmp_path):
    c = client(tmp_path / "home")
    assert c.get("/jobs", headers={"host": "localhost:8800"}).status_code == 200
    for host in ("evil.example:8800", "127.0.0.1:9999", "attacker.test"):
        r = c.get("/api/jobs", headers={"host": host})
        assert r.status_code == 421 and "does not answer to the host name" in r.json()["error"]


def test_state_changing_requests_need_a_same_origin_origin(tmp_path):
    c = client(tmp_path / "home")
    for headers, text in [
        ({}, "needs an Origin header"),
        ({"origin": "http://evil.example"}, "cross-site request refused"),
        ({"origin": "http://127.0.0.1:9999"}, "cross-site request refused"),
        ({"origin": "null"}, "needs an Origin"),
    ]:
        r = c.post("/api/jobs/convert", json={"model": {"path": "/x"}}, headers=headers)
        assert r.status_code == 403 and text in r.json()["error"]
    assert c.get("/api/jobs").status_code == 200  # reading needs no Origin


def test_a_token_guards_every_request(tmp_path):
    c = client(tmp_path / "home", token="s3cret")
    for url in ("/jobs", "/api/jobs", "/netron/index.html", "/static/app.js"):
        r = c.get(url)
        assert r.status_code == 401 and "needs its token" in r.text, url
    assert c.get("/api/jobs", headers={"authorization": "Bearer wrong"}).status_code == 401
    assert c.get("/api/jobs", headers={"authorization": "Bearer s3cret"}).status_code == 200
    r = c.get("/jobs?token=s3cret")
    assert r.status_code == 200 and "golive_token=s3cret" in r.headers["set-cookie"] and "HttpOnly" in r.headers["set-cookie"]
    assert c.get("/api/jobs").status_code == 200  # the cookie now carries it


def test_binding_beyond_loopback_needs_a_token(tmp_path, cli):
    code, _, err = cli("ui", "--host", "0.0.0.0", "--home", tmp_path / "h")
    assert code == 2 and "needs a token" in err


def test_uploads_refused_leave_nothing_behind(tmp_path):
    home = tmp_path / "home"
    c = client(home, max_upload_mb=0.01)
    cases = [
        ("model.pkl", b"x", 415, "is a pickle"),
        ("model.joblib", b"x", 415, "is a pickle"),
        ("net.py", b"import os", 415, "is code"),
        ("ops.so", b"x", 415, "is code"),
        ("model", b"x", 400, "no file extension"),
        ("empty.onnx", b"", 400, "is empty"),
        ("big.onnx", b"x" * 20000, 413, "over this server's limit"),
        ("evil.zip", zip_bytes({"../escape.txt": b"x"}), 400, "points outside the archive"),
        ("abs.zip", zip_bytes({"/etc/passwd": b"x"}), 400, "points outside the archive"),
        ("bad.zip", b"PK\x03\x04 not really", 400, "cannot unpack"),
        ("a.onnx%00", b"x", 400, "control characters"),
    ]
    for name, data, status, text in cases:
        r = upload(c, name, data)
        assert r.status_code == status and text in r.json()["error"], (name, r.status_code, r.text)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        link = tarfile.TarInfo("model/link")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        t.addfile(link)
    r = upload(c, "linked.tar", buf.getvalue())
    assert r.status_code == 400 and "is not a file or folder" in r.json()["error"]

    def chunks():  # no Content-Length: the limit is enforced while streaming
        for _ in range(20):
            yield b"x" * 1000

    r = c.post("/api/uploads?name=streamed.onnx", content=chunks(), headers=SAME_ORIGIN)
    assert "content-length" not in r.request.headers
    assert r.status_code == 413 and "over this server's limit" in r.json()["error"]
    assert uploads_left(home) == []  # nothing half-written


def test_archive_upload_unpacks_a_model_folder(tmp_path):
    c = client(tmp_path / "home")
    r = upload(c, "bert.zip", zip_bytes({"my-bert/config.json": b"{}", "my-bert/model.safetensors": b"x"}))
    assert r.status_code == 201 and r.json()["kind"] == "folder" and r.json()["framework"] == "pytorch"
    saved = tmp_path / "home" / "uploads" / r.json()["id"] / "folder" / "my-bert" / "config.json"
    assert saved.read_bytes() == b"{}"


def test_trusted_server_accepts_pickles(tmp_path):
    c = client(tmp_path / "home", trust_pickle=True)
    r = upload(c, "model.joblib", b"not really a pickle")
    assert r.status_code == 201 and r.json()["framework"] == "sklearn"


def test_server_paths_only_under_allowed_roots(tmp_path):
    (tmp_path / "allowed").mkdir()
    (tmp_path / "secret").mkdir()
    model = relu_onnx(tmp_path / "allowed" / "relu.onnx")
    relu_onnx(tmp_path / "secret" / "other.onnx")
    (tmp_path / "allowed" / "sneaky.onnx").symlink_to(tmp_path / "secret" / "other.onnx")
    c = client(tmp_path / "home")
    r = c.post("/api/jobs/convert", json={"model": {"path": str(model)}}, headers=SAME_ORIGIN)
    assert r.status_code == 403 and "reads no paths of its own" in r.json()["error"]
    c = client(tmp_path / "home", allow_roots=[tmp_path / "allowed"])
    for path in (
        tmp_path / "secret" / "other.onnx",
        tmp_path / "allowed" / ".." / "secret" / "other.onnx",
        tmp_path / "allowed" / "sneaky.onnx",
    ):
        r = c.post("/api/jobs/convert", json={"model": {"path": str(path)}}, headers=SAME_ORIGIN)
        assert r.status_code == 403 and "not under an allowed root" in r.json()["error"], path
    r = c.post("/api/jobs/convert", json={"model": {"path": str(tmp_path / "allowed" / "none.onnx")}}, headers=SAME_ORIGIN)
    assert r.status_code == 404 and "does not exist" in r.json()["error"]
    r = c.post("/api/jobs/convert", json={"model": {"path": str(model)}}, headers=SAME_ORIGIN)
    assert r.status_code == 201
    r = c.post("/api/jobs/convert", json={"model": {"path": "os.path:join"}}, headers=SAME_ORIGIN)
    assert r.status_code == 403 and "is an import path" in r.json()["error"]
    r = c.post("/api/jobs/convert", json={"model": {"upload": "zz"}}, headers=SAME_ORIGIN)
    assert r.status_code == 404 and "no upload" in r.json()["error"]


def test_bad_settings_say_what_is_wrong(tmp_path):
    c = client(tmp_path / "home")
    up = upload(c, "relu.onnx", relu_onnx(tmp_path / "relu.onnx").read_bytes()).json()
    model = {"upload": up["id"]}
    cases = [
        ({"model": model, "convert": {"opset": "three"}}, 400, "cannot read convert opset"),
        (
            {"model": model, "convert": {"opset": "3"}},
            400,
            "invalid convert settings: opset: Input should be greater than or equal to 7",
        ),
        ({"model": model, "convert": {"exporter": "magic"}}, 400, "invalid convert settings: exporter: Input should be 'auto'"),
        ({"model": model, "convert": {"colour": "red"}}, 400, "unknown ConvertOptions field(s): colour"),
        ({"model": model, "verify": {"dim_sizes": "batch"}}, 400, "cannot read verify dim sizes"),
        ({"model": model, "convert": {"custom_ops": "ops.so"}}, 403, "custom operators run code"),
        ({}, 400, "no model given"),
        ({"model": {"path": "pkg:golive/../../../etc"}}, 400, "the path leaves the package golive"),
        ({"model": {"path": "pkg:os.path/x"}}, 400, "name a top-level installed package"),
        ({"model": model, "pad": "x" * 300_000}, 413, "a form submission is at most 256 KB"),
    ]
    for body, status, text in cases:
        r = c.post("/api/jobs/convert", json=body, headers=SAME_ORIGIN)
        assert r.status_code == status and text in r.json()["error"], (body, r.text)
    r = c.post("/api/jobs/perf", json={"model": model, "tune": {"transforms": ["warp_drive"]}}, headers=SAME_ORIGIN)
    assert r.status_code == 400 and "unknown tune transforms: warp_drive" in r.json()["error"]
    r = c.post("/api/jobs/perf", json={"model": model, "tune": {"metrics": "cosine=high"}}, headers=SAME_ORIGIN)
    assert r.status_code == 400 and "cannot read tune metrics" in r.json()["error"]
    r = c.post("/api/jobs/convert", content=b"not json", headers={**SAME_ORIGIN, "content-type": "application/json"})
    assert r.status_code == 400 and "not JSON" in r.json()["error"]
    assert jobs.list(home=tmp_path / "home") == []


def test_visualize_an_uploaded_onnx_model(tmp_path):
    c = client(tmp_path / "home")
    up = upload(c, "relu.onnx", relu_onnx(tmp_path / "relu.onnx").read_bytes()).json()
    page = c.get(f"/visualize?model=upload-{up['id']}")
    assert page.status_code == 200 and f"/netron/index.html?url=/models/upload-{up['id']}/model.onnx" in page.text
    assert "Relu" in page.text and "[batch, 4]" in page.text
    data = upload(c, "x.npz", b"PK not a model", "data").json()
    r = c.get(f"/visualize?model=upload-{data['id']}")
    assert r.status_code == 400 and "is not an .onnx file" in r.text


def test_a_hugging_face_folder_shows_its_task_and_its_parts(tmp_path):
    """A seq2seq folder uploaded as a .zip: its task before converting; after, each part's inputs, files and model."""
    from hf_zoo import hf_folder

    folder = hf_folder("bart", tmp_path / "src")
    c = client(tmp_path / "home")
    up = upload(c, "bart.zip", zip_bytes({f"bart/{p.name}": p.read_bytes() for p in folder.iterdir()})).json()
    assert up["framework"] == "pytorch" and up["task"] == "text2text-generation", up
    assert "BartForConditionalGeneration" in up["task_text"] and "encoder and a decoder" in up["task_text"]
    r = c.post("/api/jobs/convert", json={"model": {"upload": up["id"]}}, headers=SAME_ORIGIN)
    assert r.status_code == 201, r.text
    job = r.json()["id"]
    jobs.run_worker(home=tmp_path / "home", exit_when_idle=True)
    assert jobs.get(job, home=tmp_path / "home").state == "succeeded", jobs.get(job, home=tmp_path / "home").error
    page = c.get(f"/jobs/{job}").text
    assert "text2text-generation" in page and "part encoder" in page and "part decoder" in page
    assert "past_key_values.0.encoder.key" in page and "greedy generation" in page
    r = c.get(f"/jobs/{job}/files/decoder/model.onnx")
    assert r.status_code == 200 and r.content[:2] and len(r.content) > 10_000
    assert c.get(f"/jobs/{job}/files/nowhere/model.onnx").status_code == 404
    assert "Operators" in c.get(f"/visualize?model=job-{job}.decoder").text
    r = c.get(f"/visualize?model=job-{job}")
    assert r.status_code == 404 and f"job-{job}.decoder" in r.text
