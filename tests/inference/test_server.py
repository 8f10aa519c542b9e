"""`vptune serve`, as a user runs it: the real server in a subprocess on a free loopback port, every route and
every error, batching of concurrent requests for different tasks, the API key, graceful shutdown, and the page
in a real headless browser."""
import base64
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from conftest import TINY_VIT  # noqa: E402

from vptune import MultiTaskModel, PromptConfig, build_model, create_backbone, save_task  # noqa: E402
from vptune.data import Sample, read_image  # noqa: E402

KEY = "s3cret"
WAIT_MS = 400  # long enough that requests sent together share a batch on a slow CI machine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def tasks(workspace, tmp_path_factory):
    backbone = create_backbone(TINY_VIT, img_size=32, weights=str(workspace / "tiny.safetensors"))
    folder = tmp_path_factory.mktemp("tasks")
    kinds = {"colours": ("vpt-deep", PromptConfig(num_tokens=4)), "shallow": ("vpt-shallow", PromptConfig(num_tokens=3)),
             "late": ("vpt-deep", PromptConfig(num_tokens=2, layers="last 2"))}
    dirs = {}
    for k, (name, (method, prompt)) in enumerate(kinds.items()):
        torch.manual_seed(k)
        model = build_model(method, backbone, prompt, 3, class_names=["blue", "green", "red"])
        dirs[name] = save_task(model, folder / name)
    return dirs


class Server:
    def __init__(self, tasks, *flags, env=None, port=None):
        """`port` None: a free one chosen here; 0: the server's own choice, read from the line it prints."""
        self.port = free_port() if port is None else port
        args = [sys.executable, "-m", "vptune", "serve", "--port", str(self.port), *flags]
        for name, directory in tasks.items():
            args += ["--task", f"{name}={directory}"]
        self.process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                        env={**os.environ, **(env or {})})
        if self.port == 0:
            self.banner = self.process.stdout.readline()
            self.port = int(self.banner.rsplit(":", 1)[1])
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited: {self.process.communicate()}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise AssertionError("server did not start in 60 s")

    def stop(self) -> tuple[int, str, str]:
        self.process.send_signal(signal.SIGTERM)
        out, err = self.process.communicate(timeout=60)
        return self.process.returncode, out, err


@pytest.fixture(scope="module")
def server(tasks):
    server = Server(tasks, "--max-wait-ms", str(WAIT_MS), "--max-batch", "8", "--max-pending", "3",
                    "--max-upload-mb", "0.05", "--max-pixels", "5000", env={"VPTUNE_API_KEY": KEY})
    yield server
    if server.process.poll() is None:
        server.stop()


AUTH = {"Authorization": f"Bearer {KEY}"}


def png_bytes(workspace, name="red/0.png") -> bytes:
    return (workspace / "images" / name).read_bytes()


def post_image(server, task, image, **kwargs):
    return httpx.post(f"{server.url}/v1/tasks/{task}/predict", files={"image": ("x.png", image, "image/png")},
                      headers=AUTH, timeout=30, **kwargs)


def expected_top(tasks, workspace, task, name="red/0.png"):
    multi = MultiTaskModel(tasks={task: tasks[task]})
    image = multi.transform()(read_image(Sample(workspace / "images" / name, -1, "test")))
    return multi.predict(image[None], [task], top_k=3)[0]


