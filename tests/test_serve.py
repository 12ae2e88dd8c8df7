"""`zsclip serve`'s JSON API with Starlette's test client: the answers equal the CLI's and the Python API's, and the
guard turns away every path outside the served folders, requests without the token where one is needed, and bad
parameters with a 4xx and one line."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from pathlib import Path

import pytest

from zsclip.engines import ReadOptions

pytest.importorskip("starlette")
pytest.importorskip("httpx")

from starlette.testclient import TestClient

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples" / "shapes"
CLASSES = "red circle,blue cross,green square"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """The shipped model on the default backend, prepared for ONNX Runtime as `zsclip models --prepare` leaves it
    (auto then runs it on onnx where that measured no slower: tests/test_matrix.py covers every backend)."""
    from zsclip.backends import load_model, prepare
    from zsclip.store.cache import Cache

    cache = Cache(tmp_path_factory.mktemp("prepared"))
    prepare(load_model("shapes", device="cpu", backend="torch", cache=cache, show=False), cache=cache, show=False)
    return load_model("shapes", device="cpu", cache=cache, show=False)


@pytest.fixture
def photos(tmp_path) -> Path:
    target = tmp_path / "photos"
    shutil.copytree(EXAMPLES, target)
    return target


AUTH = {"Authorization": "token secret-token"}  # an API client's header (Jupyter's form)


def served(model, photos: Path, host: str = "127.0.0.1", auth: bool = True, **site):
    from zsclip.serve.app import make_app
    from zsclip.serve.guard import Guard
    from zsclip.serve.library import Library

    library = Library(model, [str(photos)], os.environ["ZSCLIP_CACHE_DIR"])
    library.scan()
    guard = Guard(host, "secret-token")
    base = f"http://{host}:8765" if ":" not in host else f"http://[{host}]:8765"
    client = TestClient(make_app(library, guard, **site), base_url=base, headers=AUTH if auth else None)
    return library, client


@pytest.fixture
def client(model, photos):
    return served(model, photos)[1]


def test_search_is_the_python_api_search(model, photos, client):
    import zsclip

    got = client.get("/api/search", params={"q": "a red circle", "top": 5}).json()["results"]
    want = zsclip.search(model, "a red circle", [str(photos)], top=5)
    assert [r["path"] for r in got] == [h.path for h in want]
    assert [r["score"] for r in got] == pytest.approx([h.score for h in want], abs=1e-5)
    assert got[0]["path"].endswith("red_circle.png")


def test_pages_follow_each_other_and_plus_minus_terms_are_query_arithmetic(model, photos, client):
    import zsclip

    first = client.get("/api/search", params={"q": "circle", "top": 4}).json()["results"]
    second = client.get("/api/search", params={"q": "circle", "top": 4, "offset": 4}).json()["results"]
    both = client.get("/api/search", params={"q": "circle", "top": 8}).json()["results"]
    assert first + second == both
    got = client.get("/api/search", params={"q": "circle +red -blue", "top": 3}).json()["results"]
    want = zsclip.search(model, "circle", [str(photos)], top=3, add=["red"], subtract=["blue"])
    assert [r["path"] for r in got] == [h.path for h in want]


def test_more_like_this_and_an_upload_find_the_image_itself_first(photos, client):
    path = str(photos / "blue_cross.png")
    like = client.get("/api/search", params={"like": path, "top": 2}).json()["results"]
    assert like[0] == {"path": path, "score": pytest.approx(1.0, abs=1e-5)}
    upload = client.post("/api/search/image", params={"top": 2}, content=(photos / "blue_cross.png").read_bytes())
    assert upload.status_code == 200
    assert upload.json()["results"][0]["path"] == path


def test_classify_and_its_records_are_the_cli_records(model, photos, client, tmp_path):
    from typer.testing import CliRunner

    from zsclip.cli import app

    got = client.get("/api/classify", params={"classes": CLASSES, "templates": "shapes"}).json()
    assert got["labels"] == CLASSES.split(",")
    labels = {p: got["labels"][i] for p, i in zip(got["paths"], got["label"], strict=True)}
    assert labels[str(photos / "red_circle.png")] == "red circle"
    for fmt in ("csv", "jsonl"):
        params = {"classes": CLASSES, "templates": "shapes", "threshold": "0.9", "format": fmt}
        download = client.get("/api/classify/records", params=params)
        assert download.status_code == 200
        assert "attachment" in download.headers["content-disposition"]
        cli = CliRunner().invoke(
            app,
            [
                "classify",
                str(photos),
                "-m",
                "shapes",
                "-c",
                CLASSES,
                "-t",
                "shapes",
                "--threshold",
                "0.9",
                "-f",
                fmt,
                "-q",
            ],
        )
        assert cli.exit_code == 0, cli.output
        assert download.text == cli.stdout_bytes.decode()  # stdout, not CliRunner's \r\n-normalised text
    rows = list(csv.DictReader(io.StringIO(download.text if fmt == "csv" else "")))
    assert rows == [] or rows[0]["path"].startswith(str(photos))


OUTSIDE = [
    "/etc/passwd",
    "{photos}/../secret.txt",
    "{photos}/%2e%2e/secret.txt",
    "{photos}/%252e%252e/secret.txt",
    "{photos}/blue_cross.png\0.txt",
    "{photos}\\..\\secret.txt",
    "..\\secret.txt",
    "secret.txt",
    "{photos}/link-out/secret.txt",
    "{photos}/escape.png",
    "",
    "C:\\Windows\\win.ini",
]


@pytest.mark.parametrize("where", ["/api/thumb", "/api/image", "/api/search?like="])
def test_no_file_outside_the_served_folders_is_ever_served(model, photos, where):
    secret = photos.parent / "secret.txt"
    secret.write_text("the secret")
    shutil.copyfile(EXAMPLES / "blue_cross.png", photos.parent / "outside.png")
    (photos / "link-out").symlink_to(photos.parent)
    (photos / "escape.png").symlink_to(photos.parent / "outside.png")
    _, client = served(model, photos)
    for raw in OUTSIDE:
        path = raw.replace("{photos}", str(photos))
        url, params = (where, {"path": path}) if "like" not in where else ("/api/search", {"like": path})
        answer = client.get(url, params=params)
        assert 400 <= answer.status_code < 500, (path, answer.status_code)
        assert "the secret" not in answer.text
        assert set(answer.json()) == {"error"}
    ok = client.get("/api/image", params={"path": str(photos / "blue_cross.png")})
    assert ok.status_code == 200
    assert ok.content == (photos / "blue_cross.png").read_bytes()


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0"])
def test_every_request_needs_the_token_on_loopback_too(model, photos, host):
    """Issue 31: on loopback the page needed no token and held the write token, so another user of the machine
    read it with curl and sorted the owner's photos. Now every request needs the token (the header of an API
    client, or the cookie the printed URL sets); the token is never in the page, nor in any URL after login."""
    _, client = served(model, photos, host=host, auth=False)
    for url in ("/", "/api/status", "/api/search?q=red", f"/api/thumb?path={photos}/blue_cross.png"):
        assert client.get(url).status_code == 403, url
        assert client.get(url, headers={"Authorization": "token wrong"}).status_code == 403, url
        if url != "/":  # only / takes it (and redirects it away)
            assert client.get(url, params={"token": "secret-token"}).status_code == 403, url
    assert client.get("/api/search", params={"q": "red"}, headers=AUTH).status_code == 200
    assert client.get("/api/status", headers={"Authorization": "Bearer secret-token"}).status_code == 200
    login = client.get("/", params={"token": "secret-token", "q": "red circle"}, follow_redirects=False)
    assert login.status_code == 303 and login.headers["location"] == "/?q=red+circle"  # the deep link kept
    cookie = login.headers["set-cookie"]
    assert (
        "zsclip_token_8765=secret-token" in cookie
        and "httponly" in cookie.lower()
        and "samesite=strict" in cookie.lower()
    )
    page = client.get("/?q=red+circle")  # the cookie now
    assert page.status_code == 200 and "secret-token" not in page.text
    assert "nonce-" in page.headers["content-security-policy"] and page.headers["x-content-type-options"] == "nosniff"
    assert client.get(f"/api/thumb?path={photos}/blue_cross.png").status_code == 200


def test_no_token_opens_loopback_only(model, photos):
    from zsclip.serve.guard import Guard

    assert Guard("127.0.0.1", open_access=True).open
    from typer.testing import CliRunner

    from zsclip.cli import app

    refused = CliRunner().invoke(app, ["serve", str(photos), "-m", "shapes", "--host", "0.0.0.0", "--no-token"])
    assert refused.exit_code == 2 and "--no-token: only on a loopback --host" in refused.stderr


def test_a_change_from_another_page_is_refused(model, photos, tmp_path):
    """Issue 31: after the user opened the printed URL, a page on 127.0.0.1:<another port> (the same site, so the
    SameSite=Strict cookie went along) POSTed a plain form to /api/sort?mode=move and moved their photos. A POST
    with the cookie must come from this server's own origin, and no form or text body is taken."""
    into = tmp_path / "sorted"
    params = {"classes": CLASSES, "templates": "shapes", "mode": "move"}
    _, client = served(model, photos, sort_into=into, allow_write=True, auth=False)
    client.get("/", params={"token": "secret-token"})  # the user opened the printed URL: the cookie is set
    for origin, site in [("http://127.0.0.1:9999", "same-site"), (None, None), ("null", "cross-site")]:
        headers = {k: v for k, v in (("Origin", origin), ("Sec-Fetch-Site", site)) if v}
        form = {"Content-Type": "application/x-www-form-urlencoded", **headers}
        assert client.post("/api/sort", params=params, headers=form, content=b"a=1").status_code in (403, 415)
        assert client.post("/api/sort", params=params, headers=headers).status_code == 403
        assert client.post("/api/rescan", headers=headers).status_code == 403
    for kind in ("text/plain", "multipart/form-data; boundary=x", "application/x-www-form-urlencoded"):
        own = {"Origin": "http://127.0.0.1:8765", "Content-Type": kind}
        assert client.post("/api/sort", params=params, headers=own, content=b"x").status_code == 415
    assert sorted(p.name for p in photos.iterdir()) == sorted(p.name for p in EXAMPLES.iterdir())  # nothing moved
    own = {"Origin": "http://127.0.0.1:8765", "Sec-Fetch-Site": "same-origin"}
    assert client.post("/api/sort", params=params, headers=own).status_code == 200  # the page itself
    assert not list(photos.iterdir())


