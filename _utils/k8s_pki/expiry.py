"""Expiry of every certificate in a folder: the report and the alert."""

from __future__ import annotations

import datetime
import os

from .crypto import (
    days_left,
    describe_cert,
    is_ca,
    iso_utc,
    load_certs,
    renewal_due,
    renewal_window_days,
    signed_by,
)
from .defaults import DEFAULT_RENEW_BEFORE_DAYS, KUBECONFIG_SUFFIXES, PEM_SUFFIXES
from .errors import PKIError, SetError
from .guard import check_store, lstat_or_none
from .kubeadm_certs import kubeadm_label, kubeadm_name
from .kubeconfig import kubeconfig_certs
from .profiles import KUBEADM_CAS
from .writer import set_files

STATUSES = ("ok", "renew-soon", "expired", "unreadable")


def certificates_in_file(path, what=None):
    """Every certificate a file holds, as ``(label, cert)``; raises PKIError if unreadable.

    A PEM file gives one certificate (label "") or a bundle ("#1", "#2", ...);
    a kubeconfig gives the certificates embedded in it ("cluster <name>",
    "user <name>").
    """
    what = what or path
    with open(path, "rb") as handle:
        data = handle.read()
    if path.endswith(KUBECONFIG_SUFFIXES):
        return kubeconfig_certs(data, what)
    certs = load_certs(data, what)
    if len(certs) == 1:
        return [("", certs[0])]
    return [(f"#{index + 1}", cert) for index, cert in enumerate(certs)]


def expiry_status(cert, renew_before_days=DEFAULT_RENEW_BEFORE_DAYS, now=None):
    """ "ok", "renew-soon" or "expired" (the same window generate_certs renews in)."""
    due = renewal_due(cert, renew_before_days, now)
    if due == "expired":
        return "expired"
    return "renew-soon" if due else "ok"


def expiry_report(directory, specs=None, renew_before_days=DEFAULT_RENEW_BEFORE_DAYS, now=None):
    """Every certificate under a cluster's folder (backups left out), with its expiry status.

    Returns a plain dict: ``certificates`` (one entry per certificate: name,
    file, kind, subject, issuer, serial, sha256, not_before, not_after,
    days_left, status, renew_window_days, renew_from; ``member`` when the file is a
    pair of ``specs``), and
    ``summary`` (a count per status).  A file that cannot be read is an entry
    with status ``unreadable`` and the reason.
    """
    now = now or datetime.datetime.now(datetime.timezone.utc)
    check_store(directory)
    if not os.path.isdir(directory):
        raise SetError(f"{directory}: no certificate set here")
    members = {f"{name}.crt": name for name in specs or ()}
    entries, parsed = [], []
    for rel in sorted(set_files(directory)):
        if os.path.basename(rel).startswith(".") or not rel.endswith(
            PEM_SUFFIXES + KUBECONFIG_SUFFIXES
        ):
            continue
        path = os.path.join(directory, rel)
        base = {"name": rel, "file": rel, "path": path}
        if rel in members:
            base["member"] = members[rel]
        try:
            found = certificates_in_file(path, rel)
        except (PKIError, OSError) as err:
            reason = str(err) if isinstance(err, PKIError) else f"{rel}: {err.strerror}"
            entries.append({**base, "status": "unreadable", "error": reason})
            continue
        if not found:
            entries.append({**base, "status": "unreadable", "error": f"{rel}: no certificate"})
        for label, cert in found:
            info = describe_cert(cert)
            # the window applied to this one (shorter for a short-lived one)
            window = renewal_window_days(cert, renew_before_days)
            entries.append(
                {
                    **base,
                    "name": f"{rel} {label}" if label else rel,
                    "kind": "ca" if is_ca(cert) else "leaf",
                    "subject": info["subject"],
                    "issuer": info["issuer"],
                    "serial": info["serial"],
                    "sha256": info["sha256"],
                    "not_before": info["not_before"],
                    "not_after": info["not_after"],
                    "days_left": int(days_left(cert, now)),  # whole days, toward zero
                    "status": expiry_status(cert, renew_before_days, now),
                    "renew_window_days": round(window, 1),
                    # when it enters that window (what the HTML report draws)
                    "renew_from": iso_utc(
                        cert.not_valid_after_utc - datetime.timedelta(days=window)
                    ),
                }
            )
            parsed.append((entries[-1], cert))
    if not entries:
        raise SetError(f"{directory}: no certificate found")
    notices = _outliving_leaves(parsed)
    summary = {status: 0 for status in STATUSES}
    for entry in entries:
        summary[entry["status"]] += 1
    return {
        "directory": directory,
        "checked_at": iso_utc(now),
        "renew_before_days": renew_before_days,
        "certificates": entries,
        "summary": summary,
        **({"notices": notices} if notices else {}),
    }


