"""Benchmark: minting the kubeadm profile.

Measured side by side in one run, medians over many runs:

  a) generate_certs profile=kubeadm in-process (Salt's runner loader) vs. the
     bare `cryptography` calls making the same keys, certificates and files
     (the floor), ECDSA P-256, for 3 masters + 3 nodes and 3 masters + 100
     nodes; RSA-2048 for reference (fewer runs: RSA key generation dominates
     and varies 2-3x from run to run);
  b) the ECDSA profile for 3 masters + 100 nodes through the real salt-run,
     vs. salt-run test.arg on the same config (the target: under 1 s);
  c) re-running on the existing valid set (nothing written), in-process.

Usage: .venv/bin/python bench/kubeadm.py [--quick]
"""

import argparse
import base64
import datetime
import os
import pathlib
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests"))

import support  # noqa: E402
from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec, rsa  # noqa: E402
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID  # noqa: E402

k8s_pki = support.k8s_pki


def hosts(n_masters, n_nodes):
    masters = [{"name": f"m{i}", "ip": f"10.0.0.{10 + i}"} for i in range(n_masters)]
    nodes = [{"name": f"n{i}"} for i in range(n_nodes)]
    return masters, nodes


def floor_profile(specs, key_type, out_dir):
    """The same keys, certificates and files with bare cryptography calls.

    ``specs`` is only read as data (names, SANs, issuers); every key and
    certificate is made by direct library calls and written the plain way
    (write, no fsync, no checks, no lock, no staging).
    """
    now = datetime.datetime.now(datetime.timezone.utc)
    usage = {"server": ExtendedKeyUsageOID.SERVER_AUTH, "client": ExtendedKeyUsageOID.CLIENT_AUTH}

    def key():
        if key_type == "ecdsa-p256":
            return ec.generate_private_key(ec.SECP256R1())
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def ku(**on):
        names = [
            "digital_signature",
            "content_commitment",
            "key_encipherment",
            "data_encipherment",
            "key_agreement",
            "key_cert_sign",
            "crl_sign",
            "encipher_only",
            "decipher_only",
        ]
        return x509.KeyUsage(**{n: on.get(n, False) for n in names})

    def name(cn, orgs):
        attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
        return x509.Name([*attrs, x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def base(subject, issuer, pub, days):
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(pub)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(pub), critical=False)
        )

    def pem_key(k):
        return k.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    out = {}
    cas = {}
    for rel, spec in specs.items():
        k = key()
        if isinstance(spec, k8s_pki.KeyPairSpec):
            pub = k.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            out[f"{rel}.key"], out[f"{rel}.pub"] = pem_key(k), pub
            continue
        if isinstance(spec, k8s_pki.CASpec):
            subject = name(spec.common_name, spec.organizations)
            cert = (
                base(subject, subject, k.public_key(), 3650)
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .add_extension(
                    ku(digital_signature=True, key_cert_sign=True, crl_sign=True), critical=True
                )
                .sign(k, hashes.SHA256())
            )
            cas[rel] = (cert, k)
            out[f"{rel}.crt"] = cert.public_bytes(serialization.Encoding.PEM)
            out[f"{rel}.key"] = pem_key(k)
            continue
        leaf = spec.leaf if isinstance(spec, k8s_pki.KubeconfigSpec) else spec
        ca_cert, ca_key = cas[leaf.issuer]
        builder = (
            base(name(leaf.common_name, leaf.organizations), ca_cert.subject, k.public_key(), 365)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                ku(digital_signature=True, key_encipherment=key_type.startswith("rsa")),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([usage[u] for u in leaf.usages]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
        )
        sans = [x509.DNSName(d) for d in leaf.dns_names]
        sans += [x509.IPAddress(ip) for ip in leaf.ip_addresses]
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert_pem = builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
        if isinstance(spec, k8s_pki.KubeconfigSpec):
            b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
            ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM)
            out[rel] = (
                f"apiVersion: v1\nkind: Config\nclusters:\n- name: kubernetes\n  cluster:\n"
                f"    certificate-authority-data: {b64(ca_pem)}\n    server: {spec.server}\n"
                f"contexts:\n- name: ctx\n  context:\n    cluster: kubernetes\n"
                f"    user: {leaf.common_name}\ncurrent-context: ctx\nusers:\n"
                f"- name: {leaf.common_name}\n  user:\n"
                f"    client-certificate-data: {b64(cert_pem)}\n"
                f"    client-key-data: {b64(pem_key(k))}\n"
            ).encode()
        else:
            out[f"{rel}.crt"], out[f"{rel}.key"] = cert_pem, pem_key(k)
    for rel, data in out.items():
        path = os.path.join(out_dir, rel)
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        secret = rel.endswith((".key", ".conf"))
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600 if secret else 0o644)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
    return len(out)