def test_an_image_is_served_as_the_type_its_decoder_found_never_by_its_name(model, photos):
    """Issue 31: pic.png -> evil.html, a file that is both a valid PNG and an HTML page, was indexed as an image
    and served as text/html on this origin, where its script could read the page and sort. Images are served as
    the type their decoder found, with nosniff and a sandbox policy; a format browsers do not show is sent as PNG."""
    from PIL import Image

    png = (EXAMPLES / "blue_cross.png").read_bytes()
    (photos / "evil.html").write_bytes(png + b"<script>fetch('/api/sort?mode=move',{method:'POST'})</script>")
    (photos / "pic.png").symlink_to("evil.html")
    Image.open(EXAMPLES / "red_star.png").save(photos / "star.tiff")
    _, client = served(model, photos)
    for name, kind in [("pic.png", "image/png"), ("evil.html", "image/png"), ("star.tiff", "image/png")]:
        answer = client.get("/api/image", params={"path": str(photos / name)})
        assert answer.status_code == 200, (name, answer.text)
        assert answer.headers["content-type"] == kind, name
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["content-security-policy"].startswith("sandbox")
    assert Image.open(io.BytesIO(client.get("/api/image", params={"path": str(photos / "star.tiff")}).content)).size


def test_loopback_refuses_another_host_header(client):
    assert client.get("/api/status").status_code == 200
    assert client.get("/api/status", headers={"Host": "evil.example:8765"}).status_code == 403


