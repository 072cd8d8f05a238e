"""check_expiration html=PATH through the real salt-run, and the page it writes
rendered by a real browser (Debian's chromium, headless).

What the page shows is read from the DOM chromium builds (``--dump-dom``), not
from our own HTML text; a screenshot proves it paints, in the status colours.
Bad destinations are refused with one line, a non-zero exit and nothing
written.
"""

import contextlib
import datetime
import html.parser
import json
import os
import shutil
import struct
import subprocess
import zlib

import pytest
from support import event_sink, k8s_pki, openssl, salt_run, snapshot

DAY = datetime.timedelta(days=1)
CHROMIUM = shutil.which("chromium")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
# The report's status colours (_utils/k8s_report.py), as RGB.
COLOURS = {
    "ok": (0x2E, 0x7D, 0x32),
    "renew-soon": (0xE6, 0xA1, 0x00),
    "expired": (0xC6, 0x28, 0x28),
}
EVIL = "<i>evil & co"  # unescaped, the rest of the page would turn italic


def now():
    return datetime.datetime.now(datetime.timezone.utc)


@pytest.fixture
def cluster_set(pki_root, tmp_path):
    """A set 300 days old (leaves renew-soon), server.crt expired 3 days ago,
    a CA whose subject holds markup, and a file that does not parse."""
    directory = pki_root / "prod"
    specs = k8s_pki.seed_specs()
    k8s_pki.ensure_set(pki_root, "prod", specs, key_type="ecdsa-p256", now=now() - 300 * DAY)
    ca = k8s_pki.load_cert((directory / "ca.crt").read_bytes())
    ca_key = k8s_pki.load_key((directory / "ca.key").read_bytes())
    key = k8s_pki.load_key((directory / "server.key").read_bytes())
    cert = k8s_pki.issue_leaf(specs["server"], key, ca, ca_key, days=30, now=now() - 33 * DAY)
    (directory / "server.crt").write_bytes(k8s_pki.cert_pem(cert))
    openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", tmp_path / "evil.key", "-out", directory / "evil-ca.crt",
        "-subj", f"/CN={EVIL}", "-days", "365",
    )  # fmt: skip
    (directory / "broken<b>.crt").write_text("not a certificate\n")
    return directory


def check_expiration(conf, *args, out="json"):
    return salt_run(conf, "k8s-helper.check_expiration", "cluster_tag=prod", *args, out=out)


def chromium(tmp_path, *args):
    """Headless chromium as root: no sandbox, its profile and HOME in tmp_path."""
    home = tmp_path / "chromium-home"
    home.mkdir(exist_ok=True)
    cmd = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        f"--user-data-dir={home / 'profile'}", "--window-size=1300,1000", *map(str, args),
    ]  # fmt: skip
    # Its own process group: whatever it forks goes with it.
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "HOME": str(home)},
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)
    assert proc.returncode == 0, err
    return out


class Rows(html.parser.HTMLParser):
    """The text of each certificate row (``tr.cert``) of a DOM, by status."""

    def __init__(self):
        super().__init__()
        self.rows, self.row, self.scripts, self.external = [], None, 0, []
        self.in_name = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "tr" and "cert" in (attrs.get("class") or "").split():
            self.row = {"status": attrs.get("data-status"), "text": ""}
        if tag == "script":
            self.scripts += 1
        for name in ("src", "href"):
            if attrs.get(name) and not attrs[name].startswith("#"):
                self.external.append(attrs[name])
        if tag == "span" and attrs.get("class") == "name" and self.row is not None:
            self.in_name = True
        if tag in ("i", "b") and self.row is not None:
            self.row["markup"] = True

    def handle_endtag(self, tag):
        if tag == "span":
            self.in_name = False
        if tag == "tr" and self.row is not None:
            self.rows.append(self.row)
            self.row = None

    def handle_data(self, data):
        if self.row is not None:
            self.row["text"] += data + " "
            if self.in_name:
                self.row["name"] = self.row.get("name", "") + data


@needs_chromium
def test_html_report_shows_every_certificate_in_a_real_browser(
    master_conf, pki_root, cluster_set, tmp_path
):
    page = tmp_path / "out" / "prod.html"
    page.parent.mkdir()
    with event_sink(master_conf):
        proc = check_expiration(master_conf, f"html={page}", out=None)
        data = check_expiration(master_conf, out="json")
    assert proc.returncode == 1, proc.stderr  # server.crt expired
    assert f"HTML report: {page}" in proc.stdout.splitlines()
    assert page.stat().st_mode & 0o777 == 0o644
    assert sorted(os.listdir(page.parent)) == ["prod.html"]  # no temporary left
    text = page.read_text()
    assert "PRIVATE KEY" not in text and "BEGIN" not in text
    report = json.loads(data.stdout)

    dom = chromium(tmp_path, "--dump-dom", page.as_uri())
    parsed = Rows()
    parsed.feed(dom)
    assert parsed.scripts == 0 and parsed.external == []
    shown = {row["name"]: row for row in parsed.rows}
    assert len(shown) == len(parsed.rows)
    # every certificate of the set, with its status and dates as the report has them
    assert set(shown) == {c["name"] for c in report["certificates"]}
    for cert in report["certificates"]:
        row = shown[cert["name"]]
        assert row["status"] == cert["status"], cert["name"]
        assert f" {cert['status']} " in f" {row['text']} ", cert["name"]
        if cert["status"] != "unreadable":
            assert cert["not_before"][:10] in row["text"]
            assert cert["not_after"][:10] in row["text"]
            assert cert["renew_from"][:10] in row["text"]
            assert f" {cert['days_left']} " in row["text"]
    statuses = {name: row["status"] for name, row in shown.items()}
    assert statuses["server.crt"] == "expired"
    assert statuses["kubecfg.crt"] == "renew-soon"
    assert statuses["ca.crt"] == "ok"
    assert statuses["broken<b>.crt"] == "unreadable"
    # markup from a certificate's subject is shown as text, not obeyed
    evil = shown["evil-ca.crt"]
    subject = next(c["subject"] for c in report["certificates"] if c["name"] == "evil-ca.crt")
    assert "<i>evil" in subject.replace("\\", "")
    assert subject in evil["text"] and "markup" not in evil
    assert "markup" not in shown["broken<b>.crt"]
    # CAs and leaves apart, and a legend naming every status
    assert dom.index("Certificate authorities") < dom.index("Leaf certificates")
    legend = dom[dom.index('class="legend"') :]
    for status in ("ok", "renew-soon", "expired", "unreadable", "renewal window", "today"):
        assert status in legend[: legend.index("</p>")]


