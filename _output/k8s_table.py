"""
Print the k8s-helper runner's reports as plain tables.

``salt-run k8s-helper.check_expiration`` and ``k8s-helper.verify`` return
``{"outputter": "k8s_table", "data": <report>}``: salt-run prints the report
with this outputter, unless ``--out`` asks for another one (``--out=json`` prints
the report itself).  The master finds this module through ``outputter_dirs`` or
after ``salt-run saltutil.sync_output``; without it Salt falls back to its
``nested`` outputter, which prints the same data less compactly.
"""

import datetime

__virtualname__ = "k8s_table"


def __virtual__():
    return __virtualname__


def _table(header, rows):
    widths = [len(h) for h in header]
    for row in rows:
        widths = [max(w, len(str(cell))) for w, cell in zip(widths, row, strict=True)]
    lines = []
    for row in [header, *rows]:
        cells = [
            str(cell).rjust(width) if isinstance(cell, int) else str(cell).ljust(width)
            for cell, width in zip(row, widths, strict=True)
        ]
        lines.append("  ".join(cells).rstrip())
    return lines


def _date(iso):
    # 2031-01-02T03:04:05Z -> 2031-01-02 03:04 UTC
    return f"{iso[:10]} {iso[11:16]} UTC" if iso else "-"


def _days(value):
    return f"{value:g} day{'' if value == 1 else 's'}"


def _window(data):
    """The renewal rule as applied: threshold_days, or for a certificate that does not
    live longer than that, the last third of its lifetime (named, with its window)."""
    threshold = data.get("renew_before_days")
    rule = f"renew-soon: fewer than {threshold} days left"
    shorter = [
        f"{cert['name']} {_days(cert['renew_window_days'])}"
        for cert in data["certificates"]
        if cert.get("renew_window_days", threshold) != threshold
    ]
    if shorter:
        rule += (
            f", or for a certificate valid {threshold} days or less, the last third of its "
            f"lifetime ({', '.join(shorter)})"
        )
    return rule


def _expiry(data):
    lines = [
        f"Certificates of cluster {data.get('cluster_tag')!r} in {data.get('directory')}",
        f"(checked {_date(data.get('checked_at'))}; {_window(data)})",
        "",
    ]
    rows = []
    for cert in data["certificates"]:
        if cert["status"] == "unreadable":
            rows.append([cert["name"], "unreadable", "-", "-", cert.get("error", ""), ""])
            continue
        rows.append(
            [
                cert["name"],
                cert["status"],
                cert["days_left"],
                _date(cert["not_after"]),
                cert["subject"],
                cert["issuer"],
            ]
        )
    header = ["CERTIFICATE", "STATUS", "DAYS LEFT", "NOT AFTER", "SUBJECT", "ISSUER"]
    lines += _table(header, rows)
    lines += _expiry_footer(data, len(data["certificates"]))
    return "\n".join(lines)


def _expiry_footer(data, count):
    """The counts, notices, the event and the HTML page under an expiry table."""
    summary = data.get("summary", {})
    counts = ", ".join(f"{count} {status}" for status, count in summary.items())
    lines = ["", f"{count} certificates: {counts}"]
    lines += [f"notice: {notice}" for notice in data.get("notices", [])]
    if data.get("openbao_issuers"):  # the openbao backend: its own view of the CAs
        lines += ["", "CAs inside OpenBao:"]
        lines += _table(
            ["CA", "MOUNT", "ISSUER", "DEFAULT", "EXPIRES", "DAYS LEFT", "STATUS"],
            [
                [
                    row["ca"],
                    row["mount"],
                    row.get("issuer_name") or row.get("issuer_id", "-"),
                    "yes" if row.get("default") else "no",
                    row.get("not_after", "-"),
                    str(row.get("days_left", "-")),
                    row["status"],
                ]
                for row in data["openbao_issuers"]
            ],
        )
    event = data.get("event")
    if event:
        why = event.get("why") or ("fired" if event["fired"] else "not fired")
        lines.append(f"event {event['tag']}: {why}")
    if data.get("html"):
        lines.append(f"HTML report: {data['html']}")
    return lines


