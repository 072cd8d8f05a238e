"""A self-contained HTML page of certificate expiry reports (no Salt dunders).

``render_html(reports)`` turns what ``k8s_pki.expiry_report`` returns (with its
``cluster_tag``), for one cluster or several, into one HTML page: a timeline
per certificate (its validity, its renewal window, today), CAs and leaves in
separate tables, colours by status, and a legend.  Everything is inline (CSS,
SVG); no script, no external resource, so the file can be mailed, attached to
a ticket or printed.  Every text that comes from a certificate or a file name
is escaped: a subject may contain ``<``.

``write_html(path, text)`` writes it atomically at an absolute path checked by
``check_html_path``; a symlink at the destination is refused, never followed.
"""

import datetime
import html
import os
import stat
import tempfile

import k8s_pki

# Status colours, also named in the page's text (colour is never the only cue).
COLOURS = {
    "ok": "#2e7d32",
    "renew-soon": "#e6a100",
    "expired": "#c62828",
    "unreadable": "#757575",
}
HTML_MODE = 0o644  # a report holds names and dates only: readable by whoever reads reports
_WIDTH = 560  # pixels of a timeline
_ROW = 22

_CSS = """
body { font-family: sans-serif; margin: 1.5em; color: #212121; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; }
h2 { font-size: 1.2em; margin: 1.6em 0 0.2em; border-bottom: 1px solid #bbb; }
h3 { font-size: 1em; margin: 1em 0 0.3em; }
p.meta { color: #555; margin: 0.2em 0; }
table { border-collapse: collapse; }
th, td { padding: 2px 8px; text-align: left; vertical-align: middle; font-size: 0.9em; }
td.date { white-space: nowrap; }
td.cert { max-width: 19em; }
th { background: #eee; }
tr + tr td { border-top: 1px solid #e4e4e4; }
td.num { text-align: right; }
td.timeline, th.timeline { padding: 0; }
.subject { color: #555; font-size: 0.85em; }
.status { display: inline-block; padding: 1px 6px; border-radius: 3px; color: #fff;
          font-weight: bold; white-space: nowrap; }
.status.renew-soon { color: #212121; }
.legend span.item { display: inline-block; margin-right: 1.2em; white-space: nowrap; }
.legend svg { vertical-align: middle; }
svg text { font-family: sans-serif; font-size: 10px; fill: #444; }
"""


def _when(iso):
    return datetime.datetime.fromisoformat(iso.replace("Z", "+00:00"))


def _day(iso):
    return iso[:10] if iso else "-"


def _esc(text):
    return html.escape(str(text), quote=True)


