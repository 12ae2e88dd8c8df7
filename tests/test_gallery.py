"""zsclip.classify.gallery: the HTML parsed back (sections largest first, counts, top-k on hover, every link and image
present, nothing external), label pages, thumbnails written while records arrive, resume, the folder checks."""

import io
import json
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from PIL import Image

from zsclip.classify.gallery import RECORDS, Gallery, check_report_dir, labels_png
from zsclip.classify.predict import Prediction, Skipped
from zsclip.core.errors import UsageError

COUNTS = {"cat": 5, "dog <b>&</b>": 3, "bird": 1}  # a label that is also markup, and folder-unsafe


class Page(HTMLParser):
    """Sections (id, heading text, figures), every href/src, and anything that would load from outside."""

    def __init__(self, path: Path):
        super().__init__()
        self.path = path
        self.sections: list[dict] = []
        self.links: list[str] = []
        self.figures: list[dict] = []  # every figure on the page, in order
        self.tags: list[str] = []
        self._in_h2 = False
        self.feed(path.read_text(encoding="utf-8"))

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        if tag == "section":
            self.sections.append({"id": a.get("id"), "heading": "", "count": "", "figures": []})
        elif tag == "h2":
            self._in_h2 = "heading"
        elif tag in ("span", "small") and self._in_h2:
            self._in_h2 = "count" if a.get("class") == "count" else "note"
        elif tag == "figure":
            figure = {"title": a.get("title"), "src": None, "href": None}
            self.figures.append(figure)
            if self.sections:
                self.sections[-1]["figures"].append(figure)
        if tag == "img" and self.figures and self.figures[-1]["src"] is None and "chart" not in a.get("class", ""):
            self.figures[-1]["src"] = a["src"]
        if tag == "a" and self.figures and self.figures[-1]["href"] is None and self.tags[-2:-1] == ["figure"]:
            self.figures[-1]["href"] = a["href"]
        self.links += [v for k, v in attrs if k in ("href", "src") and v and not v.startswith("#")]

    def handle_endtag(self, tag):
        if tag == "h2":
            self._in_h2 = False
        elif tag in ("span", "small") and self._in_h2:
            self._in_h2 = "heading"

    def handle_data(self, data):
        if self._in_h2 in ("heading", "count"):
            self.sections[-1][self._in_h2] += data

    def target(self, link: str) -> Path:
        return (self.path.parent / unquote(link.split("#")[0])).resolve()