def test_sorting_needs_allow_write_and_the_token_and_uses_the_sorter(model, photos, tmp_path):
    into = tmp_path / "sorted"
    params = {"classes": CLASSES, "templates": "shapes"}
    _, reader = served(model, photos, sort_into=into)
    plan = reader.get("/api/sort/plan", params=params).json()
    assert len(plan["rows"]) == 12 and not into.exists()  # a preview writes nothing
    assert reader.post("/api/sort", params=params).status_code == 403  # no --allow-write
    _, writer = served(model, photos, sort_into=into, allow_write=True, auth=False)
    assert writer.post("/api/sort", params=params).status_code == 403  # no token, even on loopback
    done = writer.post("/api/sort", params=params, headers=AUTH)
    assert done.status_code == 200, done.text
    assert sorted(p.name for p in (into / "red circle").iterdir()) == sorted(
        Path(r["path"]).name for r in plan["rows"] if r["label"] == "red circle"
    )
    assert (photos / "red_circle.png").exists()  # copy is the default


@pytest.mark.parametrize(
    ("url", "params", "status", "says"),
    [
        ("/api/search", {"q": ""}, 400, "q:"),
        ("/api/search", {"q": "red", "top": "ten"}, 400, "top=ten"),
        ("/api/search", {"q": "red", "top": "0"}, 400, "top=0"),
        ("/api/search", {"q": "red", "offset": "-1"}, 400, "offset=-1"),
        ("/api/search", {"q": "-blue"}, 400, "no text"),
        ("/api/classify", {"classes": "cat"}, 400, "at least two"),
        ("/api/classify", {"classes": "cat,dog", "templates": "nope"}, 400, "nope"),
        ("/api/classify/records", {"classes": "cat,dog", "format": "xml"}, 400, "format=xml"),
        ("/api/classify/records", {"classes": "cat,dog", "threshold": "2"}, 400, "threshold=2"),
        ("/api/sort/plan", {"classes": "cat,dog"}, 400, "--sort-into"),
        ("/api/nothing", {}, 404, ""),
    ],
)
def test_a_bad_request_is_a_4xx_with_one_line(client, url, params, status, says):
    answer = client.get(url, params=params)
    assert answer.status_code == status
    if says:
        message = answer.json()["error"]
        assert says in message and "\n" not in message and "Traceback" not in message


