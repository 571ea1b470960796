"""``snapflow report --fleet`` over repositories on a real S3 server, looked at in headless Chromium:
one row per cluster x app, the filter and the sorting work, each row links to its per-app report."""

from __future__ import annotations

import os
import shutil
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from steps.api import Repository, open_store
from tests.fixtures import policies
from tests.fixtures.chromium import png_pixels
from tests.fixtures.s3 import TEST_PASSWORD

pytestmark = pytest.mark.slow

NOW = time.time()


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def commit(repo, app: dict, backup_id: str, t: float, anomaly: dict | None = None) -> None:
    repo.save_record(
        "runs", {"name": "verify", "backup_id": backup_id, "time": iso(t + 50), "ok": True}, key=backup_id
    )
    record = {
        "version": 1,
        "backup_id": backup_id,
        "time": iso(t + 60),
        "app": app,
        "volumes": [{"name": "data", "files": 3, "bytes": 4096}],
        "consistency": {
            "verdict": "app-consistent",
            "timeline": {"volumes": [{"name": "data", "cut": iso(t)}]},
        },
        "verify": {"ok": True},
        **({"anomaly": anomaly} if anomaly else {}),
    }
    repo.save_record("backups", record, key=backup_id)


ROW_APPS = "[...document.querySelectorAll('#fleet tbody tr')].filter(r => !r.hidden).map(r => r.cells[2].innerText.split(' ')[0])"