def test_predictions_match_the_library_through_every_upload_form(server, tasks, workspace):
    want = expected_top(tasks, workspace, "colours")
    got = post_image(server, "colours", png_bytes(workspace), params={"top_k": 3})
    assert got.status_code == 200, got.text
    assert [g["class"] for g in got.json()["top"]] == [g["class"] for g in want]
    assert all(abs(a["probability"] - b["probability"]) < 1e-5 for a, b in zip(got.json()["top"], want))

    encoded = base64.b64encode(png_bytes(workspace)).decode()
    as_json = httpx.post(f"{server.url}/v1/tasks/colours/predict", json={"image": encoded, "top_k": 2},
                         headers=AUTH, timeout=30)
    assert as_json.status_code == 200, as_json.text
    assert [g["class"] for g in as_json.json()["top"]] == [g["class"] for g in want[:2]]

    for content_type in ("image/png", "application/octet-stream"):  # the file itself as the body
        raw = httpx.post(f"{server.url}/v1/tasks/colours/predict", content=png_bytes(workspace), timeout=30,
                         headers={**AUTH, "Content-Type": content_type})
        assert raw.status_code == 200, raw.text
        assert [g["class"] for g in raw.json()["top"]] == [g["class"] for g in want]  # the server's top_k, 3
    form_k = post_image(server, "colours", png_bytes(workspace), data={"top_k": "2"})
    assert [g["class"] for g in form_k.json()["top"]] == [g["class"] for g in want[:2]]


def test_health_tasks_and_the_api_key(server):
    health = httpx.get(server.url + "/health")
    assert health.json()["status"] == "ok" and health.json()["auth"] is True
    assert health.json()["max_wait_ms"] == health.json()["quiet_ms"] == WAIT_MS  # a fixed --max-wait-ms
    assert httpx.get(server.url + "/v1/tasks").status_code == 401
    assert httpx.get(server.url + "/v1/tasks", headers={"Authorization": "Bearer nope"}).status_code == 401
    listing = httpx.get(server.url + "/v1/tasks", headers=AUTH).json()["tasks"]
    assert {t["name"] for t in listing} == {"colours", "shallow", "late"}
    colours = next(t for t in listing if t["name"] == "colours")
    assert colours["classes"] == ["blue", "green", "red"] and colours["image_size"] == [32, 32]
    assert colours["prompt"]["num_tokens"] == 4 and colours["method"]["name"] == "vpt-deep"


def test_only_the_documented_routes_answer_without_the_key(server):
    """Every route of the API's own schema needs the key; the open ones are exactly those the README lists."""
    from vptune.inference.server import OPEN_PATHS

    schema = httpx.get(server.url + "/openapi.json").json()
    for path, operations in schema["paths"].items():
        for verb in operations:
            url = server.url + path.replace("{name}", "colours")
            status = httpx.request(verb.upper(), url, timeout=30).status_code
            assert (status != 401) == (path in OPEN_PATHS), (verb, path, status)
    for path in OPEN_PATHS:
        assert httpx.get(server.url + path).status_code == 200, path
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    assert f"every route but {', '.join(f'`{p}`' for p in OPEN_PATHS)}" in readme


def test_port_0_prints_the_port_bound_and_a_hang_up_mid_upload_is_one_log_line(tasks, workspace):
    server = Server({"colours": tasks["colours"]}, port=0)
    try:
        assert server.port > 0 and f"http://127.0.0.1:{server.port}" in server.banner
        with socket.create_connection(("127.0.0.1", server.port)) as raw:  # promises 100 kB, sends 10, hangs up
            raw.sendall(b"POST /v1/tasks/colours/predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; "
                        b"boundary=b\r\nContent-Length: 100000\r\n\r\n--b\r\nxxxx")
            time.sleep(0.5)
        assert post_image(server, "colours", png_bytes(workspace)).status_code == 200  # still serving
    finally:
        code, out, err = server.stop()
    assert "Traceback" not in err, err
    logged = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert [entry["status"] for entry in logged if entry["path"] == "/v1/tasks/colours/predict"] == [499, 200]


def test_a_taken_port_is_one_line_before_the_tasks_load(tasks):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "vptune", "serve", "--port", str(port), "--task",
                               f"colours={tasks['colours']}"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and f"cannot listen on 127.0.0.1:{port}" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def _big_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (100, 100), "white").save(buffer, format="PNG")  # 10,000 pixels: over --max-pixels 5000
    return buffer.getvalue()