def timed(func):
    t0 = time.perf_counter()
    func()
    return time.perf_counter() - t0


def interleaved(n, **candidates):
    """Run the candidates in turn n times; median seconds of each.

    Before each sample (untimed) the page cache is written back with sync():
    the runner makes its files durable with one syncfs(), which would
    otherwise also pay for the files the previous candidate left dirty.
    """
    samples = {name: [] for name in candidates}
    for i in range(n):
        for name, func in candidates.items():
            os.sync()
            samples[name].append(timed(lambda f=func, i=i: f(i)))
    return {name: statistics.median(s) for name, s in samples.items()}


def ms(seconds):
    return f"{seconds * 1000:.1f} ms"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer runs (a smoke test)")
    args = parser.parse_args()
    n_small, n_large, n_rsa, n_cli = (10, 5, 2, 2) if args.quick else (200, 40, 8, 8)

    work = pathlib.Path(tempfile.mkdtemp(prefix="k8sf-bench-kubeadm-"))
    try:
        conf = support.write_master_config(work)
        generate = support.load_runners(conf)["k8s-helper.generate_certs"]
        print(f"machine: {os.cpu_count()} cores, {sys.platform}, Python {sys.version.split()[0]}")

        print("\n(a) a fresh kubeadm profile in-process: runner vs. bare cryptography (floor)")
        rows = (
            ("ecdsa-p256", 3, 3, n_small),
            ("ecdsa-p256", 3, 100, n_large),
            ("rsa-2048", 3, 3, n_rsa),
        )
        for key_type, n_masters, n_nodes, n in rows:
            masters, nodes = hosts(n_masters, n_nodes)
            specs = k8s_pki.kubeadm_specs(masters, nodes)
            label = f"{key_type}-{n_masters}-{n_nodes}"

            def runner(i, kt=key_type, m=masters, nd=nodes, label=label):
                ret = generate(
                    cluster_tag=f"{label}-{i}", key_type=kt, profile="kubeadm", masters=m, nodes=nd
                )
                assert ret.get("changed"), ret

            def floor(i, kt=key_type, specs=specs, label=label):
                floor_profile(specs, kt, work / "floor" / f"{label}-{i}")

            files = floor_profile(specs, key_type, work / "floor" / f"{label}-count")
            med = interleaved(n, runner=runner, floor=floor)
            print(
                f"  {key_type:<10} {n_masters} masters + {n_nodes:>3} nodes ({files} files): "
                f"runner {ms(med['runner'])}  floor {ms(med['floor'])}  "
                f"ratio {med['runner'] / med['floor']:.2f}x  (median of {n})"
            )

        print("\n(c) re-run on the existing valid set, in-process (nothing written)")
        for key_type, n_masters, n_nodes in (("ecdsa-p256", 3, 3), ("ecdsa-p256", 3, 100)):
            masters, nodes = hosts(n_masters, n_nodes)
            tag = f"{key_type}-{n_masters}-{n_nodes}-0"

            def rerun(i, tag=tag, kt=key_type, m=masters, nd=nodes):
                ret = generate(cluster_tag=tag, key_type=kt, profile="kubeadm", masters=m, nodes=nd)
                assert not ret["changed"], ret

            med = interleaved(n_small, rerun=rerun)
            print(
                f"  {n_masters} masters + {n_nodes:>3} nodes: {ms(med['rerun'])}  "
                f"(median of {n_small})"
            )

        print("\n(b) the real salt-run: ECDSA, 3 masters + 100 nodes (event socket answered)")
        masters_cli = (
            "[" + ", ".join(f"{{name: m{i}, ip: 10.0.0.{10 + i}}}" for i in range(3)) + "]"
        )
        nodes_cli = "[" + ", ".join(f"{{name: n{i}}}" for i in range(100)) + "]"
        with support.event_sink(conf):

            def cli_generate(i):
                proc = support.salt_run(
                    conf,
                    "k8s-helper.generate_certs",
                    f"cluster_tag=cli-{i}",
                    "key_type=ecdsa-p256",
                    "profile=kubeadm",
                    f"masters={masters_cli}",
                    f"nodes={nodes_cli}",
                )
                assert proc.returncode == 0, proc.stderr

            def cli_test_arg(i):
                assert support.salt_run(conf, "test.arg", "x").returncode == 0

            med = interleaved(n_cli, generate=cli_generate, test_arg=cli_test_arg)
            print(
                f"  salt-run k8s-helper.generate_certs profile=kubeadm {ms(med['generate'])}  "
                f"salt-run test.arg {ms(med['test_arg'])}  "
                f"ratio {med['generate'] / med['test_arg']:.2f}x  (median of {n_cli})"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
