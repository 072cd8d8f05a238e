"""Benchmark: minting the seed set (CA, apiserver, kubecfg).

Measured side by side in one run, medians over many runs:

  a) the runner in-process (Salt's runner loader) vs. the bare `cryptography`
     calls making the same keys and certificates (the floor), ECDSA P-256 for a
     stable ratio and RSA-2048 for reference;
  b) `salt-run k8s-helper.generate_certs` vs. `salt-run test.arg` on one config;
  c) re-running on an existing valid set, in-process;
  d) for reference, the same set made with the openssl CLI.

Usage: .venv/bin/python bench/generate.py [--quick]
"""

import argparse
import datetime
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests"))

import ipaddress  # noqa: E402  (after the path setup, with the rest)

import support  # noqa: E402
from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec, rsa  # noqa: E402
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID  # noqa: E402


def floor_set(key_type, out_dir):
    """The same three keys and certificates with bare cryptography calls, written
    to files the plain way (write, no fsync, no checks, no lock, no staging)."""
    now = datetime.datetime.now(datetime.timezone.utc)

    def key():
        if key_type == "ecdsa-p256":
            return ec.generate_private_key(ec.SECP256R1())
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def cert(subject, issuer, pub, signer, days, exts):
        b = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(pub)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(pub), critical=False)
        )
        for ext, critical in exts:
            b = b.add_extension(ext, critical=critical)
        return b.sign(signer, hashes.SHA256())

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

    ca_key = key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubernetes-ca")])
    ca = cert(
        ca_name,
        ca_name,
        ca_key.public_key(),
        ca_key,
        3650,
        [
            (x509.BasicConstraints(ca=True, path_length=None), True),
            (ku(digital_signature=True, key_cert_sign=True, crl_sign=True), True),
        ],
    )
    aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())
    leaf_ku = ku(digital_signature=True, key_encipherment=key_type.startswith("rsa"))
    files = {"ca": (ca, ca_key)}
    sans = x509.SubjectAlternativeName(
        [
            x509.DNSName(n)
            for n in (
                "kubernetes.api",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            )
        ]
        + [x509.IPAddress(ipaddress.ip_address("10.254.0.1"))]
    )
    for name, attrs, eku, extra in (
        ("server", [("CN", "kube-apiserver")], ExtendedKeyUsageOID.SERVER_AUTH, [(sans, False)]),
        (
            "kubecfg",
            [("O", "system:masters"), ("CN", "kubecfg")],
            ExtendedKeyUsageOID.CLIENT_AUTH,
            [],
        ),
    ):
        k = key()
        oid = {"CN": NameOID.COMMON_NAME, "O": NameOID.ORGANIZATION_NAME}
        subject = x509.Name([x509.NameAttribute(oid[a], v) for a, v in attrs])
        exts = [
            (x509.BasicConstraints(ca=False, path_length=None), True),
            (leaf_ku, True),
            (x509.ExtendedKeyUsage([eku]), False),
            (aki, False),
            *extra,
        ]
        files[name] = (cert(subject, ca_name, k.public_key(), ca_key, 365, exts), k)
    os.makedirs(out_dir, mode=0o700)
    for name, (c, k) in files.items():
        with open(os.path.join(out_dir, f"{name}.crt"), "wb") as f:
            f.write(c.public_bytes(serialization.Encoding.PEM))
        fd = os.open(os.path.join(out_dir, f"{name}.key"), os.O_WRONLY | os.O_CREAT, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(
                k.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )


def openssl_set(out_dir):
    """The same set with the openssl CLI (RSA-2048), one process per step."""
    os.makedirs(out_dir)
    d = pathlib.Path(out_dir)
    run = lambda *a: subprocess.run(["openssl", *map(str, a)], check=True, capture_output=True)  # noqa: E731
    (d / "leaf.ext").write_text(
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\nsubjectAltName=DNS:kubernetes.api,DNS:kubernetes,"
        "DNS:kubernetes.default,DNS:kubernetes.default.svc,"
        "DNS:kubernetes.default.svc.cluster.local,IP:10.254.0.1\n"
    )
    (d / "client.ext").write_text(
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=clientAuth\n"
    )
    for name in ("ca", "server", "kubecfg"):
        run(
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            d / f"{name}.key",
        )
    run(
        "req",
        "-x509",
        "-new",
        "-key",
        d / "ca.key",
        "-subj",
        "/CN=kubernetes-ca",
        "-days",
        "3650",
        "-out",
        d / "ca.crt",
    )
    for name, subj, ext in (
        ("server", "/CN=kube-apiserver", "leaf.ext"),
        ("kubecfg", "/O=system:masters/CN=kubecfg", "client.ext"),
    ):
        run("req", "-new", "-key", d / f"{name}.key", "-subj", subj, "-out", d / f"{name}.csr")
        run(
            "x509",
            "-req",
            "-in",
            d / f"{name}.csr",
            "-CA",
            d / "ca.crt",
            "-CAkey",
            d / "ca.key",
            "-CAcreateserial",
            "-days",
            "365",
            "-extfile",
            d / ext,
            "-out",
            d / f"{name}.crt",
        )


def timed(func):
    t0 = time.perf_counter()
    func()
    return time.perf_counter() - t0


def interleaved(n, **candidates):
    """Run the candidates in turn n times; median seconds of each."""
    samples = {name: [] for name in candidates}
    for i in range(n):
        for name, func in candidates.items():
            samples[name].append(timed(lambda f=func, i=i: f(i)))
    return {name: statistics.median(s) for name, s in samples.items()}


def ms(seconds):
    return f"{seconds * 1000:.2f} ms"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer runs (a smoke test)")
    args = parser.parse_args()
    n_ec, n_rsa, n_cli = (20, 6, 3) if args.quick else (300, 60, 15)

    work = pathlib.Path(tempfile.mkdtemp(prefix="k8sf-bench-"))
    try:
        conf = support.write_master_config(work)
        runners = support.load_runners(conf)
        generate = runners["k8s-helper.generate_certs"]
        floor_root = work / "floor"
        print(f"machine: {os.cpu_count()} cores, {sys.platform}, Python {sys.version.split()[0]}")

        print("\n(a) a fresh set in-process: runner through Salt's loader vs. bare cryptography")
        for key_type, n in (("ecdsa-p256", n_ec), ("rsa-2048", n_rsa)):

            def runner(i, kt=key_type):
                ret = generate(cluster_tag=f"{kt}-{i}", key_type=kt)
                assert ret["changed"], ret

            def floor(i, kt=key_type):
                floor_set(kt, floor_root / f"{kt}-{i}")

            med = interleaved(n, runner=runner, floor=floor)
            print(
                f"  {key_type:<11} runner {ms(med['runner'])}  floor {ms(med['floor'])}  "
                f"ratio {med['runner'] / med['floor']:.2f}x  (median of {n})"
            )

        print("\n(c) re-run on an existing valid set, in-process (nothing written)")
        for key_type in ("ecdsa-p256", "rsa-2048"):
            tag = f"{key_type}-0"
            med = interleaved(
                n_ec, rerun=lambda i, t=tag, kt=key_type: generate(cluster_tag=t, key_type=kt)
            )
            print(f"  {key_type:<11} {ms(med['rerun'])}  (median of {n_ec})")

        print("\n(b) the real salt-run, event socket answered as a running master would")
        with support.event_sink(conf):

            def cli_generate(i):
                proc = support.salt_run(
                    conf, "k8s-helper.generate_certs", f"cluster_tag=cli-{i}", "key_type=ecdsa-p256"
                )
                assert proc.returncode == 0, proc.stderr

            def cli_generate_rsa(i):
                proc = support.salt_run(conf, "k8s-helper.generate_certs", f"cluster_tag=rsa-{i}")
                assert proc.returncode == 0, proc.stderr

            def cli_rerun(i):
                proc = support.salt_run(
                    conf, "k8s-helper.generate_certs", "cluster_tag=cli-0", "key_type=ecdsa-p256"
                )
                assert proc.returncode == 0, proc.stderr

            def cli_test_arg(i):
                assert support.salt_run(conf, "test.arg", "x").returncode == 0

            med = interleaved(
                n_cli,
                generate=cli_generate,
                generate_rsa=cli_generate_rsa,
                rerun=cli_rerun,
                test_arg=cli_test_arg,
            )
            for name in ("generate", "generate_rsa", "rerun"):
                print(
                    f"  salt-run k8s-helper.generate_certs ({name}) {ms(med[name])}  "
                    f"salt-run test.arg {ms(med['test_arg'])}  "
                    f"ratio {med[name] / med['test_arg']:.2f}x  (median of {n_cli})"
                )

        print("\n(d) reference: the same set (RSA-2048) with the openssl CLI")
        med = interleaved(
            n_cli,
            openssl=lambda i: openssl_set(work / f"openssl-{i}"),
            runner=lambda i: generate(cluster_tag=f"ref-{i}", key_type="rsa-2048"),
        )
        print(f"  openssl CLI {ms(med['openssl'])}  runner in-process {ms(med['runner'])}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