@pytest.mark.parametrize("case,status,reason", [
    ("unknown task", 404, "no task 'nope'"),
    ("not an image", 400, "cannot read image upload"),
    ("truncated image", 400, "cannot read image upload"),
    ("too many pixels", 400, "over the limit of 5,000"),
    ("no image field", 400, "no file field 'image'"),
    ("bad JSON", 400, "JSON body must be"),
    ("plain text", 415, "multipart/form-data"),
    ("too large", 413, "over the limit of 0.05 MB"),
    ("bad top_k", 400, "top_k must be a positive integer"),
    # a typo'd or repeated field would be silently ignored: the client would get what it did not ask for
    ("top_k not a number", 400, "top_k: Input should be a valid integer"),
    ("unknown query parameter", 400, "unknown query parameter(s) ['topk']"),
    ("unknown form field", 400, "unknown form field(s) ['topk']"),
    ("form top_k not a number", 400, "top_k must be a positive integer (how many classes to list), got 'many'"),
    ("form top_k a file", 400, "top_k must be a positive integer"),
    ("unknown JSON field", 400, "unknown JSON field(s) ['topk']"),
    ("two images", 400, "send one image per request; this body has 2 'image' fields"),
    ("bad base64", 400, "image is not valid base64"),
])
def test_bad_requests_get_their_status_and_reason_and_the_server_goes_on(server, workspace, case, status, reason):
    png = png_bytes(workspace)
    url = f"{server.url}/v1/tasks/colours/predict"
    send = {
        "unknown task": lambda: post_image(server, "nope", png),
        "not an image": lambda: post_image(server, "colours", b"hello, I am text"),
        "truncated image": lambda: post_image(server, "colours", png[:len(png) // 2]),
        "too many pixels": lambda: post_image(server, "colours", _big_png()),
        "no image field": lambda: httpx.post(url, files={"picture": ("x.png", png)}, headers=AUTH),
        "bad JSON": lambda: httpx.post(url, content=b"{not json", headers={**AUTH, "Content-Type": "application/json"}),
        "plain text": lambda: httpx.post(url, content=png, headers={**AUTH, "Content-Type": "text/plain"}),
        "too large": lambda: post_image(server, "colours", os.urandom(60_000)),
        "bad top_k": lambda: post_image(server, "colours", png, params={"top_k": 0}),
        "top_k not a number": lambda: post_image(server, "colours", png, params={"top_k": "many"}),
        "unknown query parameter": lambda: post_image(server, "colours", png, params={"topk": 2}),
        "unknown form field": lambda: post_image(server, "colours", png, data={"topk": "2"}),
        "form top_k not a number": lambda: post_image(server, "colours", png, data={"top_k": "many"}),
        "form top_k a file": lambda: httpx.post(url, files=[("image", ("a.png", png)), ("top_k", ("k.txt", b"3"))],
                                                headers=AUTH),
        "unknown JSON field": lambda: httpx.post(url, json={"image": base64.b64encode(png).decode(), "topk": 2},
                                                 headers=AUTH),
        "two images": lambda: httpx.post(url, files=[("image", ("a.png", png)), ("image", ("b.png", png))],
                                         headers=AUTH),
        "bad base64": lambda: httpx.post(url, json={"image": "not base64!"}, headers=AUTH),
    }[case]
    response = send()
    assert response.status_code == status, response.text
    assert reason in response.json()["detail"]
    assert post_image(server, "colours", png).status_code == 200  # still serving


def test_small_and_large_uploads_both_predict_as_the_library(tasks, tmp_path):
    """Small images are decoded on the event loop, large ones in a worker thread: both give the library's answer."""
    from fastapi.testclient import TestClient

    from vptune.inference.routes import INLINE_DECODE_PIXELS
    from vptune.inference.server import ServeSettings, create_app

    model = MultiTaskModel(tasks={"colours": tasks["colours"]})
    generator = torch.Generator().manual_seed(0)
    with TestClient(create_app(model, ServeSettings())) as client:
        health = client.get("/health").json()  # the automatic wait, from the warm-up batch's time
        assert health["max_wait_ms"] > 0 and abs(5 * health["quiet_ms"] - health["max_wait_ms"]) < 0.1
        for side in (24, int(INLINE_DECODE_PIXELS ** 0.5) + 1):
            pixels = torch.randint(0, 256, (side, side, 3), generator=generator, dtype=torch.uint8).numpy()
            path = tmp_path / f"{side}.png"
            Image.fromarray(pixels).save(path)
            want = model.predict(model.transform()(read_image(Sample(path, -1, "test")))[None], ["colours"], 3)[0]
            got = client.post("/v1/tasks/colours/predict?top_k=3", files={"image": ("x.png", path.read_bytes())})
            assert got.status_code == 200, got.text
            assert [g["class"] for g in got.json()["top"]] == [g["class"] for g in want]
            assert all(abs(a["probability"] - b["probability"]) < 1e-5 for a, b in zip(got.json()["top"], want))


def test_the_settings_device_and_precision_are_the_models_and_health_reports_them(tasks, workspace):
    """bf16 asked for is bf16 served (and said by /health); settings that name another than the model's are refused."""
    from fastapi.testclient import TestClient

    from vptune import ConfigError
    from vptune.inference.server import ServeSettings, create_app

    model = MultiTaskModel(tasks={"colours": tasks["colours"]}, device="cpu", precision="bf16")
    with TestClient(create_app(model, ServeSettings(device="cpu", precision="bf16"))) as client:
        health = client.get("/health").json()
        assert (health["device"], health["precision"]) == ("cpu", "bf16")
        got = client.post("/v1/tasks/colours/predict?top_k=3", files={"image": ("x.png", png_bytes(workspace))})
        assert got.status_code == 200, got.text
    # the library in fp32, class by class (all 3 classes listed): bf16 moves each probability a little, which may
    # swap two that are nearly equal
    want = {g["class"]: g["probability"] for g in expected_top(tasks, workspace, "colours")}
    served = {g["class"]: g["probability"] for g in got.json()["top"]}
    assert served.keys() == want.keys() and all(abs(served[c] - want[c]) < 0.01 for c in want), (served, want)

    fp32 = MultiTaskModel(tasks={"colours": tasks["colours"]}, device="cpu", precision="fp32")
    with pytest.raises(ConfigError, match="precision bf16 but the model runs in fp32"):
        create_app(fp32, ServeSettings(precision="bf16"))
    with TestClient(create_app(fp32, ServeSettings())) as client:  # auto: whatever the model was built with
        assert client.get("/health").json()["precision"] == "fp32"


def _concurrently(calls):
    results = [None] * len(calls)

    def run(i):
        results[i] = calls[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    return threads, results


def test_concurrent_requests_for_different_tasks_share_one_batch(server, tasks, workspace):
    png = png_bytes(workspace, "green/1.png")
    threads, results = _concurrently([lambda t=t: post_image(server, t, png) for t in ("colours", "shallow", "late")])
    for t in threads:
        t.join()
    assert [r.status_code for r in results] == [200, 200, 200]
    assert [r.headers["x-batch-size"] for r in results] == ["3", "3", "3"]
    for task, response in zip(("colours", "shallow", "late"), results):
        want = expected_top(tasks, workspace, task, "green/1.png")
        assert abs(response.json()["top"][0]["probability"] - want[0]["probability"]) < 1e-5


def test_a_full_queue_answers_503_with_retry_after(server, workspace):
    png = png_bytes(workspace)
    threads, results = _concurrently([lambda: post_image(server, "colours", png) for _ in range(3)])
    deadline = time.monotonic() + 10
    while httpx.get(server.url + "/health").json()["pending"] < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    busy = post_image(server, "colours", png)
    for t in threads:
        t.join()
    assert busy.status_code == 503 and busy.headers["retry-after"] == "1", busy.text
    assert [r.status_code for r in results] == [200, 200, 200]


def browser():
    """A headless Chromium driven by selenium (skipped where there is none)."""
    binary = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver_path = shutil.which("chromedriver")
    if binary is None or driver_path is None:
        pytest.skip("no Chromium and chromedriver on this machine (.ci/run installs Debian's)")
    webdriver = pytest.importorskip("selenium.webdriver")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver_path))


def upload_on_the_page(driver, url, task, tasks, image):
    """Open the page, give the key, choose `task` once the `tasks` are listed, upload `image`."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    driver.get(url + "/")
    key = WebDriverWait(driver, 20).until(lambda d: d.find_element(By.ID, "key") if
                                          d.find_element(By.ID, "key-box").is_displayed() else None)
    key.send_keys(KEY)
    driver.execute_script("document.getElementById('key').dispatchEvent(new Event('change'))")
    WebDriverWait(driver, 20).until(lambda d: len(Select(d.find_element(By.ID, "task")).options) == tasks)
    Select(driver.find_element(By.ID, "task")).select_by_value(task)
    upload = driver.find_element(By.ID, "file")
    driver.execute_script("arguments[0].hidden = false", upload)
    upload.send_keys(str(image))


def test_the_page_works_in_a_real_browser(server, workspace):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = browser()
    try:
        upload_on_the_page(driver, server.url, "colours", 3, workspace / "images" / "red" / "0.png")
        rows = WebDriverWait(driver, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#result .row"))
        shown = [row.find_element(By.CLASS_NAME, "name").text for row in rows]
        api = post_image(server, "colours", png_bytes(workspace)).json()["top"]
        assert shown == [g["class"] for g in api]
        width = rows[0].find_element(By.CLASS_NAME, "bar").value_of_css_property("width")
        assert float(width.removesuffix("px")) > 0
        assert driver.find_element(By.ID, "error").text == ""
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def mixed_server(tasks, workspace, tmp_path_factory):
    """A classification task and a segmentation task on one backbone."""
    backbone = create_backbone(TINY_VIT, img_size=32, weights=str(workspace / "tiny.safetensors"))
    torch.manual_seed(5)
    segmenter = build_model("vpt-deep", backbone, PromptConfig(num_tokens=4), 3, class_names=["ground", "sky", "sea"],
                            segmentation_head="linear")
    with torch.no_grad():  # a head that tells the pixels apart (a fresh one's BatchNorm statistics are 0 and 1)
        segmenter.head.classifier.weight.normal_(0, 1.0)
    dirs = {"colours": tasks["colours"], "scene": save_task(segmenter, tmp_path_factory.mktemp("seg") / "scene")}
    server = Server(dirs, "--max-wait-ms", str(WAIT_MS), "--max-batch", "8", env={"VPTUNE_API_KEY": KEY})
    yield server, dirs
    if server.process.poll() is None:
        server.stop()


def decoded_mask(answer: dict):
    import numpy as np

    image = Image.open(io.BytesIO(base64.b64decode(answer["mask"]["png_base64"])))
    assert image.mode == "P"  # a palette PNG: its pixels are the class indices
    return np.asarray(image)


def test_a_segmentation_task_answers_with_its_mask_at_the_uploads_size(mixed_server, workspace, tmp_path):
    from vptune.inference.mask_predictor import MaskPredictor

    server, dirs = mixed_server
    upload = tmp_path / "wide.png"
    Image.open(workspace / "images" / "red" / "0.png").resize((50, 30)).save(upload)
    answer = post_image(server, "scene", upload.read_bytes())
    assert answer.status_code == 200, answer.text
    body = answer.json()
    mask = decoded_mask(body)
    assert mask.shape == (30, 50) == (body["mask"]["height"], body["mask"]["width"])
    want = MaskPredictor(MultiTaskModel(tasks={"scene": dirs["scene"]}).tasks["scene"]).masks(
        [read_image(Sample(upload, -1, "test"))])[0]
    assert (mask == want).all()  # the library's mask for the same file (one transform for predict and serve)
    shares = {row["class"]: row["share"] for row in body["classes"]}
    assert shares == pytest.approx({name: float((mask == k).mean()) for k, name in enumerate(["ground", "sky", "sea"])
                                    if (mask == k).any()})
    listing = {t["name"]: t["task"] for t in httpx.get(server.url + "/v1/tasks", headers=AUTH).json()["tasks"]}
    assert listing == {"colours": "classification", "scene": "segmentation"}
    for asked in (dict(params={"top_k": 3}), dict(data={"top_k": "3"})):  # meaningless for a mask: said, not ignored
        refused = post_image(server, "scene", upload.read_bytes(), **asked)
        assert refused.status_code == 400 and "segmentation task" in refused.json()["detail"], refused.text


def test_classification_and_segmentation_requests_share_one_batch(mixed_server, tasks, workspace):
    server, _ = mixed_server
    png = png_bytes(workspace, "green/1.png")
    threads, results = _concurrently([lambda t=t: post_image(server, t, png) for t in ("colours", "scene")])
    for t in threads:
        t.join()
    assert [r.status_code for r in results] == [200, 200], [r.text for r in results]
    assert [r.headers["x-batch-size"] for r in results] == ["2", "2"]
    want = expected_top(tasks, workspace, "colours", "green/1.png")
    assert [g["class"] for g in results[0].json()["top"]] == [g["class"] for g in want][:len(results[0].json()["top"])]
    assert decoded_mask(results[1].json()).shape == (36, 36)


def test_the_page_shows_a_segmentation_tasks_mask_over_the_image(mixed_server, workspace, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    server, _ = mixed_server
    upload = tmp_path / "wide.png"
    Image.open(workspace / "images" / "red" / "0.png").resize((50, 30)).save(upload)
    driver = browser()
    try:
        upload_on_the_page(driver, server.url, "scene", 2, upload)
        shown = WebDriverWait(driver, 30).until(  # the overlay, or the page's error line
            lambda d: d.find_elements(By.CSS_SELECTOR, "#result canvas") or d.find_element(By.ID, "error").text)
        assert not isinstance(shown, str), shown
        canvas = shown[0]
        assert (canvas.get_attribute("width"), canvas.get_attribute("height")) == ("50", "30")
        shown = [row.find_element(By.CLASS_NAME, "name").text for row in driver.find_elements(By.CSS_SELECTOR,
                                                                                              "#result .row")]
        api = post_image(server, "scene", upload.read_bytes()).json()["classes"]
        assert shown == [row["class"] for row in api]
        painted = driver.execute_script(  # the overlay is drawn: not the image alone, not blank
            "const c = arguments[0].getContext('2d').getImageData(0, 0, 50, 30).data;"
            "let sum = 0; for (let i = 0; i < c.length; i += 4) sum += c[i] + c[i + 1] + c[i + 2]; return sum;",
            canvas)
        assert painted > 0
        assert driver.find_element(By.ID, "error").text == ""
    finally:
        driver.quit()


def test_graceful_shutdown_answers_the_requests_in_flight(server, workspace):
    """Last in this module: it stops the server. (Its own refused request: under xdist the module's other tests
    may run in another worker, with another server.)"""
    assert post_image(server, "nope", png_bytes(workspace)).status_code == 404
    threads, results = _concurrently([lambda: post_image(server, "colours", png_bytes(workspace))])
    deadline = time.monotonic() + 10
    while httpx.get(server.url + "/health").json()["pending"] < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    code, out, err = server.stop()  # SIGTERM while the request waits for its batch
    threads[0].join()
    assert results[0].status_code == 200
    assert code in (0, -signal.SIGTERM), err  # uvicorn re-raises the signal once it has shut down cleanly
    logged = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    statuses = {(entry["path"], entry["status"]) for entry in logged}
    assert ("/v1/tasks/colours/predict", 200) in statuses and ("/v1/tasks/nope/predict", 404) in statuses
    assert "serving 3 task(s)" in out