class _Scale:
    """Dates to x positions, over [start, end]."""

    def __init__(self, start, end):
        self.start, self.end = start, max(end, start + datetime.timedelta(days=1))

    def x(self, when):
        span = (self.end - self.start).total_seconds()
        offset = (when - self.start).total_seconds()
        return round(min(max(offset / span, 0.0), 1.0) * _WIDTH, 1)

    def ticks(self):
        """(x, label) at the first of a month or year, at most about 12."""
        days = (self.end - self.start).days
        if days > 4 * 365:
            step = max(1, -(-days // (365 * 12)))
            year = self.start.year + 1
            while True:
                when = self.start.replace(year=year, month=1, day=1, hour=0, minute=0, second=0)
                if when > self.end:
                    return
                if year % step == 0:
                    yield self.x(when), str(year)
                year += 1
        months = next(m for m in (1, 2, 3, 6, 12) if days / (30.4 * m) <= 12)
        index = self.start.year * 12 + self.start.month  # the month after start's
        while True:
            year, month = divmod(index, 12)
            when = self.start.replace(year=year, month=month + 1, day=1, hour=0, minute=0, second=0)
            if when > self.end:
                return
            if month % months == 0:
                yield self.x(when), when.strftime("%Y-%m")
            index += 1


def _scale_for(entries, now):
    starts = [_when(e["not_before"]) for e in entries] + [now]
    ends = [_when(e["not_after"]) for e in entries] + [now]
    start, end = min(starts), max(ends)
    pad = (end - start) * 0.03
    return _Scale(start - pad, end + pad)


def _axis(scale, now):
    parts = [f'<svg width="{_WIDTH}" height="{_ROW}" role="img" aria-label="time axis">']
    for x, label in scale.ticks():
        parts.append(f'<line x1="{x}" y1="14" x2="{x}" y2="{_ROW}" stroke="#999"/>')
        if x < _WIDTH - 40:  # a label that fits
            parts.append(f'<text x="{x + 2}" y="11">{_esc(label)}</text>')
    today = scale.x(now)
    parts.append(
        f'<line x1="{today}" y1="0" x2="{today}" y2="{_ROW}" stroke="#000" stroke-width="2"/>'
        f'<text x="{today + 3}" y="21" font-weight="bold">today</text></svg>'
    )
    return "".join(parts)


def _bar(entry, scale, now):
    """One certificate's timeline: validity in its status colour, the renewal
    window hatched over it, today as a black line."""
    colour = COLOURS[entry["status"]]
    start, end = scale.x(_when(entry["not_before"])), scale.x(_when(entry["not_after"]))
    title = (
        f"{entry['name']}: {entry['status']}, valid {_day(entry['not_before'])} to "
        f"{_day(entry['not_after'])}"
    )
    parts = [
        f'<svg width="{_WIDTH}" height="{_ROW}" role="img" aria-label="{_esc(title)}">',
        f"<title>{_esc(title)}</title>",
        *(
            f'<line x1="{x}" y1="0" x2="{x}" y2="{_ROW}" stroke="#e3e3e3"/>'
            for x, _ in scale.ticks()
        ),
        f'<rect class="validity" x="{start}" y="5" width="{max(end - start, 1)}" height="12" '
        f'fill="{colour}"/>',
    ]
    if entry.get("renew_from"):
        window = scale.x(_when(entry["renew_from"]))
        parts.append(
            f'<rect class="renewal-window" x="{window}" y="5" width="{max(end - window, 1)}" '
            f'height="12" fill="url(#renewal-hatch)" stroke="#000" stroke-width="0.5"/>'
        )
    today = scale.x(now)
    parts.append(
        f'<line x1="{today}" y1="0" x2="{today}" y2="{_ROW}" stroke="#000" stroke-width="2"/></svg>'
    )
    return "".join(parts)


def _status(status):
    return (
        f'<span class="status {_esc(status)}" style="background:{COLOURS[status]}">'
        f"{_esc(status)}</span>"
    )


def _table(title, rows, scale, now):
    out = [
        f"<h3>{_esc(title)}</h3>",
        "<table><tr><th>Certificate</th><th>Status</th><th>Not before</th><th>Not after</th>"
        "<th>Days left</th><th>Renew from</th>"
        f'<th class="timeline">{_axis(scale, now)}</th></tr>',
    ]
    for entry in rows:
        out.append(
            f'<tr class="cert" data-status="{_esc(entry["status"])}">'
            f'<td class="cert"><span class="name">{_esc(entry["name"])}</span><br>'
            f'<span class="subject">{_esc(entry["subject"])} '
            f"(issuer {_esc(entry['issuer'])})</span></td>"
            f"<td>{_status(entry['status'])}</td>"
            f'<td class="date">{_day(entry["not_before"])}</td>'
            f'<td class="date">{_day(entry["not_after"])}</td>'
            f'<td class="num">{_esc(entry["days_left"])}</td>'
            f'<td class="date">{_day(entry.get("renew_from"))}</td>'
            f'<td class="timeline">{_bar(entry, scale, now)}</td></tr>'
        )
    out.append("</table>")
    return out


def _unreadable(rows):
    out = [
        "<h3>Files that could not be read</h3>",
        "<table><tr><th>File</th><th>Status</th><th>Reason</th></tr>",
    ]
    for entry in rows:
        out.append(
            '<tr class="cert" data-status="unreadable">'
            f'<td><span class="name">{_esc(entry["name"])}</span></td>'
            f"<td>{_status('unreadable')}</td><td>{_esc(entry.get('error', ''))}</td></tr>"
        )
    out.append("</table>")
    return out


def _swatch(fill, extra=""):
    return (
        f'<svg width="28" height="14"><rect x="0" y="1" width="28" height="12" fill="{fill}"/>'
        f"{extra}</svg>"
    )


def _legend():
    items = [
        f'<span class="item">{_swatch(colour)} {_esc(status)}</span>'
        for status, colour in COLOURS.items()
    ]
    hatch = '<rect x="0" y="1" width="28" height="12" fill="url(#renewal-hatch)"/>'
    items.append(
        f'<span class="item">{_swatch("#bdbdbd", hatch)} renewal window '
        "(from &ldquo;renew from&rdquo; to the end)</span>"
    )
    items.append(
        '<span class="item"><svg width="28" height="14"><line x1="14" y1="0" x2="14" y2="14" '
        'stroke="#000" stroke-width="2"/></svg> today</span>'
    )
    return '<p class="legend">' + "".join(items) + "</p>"


# The hatching of renewal windows, defined once and used by every timeline.
_DEFS = (
    '<svg width="0" height="0" style="position:absolute" aria-hidden="true"><defs>'
    '<pattern id="renewal-hatch" width="6" height="6" patternUnits="userSpaceOnUse" '
    'patternTransform="rotate(45)"><rect width="6" height="6" fill="none"/>'
    '<line x1="0" y1="0" x2="0" y2="6" stroke="#000" stroke-width="2.5" '
    'stroke-opacity="0.45"/></pattern></defs></svg>'
)


def render_html(reports, now=None):
    """The page for ``reports``: a list of check_expiration data (each with its
    ``cluster_tag``, ``directory``, ``checked_at``, ``renew_before_days`` and
    ``certificates``)."""
    now = now or (_when(reports[0]["checked_at"]) if reports else None)
    now = now or datetime.datetime.now(datetime.timezone.utc)
    readable = [e for r in reports for e in r["certificates"] if e["status"] != "unreadable"]
    scales = {
        kind: _scale_for([e for e in readable if e["kind"] == kind] or readable, now)
        for kind in ("ca", "leaf")
    }
    counts = {status: 0 for status in COLOURS}
    for report in reports:
        for entry in report["certificates"]:
            counts[entry["status"]] += 1
    tags = ", ".join(_esc(r["cluster_tag"]) for r in reports)
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Certificate expiry: {tags}</title>",
        f"<style>{_CSS}</style></head><body>",
        _DEFS,
        f"<h1>Certificate expiry: {tags}</h1>",
        f'<p class="meta">Checked {_esc(now.strftime("%Y-%m-%d %H:%M UTC"))}. '
        + ", ".join(f'<span class="count">{n} {_esc(s)}</span>' for s, n in counts.items())
        + ".</p>",
        _legend(),
    ]
    for report in reports:
        entries = report["certificates"]
        out += [
            f"<h2>Cluster {_esc(report['cluster_tag'])}</h2>",
            f'<p class="meta">{_esc(report["directory"])}; renew-soon: fewer than '
            f"{_esc(report['renew_before_days'])} days left (a certificate living no longer "
            "than that: its last third).</p>",
        ]
        for kind, title in (("ca", "Certificate authorities"), ("leaf", "Leaf certificates")):
            rows = [e for e in entries if e.get("kind") == kind]
            if rows:
                out += _table(title, rows, scales[kind], now)
        broken = [e for e in entries if e["status"] == "unreadable"]
        if broken:
            out += _unreadable(broken)
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def check_html_path(path):
    """The destination of an HTML report, or InputError: a plain absolute path
    in an existing folder, where nothing but a regular file is in the way."""
    if not isinstance(path, str) or not path or "\0" in path:
        raise k8s_pki.InputError(f"html: {path!r} is not a path")
    if not os.path.isabs(path) or os.path.normpath(path) != path or path.endswith("/"):
        raise k8s_pki.InputError(
            f"html: {path!r} must be a plain absolute file path (no '..', '.', '//' or "
            "trailing '/'), e.g. /var/tmp/certificates.html"
        )
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):
        raise k8s_pki.InputError(f"html: {parent} is not an existing folder; create it first")
    try:
        found = os.lstat(path)
    except FileNotFoundError:
        return path
    if stat.S_ISLNK(found.st_mode):
        raise k8s_pki.InputError(f"html: {path} is a symbolic link; not following it")
    if not stat.S_ISREG(found.st_mode):
        raise k8s_pki.InputError(f"html: {path} exists and is not a regular file")
    return path


def write_html(path, text):
    """Write ``text`` to ``path`` atomically (a temporary file in the same
    folder, renamed over it: a link put there meanwhile is replaced, not
    followed), with mode HTML_MODE whatever the umask."""
    fd, temporary = tempfile.mkstemp(
        dir=os.path.dirname(path), prefix=f".{os.path.basename(path)}.", suffix=".tmp"
    )
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), HTML_MODE)
            handle.write(text.encode("utf-8"))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
    return path