def _kubeadm_date(iso):
    # kubeadm's layout: 2031-01-02T03:04:05Z -> Jan 02, 2031 03:04 UTC
    when = datetime.datetime.strptime(iso, "%Y-%m-%dT%H:%M:%SZ")
    return when.strftime("%b %d, %Y %H:%M UTC")


def _residual(not_after, checked_at):
    """The time left as kubeadm prints it (Go's ShortHumanDuration): 45s, 12m, 7h, 364d, 9y."""
    parse = datetime.datetime.strptime
    seconds = int(
        (
            parse(not_after, "%Y-%m-%dT%H:%M:%SZ") - parse(checked_at, "%Y-%m-%dT%H:%M:%SZ")
        ).total_seconds()
    )
    if seconds < -1:
        return "<invalid>"
    for unit, size, below in (("s", 1, 60), ("m", 60, 60), ("h", 3600, 24), ("d", 86400, 365)):
        if seconds // size < below:
            return f"{max(seconds, 0) // size}{unit}"
    return f"{seconds // (86400 * 365)}y"


def _kubeadm_rows(entries, checked_at, with_ca):
    rows = []
    for cert in entries:
        if cert["status"] == "unreadable":
            rows.append([cert["name"], "-", "-", *(["-"] if with_ca else []), "-", "unreadable"])
            continue
        rows.append(
            [
                cert["name"],
                _kubeadm_date(cert["not_after"]),
                _residual(cert["not_after"], checked_at),
                *([cert.get("certificate_authority") or "-"] if with_ca else []),
                "yes" if cert.get("externally_managed") else "no",
                cert["status"],
            ]
        )
    return rows


def _kubeadm_expiry(data):
    """Two tables, as ``kubeadm certs check-expiration`` prints them, plus our status column."""
    checked_at = data.get("checked_at")
    lines = [
        f"Certificates of cluster {data.get('cluster_tag')!r} (kubeadm profile) in "
        f"{data.get('directory')}",
        f"(checked {_date(checked_at)}; {_window(data)})",
        "",
    ]
    tail = ["EXTERNALLY MANAGED", "STATUS"]
    lines += _table(
        ["CERTIFICATE", "EXPIRES", "RESIDUAL TIME", "CERTIFICATE AUTHORITY", *tail],
        _kubeadm_rows(data["certificates"], checked_at, True),
    )
    lines.append("")
    lines += _table(
        ["CERTIFICATE AUTHORITY", "EXPIRES", "RESIDUAL TIME", *tail],
        _kubeadm_rows(data["certificate_authorities"], checked_at, False),
    )
    broken = [c for c in data["certificates"] + data["certificate_authorities"] if c.get("error")]
    lines += [""] + [f"unreadable: {c['name']}: {c['error']}" for c in broken] if broken else []
    lines += _expiry_footer(data, len(data["certificates"]) + len(data["certificate_authorities"]))
    return "\n".join(lines)


def _verify(data):
    lines = [
        f"Certificates of cluster {data.get('cluster_tag')!r} on the minions "
        f"matching {data.get('tgt')!r}, compared with {data.get('directory')}",
        "",
    ]
    rows = []
    for host, info in sorted(data["hosts"].items()):
        if info.get("error"):
            rows.append([host, "-", info.get("status", "error"), info["error"]])
            continue
        for check in info.get("checks", []):
            rows.append([host, check["path"], check["status"], check.get("detail", "")])
    lines += _table(["MINION", "PATH", "STATUS", "DETAIL"], rows)
    lines += ["", data.get("summary_line", "")]
    return "\n".join(lines).rstrip()


def output(data, **kwargs):  # pylint: disable=unused-argument
    """Render a report; anything else goes to Salt's nested outputter."""
    if isinstance(data, dict) and isinstance(data.get("certificate_authorities"), list):
        return _kubeadm_expiry(data)
    if isinstance(data, dict) and isinstance(data.get("certificates"), list):
        return _expiry(data)
    if isinstance(data, dict) and isinstance(data.get("hosts"), dict):
        return _verify(data)
    import salt.output  # noqa: PLC0415

    return salt.output.out_format(data, "nested", __opts__)