def test_uploads_are_size_limited_and_checked_like_files(model, photos, tmp_path):
    from PIL import Image

    _, client = served(model, photos, max_upload=1000)
    big = client.post("/api/search/image", content=b"x" * 2000)
    assert big.status_code == 413 and "limit" in big.json()["error"]
    assert client.post("/api/search/image", content=b"not an image").status_code == 400
    Image.new("RGB", (400, 400)).save(tmp_path / "wide.png")
    from zsclip.serve.app import make_app
    from zsclip.serve.guard import Guard
    from zsclip.serve.library import Library

    strict = Library(model, [str(photos)], os.environ["ZSCLIP_CACHE_DIR"], ReadOptions(max_pixels=10_000))
    strict.scan()
    answer = TestClient(
        make_app(strict, Guard("127.0.0.1", "t")), base_url="http://127.0.0.1", headers={"Authorization": "token t"}
    ).post("/api/search/image", content=(tmp_path / "wide.png").read_bytes())
    assert answer.status_code == 400 and "--max-pixels" in answer.json()["error"]


def test_a_deleted_or_changed_file_is_not_served_and_a_rescan_finds_new_ones(model, photos):
    library, client = served(model, photos)
    (photos / "red_circle.png").unlink()
    paths = [r["path"] for r in client.get("/api/search", params={"q": "red circle", "top": 12}).json()["results"]]
    assert str(photos / "red_circle.png") not in paths and len(paths) == 11
    shutil.copyfile(EXAMPLES / "red_circle.png", photos / "new_red.png")
    library.scan()
    assert client.get("/api/status").json()["images"] == 12
    top = client.get("/api/search", params={"q": "red circle", "top": 1}).json()["results"][0]
    assert top["path"] == str(photos / "new_red.png")


def test_thumbnails_are_webp_made_once_and_upright(model, photos, tmp_path):
    from PIL import Image

    image = Image.new("RGB", (80, 40), "red")
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    image.save(photos / "turned.jpg", exif=exif)
    _, client = served(model, photos)
    answer = client.get("/api/thumb", params={"path": str(photos / "turned.jpg")})
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/webp"
    assert Image.open(io.BytesIO(answer.content)).size == (40, 80)
    thumbs = list((Path(os.environ["ZSCLIP_CACHE_DIR"]) / "thumbs").iterdir())
    assert len(thumbs) == 1
    client.get("/api/thumb", params={"path": str(photos / "turned.jpg")})
    assert list((Path(os.environ["ZSCLIP_CACHE_DIR"]) / "thumbs").iterdir()) == thumbs


def test_reports_are_served_as_they_are(model, photos, tmp_path):
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "index.html").write_text("<h1>leaderboard</h1>")
    _, client = served(model, photos, reports=reports)
    assert "leaderboard" in client.get("/reports/").text
    assert client.get("/reports/../secret.txt").status_code == 404


def test_every_route_is_described_in_the_openapi_page(client):
    from starlette.routing import Route

    described = set(client.get("/api/openapi.json").json()["paths"])
    routes = {r.path for r in client.app.routes if isinstance(r, Route) and r.path.startswith("/api/")}
    assert described == routes