def make_image(path: Path, color, size=(64, 48)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def records(tmp_path: Path) -> list:
    out = []
    n = 0
    for label, count in COUNTS.items():
        for _ in range(count):
            path = make_image(tmp_path / "photos" / f"img{n}.jpg", (n * 20, 100, 50), (64 + n, 48))
            prob = 0.9 - n * 0.02
            out.append(Prediction(str(path), label, prob, [{"label": label, "prob": prob},
                                                           {"label": "other", "prob": 0.05}]))  # fmt: skip
            n += 1
    for i in range(2):
        path = make_image(tmp_path / "photos" / f"unsure {i}.png", (0, 0, 200))
        out.append(Prediction(str(path), "unknown", 0.3, [{"label": "cat", "prob": 0.3}], abstained=True))
    out += [Skipped(str(tmp_path / "photos/broken.jpg"), "cannot identify image file"), Skipped("/x.heic", "no HEIC")]
    return out


def build(tmp_path, **kw) -> Path:
    gallery = Gallery(tmp_path / "report", preview=2, page_size=2, **kw)
    for r in records(tmp_path):
        gallery.add(r)
    return gallery.close()


def test_sections_largest_first_with_counts_thumbnails_and_top_k(tmp_path):
    page = Page(build(tmp_path))
    headings = [s["heading"].strip() for s in page.sections]
    assert headings == ["cat", "dog <b>&</b>", "bird", "unknown (abstained)", "Skipped"]
    assert [int(s["count"]) for s in page.sections] == [5, 3, 1, 2, 2]
    cat = page.sections[0]["figures"]
    assert len(cat) == 2  # the preview; the rest on pages
    assert cat[0]["title"].splitlines() == [str(tmp_path / "photos/img0.jpg"), "cat  90.0%", "other  5.0%"]
    assert "dog <b>&</b>  " in page.sections[1]["figures"][0]["title"]  # escaped in the file, text when parsed
    assert "<b>" not in page.tags
    text = page.path.read_text()
    assert "11 images classified into 3 labels, 2 abstained, 2 skipped" in text
    assert "cannot identify image file" in text and "/x.heic" in text


def test_every_link_and_image_exists_and_nothing_is_external(tmp_path):
    index = build(tmp_path)
    pages = [Page(index)] + [Page(p) for p in sorted((index.parent / "pages").glob("*.html"))]
    for page in pages:
        assert page.links
        for link in page.links:
            assert not urlparse(link).scheme and not link.startswith("//"), f"external link {link} in {page.path}"
            assert page.target(link).exists(), f"{link} in {page.path.name} points nowhere"
        assert "script" not in page.tags and "link" not in page.tags
        for figure in page.figures:
            assert page.target(figure["src"]).parent.parent.name == "thumbs"
            assert page.target(figure["href"]).parent.name == "photos"  # the image itself
    chart = index.parent / "labels.png"
    assert chart.read_bytes().startswith(b"\x89PNG") and "labels.png" in pages[0].links


def test_label_pages_hold_every_image_once_and_link_to_each_other(tmp_path):
    index = build(tmp_path)
    folder = index.parent / "pages"
    cat_pages = sorted(folder.glob("cat-*.html"))
    assert [p.name for p in cat_pages] == ["cat-1.html", "cat-2.html", "cat-3.html"]
    titles = [f["title"].splitlines()[0] for p in cat_pages for f in Page(p).figures]
    assert titles == [str(index.parent.parent / f"photos/img{i}.jpg") for i in range(5)]  # most confident first
    probs = [float(f["title"].splitlines()[1].split()[-1][:-1]) for p in cat_pages for f in Page(p).figures]
    assert probs == sorted(probs, reverse=True)
    middle = Page(cat_pages[1])
    assert {middle.target(link).name for link in middle.links if ".html" in link} >= {
        "cat-1.html",
        "cat-3.html",
        "gallery.html",
    }
    assert not list(folder.glob("bird-*"))  # one image: the preview shows it all
    index_links = Page(index).links
    assert "pages/cat-1.html" in index_links and "pages/cat-3.html" in index_links
    unsafe = [link for link in index_links if link.startswith("pages/dog")]
    assert unsafe and all("/" not in unquote(link)[len("pages/") :] for link in unsafe)


def test_thumbnails_are_written_as_records_arrive(tmp_path):
    gallery = Gallery(tmp_path / "report", thumb_size=32)
    recs = [r for r in records(tmp_path) if isinstance(r, Prediction)]
    for r in recs:
        gallery.add(r)
    thumbs = tmp_path / "report/thumbs"
    deadline = time.monotonic() + 30
    while len(list(thumbs.rglob("*.jpg"))) < len(recs):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert not (tmp_path / "report/gallery.html").exists()
    lines = (tmp_path / "report" / RECORDS).read_text().splitlines()
    assert [json.loads(line)["path"] for line in lines] == [r.path for r in recs]
    gallery.close()
    for thumb in thumbs.rglob("*.jpg"):
        with Image.open(thumb) as im:
            assert im.format == "JPEG" and max(im.size) <= 32


def test_an_unreadable_image_gets_a_placeholder(tmp_path):
    bad = tmp_path / "photos/bad.jpg"
    bad.parent.mkdir()
    bad.write_bytes(b"not a jpeg")
    gallery = Gallery(tmp_path / "report")
    gallery.add(Prediction(str(bad), "cat", 0.9, [{"label": "cat", "prob": 0.9}]))
    index = gallery.close()
    assert gallery.failed_thumbs == 1 and "no preview" in index.read_text()
    assert all(Page(index).target(link).exists() for link in Page(index).links)


def test_a_moved_image_is_shown_from_where_it_went(tmp_path):
    src = make_image(tmp_path / "photos/a.jpg", (1, 2, 3))
    dest = tmp_path / "sorted/cat/a.jpg"
    dest.parent.mkdir(parents=True)
    src.rename(dest)
    gallery = Gallery(tmp_path / "report")
    gallery.add(Prediction(str(src), "cat", 0.9, [{"label": "cat", "prob": 0.9}]), image=dest)
    page = Page(gallery.close())
    assert page.target(page.figures[0]["href"]) == dest and page.target(page.figures[0]["src"]).exists()


def test_resume_keeps_the_records_of_a_killed_run(tmp_path):
    recs = records(tmp_path)
    first = Gallery(tmp_path / "report", preview=100)
    for r in recs[:4]:
        first.add(r)
    first._pool.shutdown()  # killed: no close, and a record torn in half; the kernel drops a dead process's locks
    first._dir_lock.release()
    with open(tmp_path / "report" / RECORDS, "a") as f:
        f.write('{"path": "/torn')
    again = Gallery(tmp_path / "report", preview=100, resume=True)
    for r in recs[3:]:  # the last record of the killed run comes again
        again.add(r)
    page = Page(again.close())
    assert [len(s["figures"]) for s in page.sections[:4]] == [5, 3, 1, 2]
    assert all(page.target(f["src"]).exists() for f in page.figures)


def test_check_report_dir(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine/notes.txt").write_text("x")
    with pytest.raises(UsageError, match="has files in it and no zsclip gallery"):
        check_report_dir(tmp_path / "mine")
    with pytest.raises(UsageError, match="is a file"):
        check_report_dir(tmp_path / "mine/notes.txt")
    check_report_dir(tmp_path / "new/deeper")


def test_a_new_gallery_replaces_an_earlier_one(tmp_path):
    build(tmp_path)
    gallery = Gallery(tmp_path / "report")
    gallery.add(Prediction(str(tmp_path / "photos/img0.jpg"), "cat", 0.9, [{"label": "cat", "prob": 0.9}]))
    page = Page(gallery.close())
    assert len(page.figures) == 1 and len(list((tmp_path / "report/thumbs").rglob("*.jpg"))) == 1
    assert not (tmp_path / "report/pages").exists()


def test_labels_png_with_many_labels(monkeypatch):
    """30 label bars, one for the other 30 labels, then abstained and skipped (never folded into the others)."""
    import matplotlib.axes

    drawn = {}

    real = matplotlib.axes.Axes.barh

    def barh(self, y, width, **kw):
        drawn["bars"] = list(width)[::-1]
        return real(self, y, width, **kw)

    monkeypatch.setattr(matplotlib.axes.Axes, "barh", barh)
    png = labels_png([(f"label {i}", 100 - i) for i in range(60)] + [("unknown (abstained)", 7)], skipped=3)
    assert png.startswith(b"\x89PNG")
    assert drawn["bars"] == [100 - i for i in range(30)] + [sum(100 - i for i in range(30, 60)), 7, 3]
    with Image.open(io.BytesIO(png)) as im:
        assert im.height < 1200


def test_a_second_gallery_into_the_same_folder_at_once_is_refused(tmp_path):
    """Issue 21: one writer per shared folder, and a dead one's lock is taken over."""
    first = Gallery(tmp_path / "report")
    with pytest.raises(UsageError, match="--report .* is in use by another zsclip process"):
        Gallery(tmp_path / "report", resume=True)
    with pytest.raises(UsageError, match="is in use by another zsclip process"):
        check_report_dir(tmp_path / "report", resume=True)
    first.close()
    Gallery(tmp_path / "report", resume=True).close()