def png_pixels(path):
    """(width, height, rows of RGB tuples) of an 8-bit RGB/RGBA PNG (what
    chromium writes), decoded with zlib alone."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat = 8, b""
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", body[:10])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    assert depth == 8 and colour in (2, 6)
    step = 3 if colour == 2 else 4
    raw, stride = zlib.decompress(idat), width * step
    rows, previous = [], bytearray(stride)
    for y in range(height):
        line = raw[y * (stride + 1) : (y + 1) * (stride + 1)]
        kind, cur = line[0], bytearray(line[1:])
        for i in range(stride):
            left = cur[i - step] if i >= step else 0
            up = previous[i]
            corner = previous[i - step] if i >= step else 0
            if kind == 1:
                cur[i] = (cur[i] + left) & 0xFF
            elif kind == 2:
                cur[i] = (cur[i] + up) & 0xFF
            elif kind == 3:
                cur[i] = (cur[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                pred = left if pa <= pb and pa <= pc else up if pb <= pc else corner
                cur[i] = (cur[i] + pred) & 0xFF
        rows.append([tuple(cur[x : x + 3]) for x in range(0, stride, step)])
        previous = cur
    return width, height, rows


@needs_chromium
def test_html_report_paints_the_status_colours(master_conf, pki_root, cluster_set, tmp_path):
    page = tmp_path / "prod.html"
    with event_sink(master_conf):
        proc = check_expiration(master_conf, f"html={page}")
    assert proc.returncode == 1, proc.stderr
    shot = tmp_path / "prod.png"
    chromium(tmp_path, f"--screenshot={shot}", page.as_uri())
    width, height, rows = png_pixels(shot)
    assert (width, height) == (1300, 1000)
    counts = {}
    for row in rows:
        for pixel in row:
            counts[pixel] = counts.get(pixel, 0) + 1
    assert len(counts) > 20  # not blank
    for status, rgb in COLOURS.items():
        assert counts.get(rgb, 0) > 200, (status, sorted(counts.items(), key=lambda kv: -kv[1])[:8])


@pytest.mark.parametrize(
    ("html", "message"),
    [
        ("report.html", "must be a plain absolute file path"),
        ("{tmp}/out/../out/report.html", "must be a plain absolute file path"),
        ("{tmp}/out/", "must be a plain absolute file path"),
        ("{tmp}/missing/report.html", "is not an existing folder"),
        ("{tmp}/out/link.html", "is a symbolic link; not following it"),
        ("{tmp}/out/folder.html", "exists and is not a regular file"),
    ],
)
def test_html_bad_destination_is_refused_and_nothing_written(
    master_conf, pki_root, tmp_path, html, message
):
    k8s_pki.ensure_set(pki_root, "prod", k8s_pki.seed_specs(), key_type="ecdsa-p256")
    out = tmp_path / "out"
    out.mkdir()
    (out / "folder.html").mkdir()
    target = tmp_path / "elsewhere.html"
    target.write_text("precious\n")
    (out / "link.html").symlink_to(target)
    before = snapshot(tmp_path)
    path = html.format(tmp=tmp_path)
    with event_sink(master_conf):
        proc = check_expiration(master_conf, f"html={path}", out=None)
    assert proc.returncode == 2
    errors = [line for line in proc.stdout.splitlines() if "html:" in line]
    assert len(errors) == 1 and message in errors[0], proc.stdout
    after = snapshot(tmp_path)
    assert {k: v for k, v in after.items() if not k.startswith("root/")} == {
        k: v for k, v in before.items() if not k.startswith("root/")
    }
    assert target.read_text() == "precious\n"


def test_html_render_escapes_names_and_reports_several_clusters():
    """The library on its own: two clusters in one page, names escaped."""
    import k8s_report

    when = "2026-01-01T00:00:00Z"
    cert = {
        "name": "a<b>.crt", "kind": "leaf", "subject": "CN=<script>x</script>", "issuer": "CN=ca",
        "not_before": "2025-01-01T00:00:00Z", "not_after": "2027-01-01T00:00:00Z",
        "renew_from": "2026-10-03T00:00:00Z", "days_left": 365, "status": "ok",
    }  # fmt: skip
    reports = [
        {"cluster_tag": tag, "directory": f"/pki/{tag}", "checked_at": when,
         "renew_before_days": 90, "certificates": [cert]}
        for tag in ("prod", "staging")
    ]  # fmt: skip
    page = k8s_report.render_html(reports)
    assert "<script>" not in page and "&lt;script&gt;" in page and "a&lt;b&gt;.crt" in page
    assert "<h2>Cluster prod</h2>" in page and "<h2>Cluster staging</h2>" in page