def test_a_fitted_classifier_answers_classify_without_class_names(model, photos, tmp_path):
    from typer.testing import CliRunner

    from zsclip.cli import app
    from zsclip.fewshot import load_classifier

    data = tmp_path / "data"
    for name in ("red circle", "blue cross"):
        (data / name).mkdir(parents=True)
        for i in range(3):
            shutil.copyfile(EXAMPLES / f"{name.replace(' ', '_')}.png", data / name / f"{i}.png")
    out = tmp_path / "clf.safetensors"
    fitted = CliRunner().invoke(app, ["fit", str(data), "-m", "shapes", "--shots", "2", "-o", str(out), "-q"])
    assert fitted.exit_code == 0, fitted.output
    _, client = served(model, photos, classifier=load_classifier(out, model))
    assert client.get("/api/status").json()["classifier"] == ["blue cross", "red circle"]  # folder order
    got = client.get("/api/classify").json()
    cli = CliRunner().invoke(
        app,
        ["classify", str(photos), "-m", "shapes", "--classifier", str(out), "-f", "jsonl", "-q"],
    )
    want = {r["path"]: r["label"] for r in map(json.loads, cli.stdout.splitlines())}
    assert {p: got["labels"][i] for p, i in zip(got["paths"], got["label"], strict=True)} == want


def test_files_changed_or_deleted_since_the_pass_are_not_classified_sorted_or_served(model, photos, tmp_path):
    _, client = served(model, photos, sort_into=tmp_path / "sorted")
    shutil.copyfile(EXAMPLES / "blue_cross.png", photos / "red_circle.png")  # new content, same path
    (photos / "purple_square.png").unlink()
    params = {"classes": CLASSES, "templates": "shapes"}
    paths = client.get("/api/classify", params=params).json()["paths"]
    assert str(photos / "red_circle.png") not in paths and str(photos / "purple_square.png") not in paths
    plan = client.get("/api/sort/plan", params=params).json()["rows"]
    assert {r["path"] for r in plan} == set(paths)
    assert client.get("/api/image", params={"path": str(photos / "red_circle.png")}).status_code == 404
    like = client.get("/api/search", params={"like": str(photos / "red_circle.png")})
    assert like.status_code == 404


def test_an_image_swapped_for_a_symlink_or_linking_outside_is_never_served(model, photos, tmp_path):
    (photos / "secret.txt").write_text("SECRET")
    (tmp_path / "outside.png").write_bytes((EXAMPLES / "red_star.png").read_bytes())
    (photos / "link_out.png").symlink_to(tmp_path / "outside.png")
    _, client = served(model, photos)
    (photos / "red_star.png").unlink()
    (photos / "red_star.png").symlink_to(photos / "secret.txt")
    answer = client.get("/api/image", params={"path": str(photos / "red_star.png")})
    assert answer.status_code == 404 and "SECRET" not in answer.text
    found = client.get("/api/search", params={"q": "a red star", "top": 12}).json()["results"]
    classified = client.get("/api/classify", params={"classes": CLASSES}).json()["paths"]
    for listed in ([r["path"] for r in found], classified):
        assert str(photos / "link_out.png") not in listed and str(photos / "red_star.png") not in listed


def test_templates_are_set_names_never_files(client):
    answer = client.get("/api/classify", params={"classes": "a,b", "templates": "/etc/passwd"})
    assert answer.status_code == 400 and "root" not in answer.text and "template set name" in answer.json()["error"]


def test_a_second_sort_continues_the_folder(model, photos, tmp_path):
    into = tmp_path / "sorted"
    _, client = served(model, photos, sort_into=into, allow_write=True)
    params, token = {"classes": CLASSES, "templates": "shapes"}, AUTH
    assert client.post("/api/sort", params=params, headers=token).status_code == 200
    second = client.post("/api/sort", params=params, headers=token)
    assert second.status_code == 200, second.text
    assert len(list(into.rglob("*.png"))) == 12
    other = client.get("/api/sort/plan", params={"classes": "red star,green hexagon", "templates": "shapes"})
    # Issue 31: the page showed the CLI's "--resume: ... was sorted with other labels" (no --resume in a page)
    assert other.status_code == 400 and "--resume" not in other.json()["error"]
    assert "sorted before with other class names" in other.json()["error"] and "--sort-into" in other.json()["error"]


def test_host_headers_that_only_start_like_loopback_are_refused(client):
    for host in ("[::1].evil.com", "[::1]evil.com:80", "127.0.0.1.evil.com", "localhost:80:80"):
        assert client.get("/api/status", headers={"Host": host}).status_code == 403, host
    assert client.get("/api/status", headers={"Host": "[::1]:8765"}).status_code == 200


def test_an_unreadable_upload_is_said_without_server_paths(client):
    answer = client.post("/api/search/image", content=b"junkjunk")
    assert answer.status_code == 400
    assert answer.json()["error"].startswith("the uploaded image:") and "/tmp" not in answer.json()["error"]