def _outliving_leaves(parsed):
    """Flag each leaf that ends after the CA that signed it, and that CA.

    From the CA's end on every client refuses the leaf, whatever its own date
    says (an external CA of short life, or a set older than the capping in
    :func:`issue_leaf`).  Adds a ``notice`` to those entries; returns the notices.
    """
    cas = [(entry, cert) for entry, cert in parsed if entry["kind"] == "ca"]
    notices, short_cas = [], {}
    for entry, cert in parsed:
        if entry["kind"] != "leaf":
            continue
        for ca_entry, ca_cert in cas:
            # the dates first: one signature check only where it matters
            if cert.not_valid_after_utc > ca_cert.not_valid_after_utc and signed_by(cert, ca_cert):
                entry["notice"] = (
                    f"outlives its CA ({ca_entry['name']}): refused from "
                    f"{ca_entry['not_after']} on, not {entry['not_after']}"
                )
                notices.append(f"{entry['name']}: {entry['notice']}")
                short_cas.setdefault(id(ca_entry), (ca_entry, []))[1].append(entry["name"])
                break
    for ca_entry, leaves in short_cas.values():
        ca_entry["notice"] = f"ends before leaves it signs: {', '.join(leaves)}"
        notices.append(f"{ca_entry['name']}: {ca_entry['notice']}")
    return notices


def expiry_alert(report):
    """What an expiry event carries, or None when every certificate is fine.

    ``renew`` lists the set's leaves (pair names, ready for ``renew certs=``)
    that are due or expired; ``cas`` the CA files that are, which renewal
    cannot help; ``certificates`` every entry that is not ``ok``.
    """
    every = report["certificates"] + report.get("certificate_authorities", [])
    bad = [entry for entry in every if entry["status"] != "ok"]
    if not bad:
        return None
    renew = [e["member"] for e in bad if e.get("kind") == "leaf" and "member" in e]
    return {
        "directory": report["directory"],
        "renew_before_days": report["renew_before_days"],
        "renew": list(dict.fromkeys(renew)),
        "cas": [e["name"] for e in bad if e.get("kind") == "ca"],
        "certificates": [
            {
                key: entry[key]
                for key in ("name", "status", "days_left", "not_after", "subject", "error")
                if key in entry
            }
            for entry in bad
        ],
    }


def _summary(entries):
    summary = {status: 0 for status in STATUSES}
    for entry in entries:
        summary[entry["status"]] += 1
    return summary


def kubeadm_expiry(report):
    """:func:`expiry_report` of a kubeadm set in kubeadm's words, as its check-expiration shows it.

    Two lists: ``certificates`` (the leaves and kubeconfigs, named as kubeadm
    names them: ``apiserver (m0)``, ``admin.conf``) and
    ``certificate_authorities`` (``ca``, ``etcd-ca``, ``front-proxy-ca``).
    Each entry keeps its ``file`` and gains ``certificate_authority`` (kubeadm's
    name of the CA that signed it, by subject) and ``externally_managed``
    (the CA's key is not in the folder: nothing here can renew it).  The CA a
    kubeconfig embeds is left out when it is one of the set's CA certificates
    (it is that CA's row); another one stays, named ``<kubeconfig> (embedded
    CA)``, with a notice.  ``member`` is the name ``renew certs=`` takes.
    """
    directory = report["directory"]
    keyless = {
        member
        for member in KUBEADM_CAS
        if lstat_or_none(os.path.join(directory, f"{member}.key")) is None
    }
    ca_files = {f"{member}.crt": member for member in KUBEADM_CAS}
    ca_by_subject, ca_prints = {}, set()
    for entry in report["certificates"]:
        if entry.get("file") in ca_files and entry.get("kind") == "ca":
            ca_by_subject.setdefault(entry["subject"], ca_files[entry["file"]])
            ca_prints.add(entry["sha256"])
    certs, cas, notices = [], [], list(report.get("notices", []))
    for entry in report["certificates"]:
        rel = entry["file"]
        label = entry["name"][len(rel) :].strip()  # "", "#2", "user <name>", "cluster <name>"
        member = rel[: -len(".crt")] if rel.endswith(".crt") else rel
        name, _ = kubeadm_name(member)
        row = {**entry, "name": kubeadm_label(member) if name else rel}
        if label.startswith("#"):  # one CA of a bundle (a CA rotation under way)
            row["name"] += f" {label}"
        signer = ca_by_subject.get(entry.get("issuer"))
        row["certificate_authority"] = kubeadm_name(signer)[0] if signer else None
        if label.startswith("cluster "):
            if entry.get("sha256") in ca_prints:
                continue  # the set's own CA, already a row of its own
            row["name"] = f"{row['name']} (embedded CA)"
            notice = "embeds a CA certificate that is not one of the set's CAs"
            row["notice"] = notice
            notices.append(f"{row['name']}: {notice}")
        if entry.get("kind") == "ca" or (rel in ca_files and "kind" not in entry):
            row["externally_managed"] = ca_files.get(rel) in keyless
            cas.append(row)
            continue
        row["externally_managed"] = signer in keyless
        if name:
            row["member"] = name
        certs.append(row)
    certs.sort(key=lambda e: e["name"])
    cas.sort(key=lambda e: e["name"])
    kubeadm = {
        **report,
        "profile": "kubeadm",
        "certificates": certs,
        "certificate_authorities": cas,
        "summary": _summary(certs + cas),
    }
    kubeadm.pop("notices", None)
    if notices:
        kubeadm["notices"] = notices
    return kubeadm
