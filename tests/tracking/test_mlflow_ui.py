"""The MLflow UI on the store the SLURM recipe wrote: REST API, then the page in Chromium.

`launch/mlflow_ui.sh` serves it on loopback; Debian's chromium and chromedriver (installed by
launch/test.sh) render the experiment page headless, driven by Selenium; nothing is downloaded.
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from conftest import synthetic_sample
from helpers import free_port
from mlflow_server import MlflowServer

pytestmark = pytest.mark.system  # Chromium on the MLflow UI

RUN_NAMES = ["x4-gan", "x4-pretrain", "x8-gan", "x8-pretrain"]
# seconds for the UI to draw: headless Chromium parses MLflow's 4 MB of JavaScript on a loaded
# 2-core machine (another test beside it); only a failing test waits them out
UI_WAIT = 180


@pytest.fixture(scope="module")
def mlflow_server(slurm_recipe, tmp_path_factory):
    log = tmp_path_factory.mktemp("mlflow-server") / "server.log"
    with MlflowServer(slurm_recipe.runs / "mlflow.db", free_port(), log) as server:
        yield server.url


def _get(url: str, endpoint: str, **query: str) -> dict:
    with urllib.request.urlopen(
        f"{url}{endpoint}?{urllib.parse.urlencode(query)}", timeout=30
    ) as r:
        return json.load(r)


def _post(url: str, endpoint: str, body: dict) -> dict:
    request = urllib.request.Request(
        f"{url}{endpoint}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as r:
        return json.load(r)


def _experiment() -> str:
    """The trainer's default name: the preset, then whether the shards are synthetic."""
    return "srgan-celeba-faces128" + ("-synthetic" if synthetic_sample() else "")


def _experiment_id(url: str) -> str:
    found = _get(url, "/api/2.0/mlflow/experiments/get-by-name", experiment_name=_experiment())
    return found["experiment"]["experiment_id"]


def test_rest_api_has_both_scales_with_metrics_and_sample_grids(mlflow_server):
    url = mlflow_server
    runs = _post(url, "/api/2.0/mlflow/runs/search", {"experiment_ids": [_experiment_id(url)]})
    by_name = {r["info"]["run_name"]: r for r in runs["runs"]}
    assert sorted(by_name) == RUN_NAMES
    for name, run in by_name.items():
        metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
        assert {"val/sr_psnr_y", "val/bicubic_psnr_y", "val/sr_ssim_y"} <= set(metrics), name
        assert metrics["val/bicubic_psnr_y"] > 20  # bicubic on faces: a sane value
        listed = _get(url, "/api/2.0/mlflow/artifacts/list", run_id=run["info"]["run_id"],
                      path="samples")  # fmt: skip
        grids = [f["path"] for f in listed.get("files", []) if f["path"].endswith(".png")]
        assert grids, f"{name}: no sample grid among {listed}"
        query = urllib.parse.urlencode({"path": grids[0], "run_uuid": run["info"]["run_id"]})
        with urllib.request.urlopen(f"{url}/get-artifact?{query}", timeout=30) as image:
            assert image.read(8) == b"\x89PNG\r\n\x1a\n"


# what a user compares: the runs' val scores as columns (MLflow keeps the chosen columns in the
# browser's localStorage, so the test sets them the way a click on "Columns" would)
COLUMNS = ["metrics.`val/sr_psnr_y`", "metrics.`val/bicubic_psnr_y`", "metrics.`val/sr_ssim_y`",
           "metrics.`val/bicubic_ssim_y`", "params.`config.scale`"]  # fmt: skip


def _chromium():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    for tool in ("chromium", "chromedriver"):
        assert shutil.which(tool), f"{tool} not found: launch/test.sh installs Debian's chromium"
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1600,1000"):  # fmt: skip
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))


def _shows(*texts: str):
    from selenium.webdriver.common.by import By

    def check(driver) -> bool:
        body = driver.find_element(By.TAG_NAME, "body").text
        return all(text in body for text in texts)

    return check


def _screenshot(driver, path: Path) -> None:
    driver.save_screenshot(str(path))
    if os.environ.get("SRGAN_SCREENSHOT_DIR"):  # how docs/images/ got its pictures
        shutil.copy(path, Path(os.environ["SRGAN_SCREENSHOT_DIR"]) / path.name)


def test_the_runs_open_as_model_training_with_val_columns_and_charts(mlflow_server, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, experiment_id = mlflow_server, _experiment_id(mlflow_server)
    tags = _get(url, "/api/2.0/mlflow/experiments/get", experiment_id=experiment_id)
    tags = {t["key"]: t["value"] for t in tags["experiment"].get("tags", [])}
    assert tags["mlflow.experimentKind"] == "custom_model_development"  # set by the trainer
    # the link launch/mlflow_ui.sh prints: the runs, in MLflow's "Model training" mode
    runs_page = f"{url}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
    driver = _chromium()
    try:
        driver.get(runs_page)
        WebDriverWait(driver, UI_WAIT).until(_shows(*RUN_NAMES))
        key = f'MLflowLocalStorage-1.1-ExperimentPage-["{experiment_id}"]-ReactComponentState'
        saved = WebDriverWait(driver, UI_WAIT).until(  # the page may save it after drawing
            lambda d: d.execute_script("return localStorage.getItem(arguments[0])", key)
        )
        state = json.loads(saved)
        state["selectedColumns"] = COLUMNS
        driver.execute_script(
            "localStorage.setItem(arguments[0], arguments[1]);"
            "localStorage.setItem('mlflow.assistant.panelOpen_v1', 'false');",
            key, json.dumps(state),
        )  # fmt: skip
        driver.refresh()
        try:
            WebDriverWait(driver, UI_WAIT).until(
                _shows(*RUN_NAMES, "val/sr_psnr_y", "val/sr_ssim_y")
            )
        finally:
            _screenshot(driver, tmp_path / "mlflow-runs.png")
        body = driver.find_element(By.TAG_NAME, "body").text
        assert _experiment() in body and "Model training" in body

        driver.get(f"{runs_page}&compareRunsMode=CHART")
        search = WebDriverWait(driver, UI_WAIT).until(
            lambda d: d.find_element(By.CSS_SELECTOR, "input[placeholder='Search metric charts']")
        )
        search.send_keys("_y")  # PSNR-Y and SSIM-Y, SR and bicubic
        try:
            WebDriverWait(driver, UI_WAIT).until(_shows("val/sr_psnr_y", "val/sr_ssim_y"))
            WebDriverWait(driver, UI_WAIT).until(  # the four charts drawn, not loading
                lambda d: len(d.find_elements(By.CSS_SELECTOR, ".js-plotly-plot .main-svg")) >= 4
            )
        finally:
            _screenshot(driver, tmp_path / "mlflow-charts.png")
        assert "loss/pixel_mse" not in driver.find_element(By.TAG_NAME, "body").text
    finally:
        driver.quit()
    for shot in ("mlflow-runs.png", "mlflow-charts.png"):
        assert (tmp_path / shot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