def test_the_fleet_page_filters_sorts_and_links_each_row_in_a_browser(
    tmp_path, s3_repo, s3_server, snapflow, chromium
):
    # GIVEN the example fleet with its two clusters' repositories on the S3 server
    fleet_dir = tmp_path / "fleet"
    shutil.copytree(policies.EXAMPLES / "fleet", fleet_dir)
    doc = yaml.safe_load((fleet_dir / "fleet.yaml").read_text())
    bucket = s3_repo.split("/")[2]
    urls = {"prod-eu": f"s3://{bucket}/eu-shop", "prod-us": f"s3://{bucket}/us-shop"}
    doc["spec"]["overrides"] = [
        {"cluster": "prod-eu", "policies": ["shop/orders-db"], "repository": {"url": urls["prod-eu"], "endpoint": s3_server.endpoint}},
        {"cluster": "prod-eu", "policies": ["wiki/wiki-db"], "repository": {"url": f"s3://{bucket}/eu-wiki", "endpoint": s3_server.endpoint}},
        {"cluster": "prod-us", "repository": {"url": urls["prod-us"], "endpoint": s3_server.endpoint}},
    ]  # fmt: skip
    (fleet_dir / "fleet.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    repos = {
        c: Repository.init(
            open_store(u, s3_server.endpoint), TEST_PASSWORD, kdf_params={"n": 1024, "r": 8, "p": 1}
        )
        for c, u in urls.items()
    }
    Repository.init(
        open_store(f"s3://{bucket}/eu-wiki", s3_server.endpoint),
        TEST_PASSWORD,
        kdf_params={"n": 1024, "r": 8, "p": 1},
    )
    for cluster, repo in repos.items():
        orders = {"cluster": cluster, "namespace": "shop", "name": "orders-db", "policy": "orders-db"}
        commit(repo, orders, f"{cluster}-o1", NOW - (3600 if cluster == "prod-eu" else 3 * 86400))
        for name, age in (("cart-db", 7200), ("search-db", 10 * 86400)):
            app = {"cluster": cluster, "namespace": "shop", "name": name, "policy": name}
            flagged = (
                {"flagged": True, "score": 0.91, "reasons": ["most files changed"]}
                if name == "cart-db"
                else None
            )
            commit(repo, app, f"{cluster}-{name}", NOW - age, anomaly=flagged)

    # WHEN the fleet report is written
    out = tmp_path / "out" / "fleet.html"
    res = snapflow(
        "report",
        "--fleet",
        str(fleet_dir / "fleet.yaml"),
        "-o",
        str(out),
        env={"XDG_CACHE_HOME": str(tmp_path / "xdg")},
    )
    assert res.returncode == 0, res.stderr
    assert "7 app(s)" in res.stderr and "RPO met 3, late 3, missing 1, unknown 0" in res.stderr, res.stderr
    html = out.read_text()
    assert "http://" not in html and "https://" not in html  # nothing fetched at view time

    # WHEN a browser opens it, filters, and sorts
    visit = chromium(
        out.as_uri(),
        {
            "title": "document.title",
            "all": ROW_APPS,
            "rpo": "[...document.querySelectorAll('#fleet tbody tr')].map(r => r.dataset.rpo)",
            "filtered": "(() => { const f = document.getElementById('filter'); f.value = 'wiki'; f.dispatchEvent(new Event('input'));"
            f" return {ROW_APPS}; }})()",
            "shown": "document.getElementById('shown').innerText",
            "late_only": "(() => { const f = document.getElementById('filter'); f.value = ''; f.dispatchEvent(new Event('input'));"
            " const s = document.getElementById('rpo-filter'); s.value = 'late'; s.dispatchEvent(new Event('change'));"
            f" const r = {ROW_APPS}; s.value = ''; s.dispatchEvent(new Event('change')); return r; }})()",
            "oldest_first": "(() => { document.querySelectorAll('#fleet thead th button')[3].click();"
            " document.querySelectorAll('#fleet thead th button')[3].click();"
            " return [...document.querySelectorAll('#fleet tbody tr')].map(r => r.cells[0].innerText + '/' + r.cells[2].innerText.split(' ')[0]); })()",
            "sorted_by": "document.querySelectorAll('#fleet thead th')[3].getAttribute('aria-sort')",
            "links": "[...document.querySelectorAll('#fleet tbody a')].map(a => a.getAttribute('href'))",
            "anomalies": "[...document.querySelectorAll('#fleet tbody tr')].filter(r => r.cells[9].innerText.includes('flagged')).length",
        },
    )

    # THEN no console errors or requests, every row is there, the filter and the sorting work
    assert visit.errors == []
    assert visit.values["title"].startswith("Snapflow fleet report")
    assert sorted(visit.values["all"]) == sorted(
        ["orders-db", "wiki-db", "orders-db", "cart-db", "search-db", "cart-db", "search-db"]
    )
    assert Counter(visit.values["rpo"]) == Counter({"met": 3, "late": 3, "missing": 1})
    assert visit.values["filtered"] == ["wiki-db"] and visit.values["shown"] == "1 of 7 rows"
    assert sorted(visit.values["late_only"]) == ["orders-db", "search-db", "search-db"]
    order = visit.values["oldest_first"]
    assert visit.values["sorted_by"] == "descending"
    assert order[0].endswith("wiki-db")  # no backup: the oldest of all
    assert (
        order.index("prod-eu/search-db") < order.index("prod-us/orders-db") < order.index("prod-eu/cart-db")
    )
    assert visit.values["anomalies"] == 2
    # ... and each link leads to the per-app report holding that app (the app without backups has none)
    assert len(visit.values["links"]) == 6 and not any("wiki-db" in h for h in visit.values["links"])
    for href in visit.values["links"]:
        page, anchor = href.split("#")
        assert f'id="{anchor}"' in (out.parent / page).read_text(), href
    # ... the screenshot shows a page, not a blank one
    width, height, pixels = png_pixels(visit.screenshot)
    assert (width, height) == (1280, 1800)
    assert len(Counter(pixels)) > 50
    shot = tmp_path / "fleet-report.png"
    shot.write_bytes(visit.screenshot)
    keep = os.environ.get("SNAPFLOW_KEEP_SCREENSHOT")
    if keep:
        shutil.copy(shot, Path(keep).with_name("fleet-report.png"))
