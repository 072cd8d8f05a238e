"""`make demo`: mint a cluster's certificates with the real salt-run, then check them.

Everything it writes stays under .demo/ in the checkout: a throwaway master
config whose root_dir and pki_root point there.  The checks use the openssl CLI,
independent of the code that made the certificates.
"""

import json
import pathlib
import shutil
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parent.parent
DEMO = REPO / ".demo"
BIN = pathlib.Path(sys.executable).parent


def write_config():
    root = DEMO / "root"
    (root / "var/cache/salt/master/proc").mkdir(parents=True, exist_ok=True)
    (DEMO / "master").write_text(
        json.dumps(
            {
                "root_dir": str(root),
                "runner_dirs": [str(REPO / "_runners")],
                "utils_dirs": [str(REPO / "_utils")],
                "k8s_helper": {"pki_root": str(DEMO / "pki")},
                "log_level": "quiet",
            },
            indent=2,
        )
    )


def run(*args):
    return subprocess.run(args, capture_output=True, text=True, check=False)


def check(what, ok, detail=""):
    print(f"  [{'ok' if ok else 'FAILED'}] {what}{': ' + detail if detail and not ok else ''}")
    return ok


def main():
    shutil.rmtree(DEMO / "pki", ignore_errors=True)
    write_config()
    args = [
        "cluster_tag=demo",
        "api_service_address=10.254.0.1",
        "api_server_fqdn=kubernetes.api",
        "extra_sans=[k8s-master-1, 192.0.2.11]",
    ]
    print("$ salt-run k8s-helper.generate_certs " + " ".join(args))
    proc = run(str(BIN / "salt-run"), "-c", str(DEMO), "k8s-helper.generate_certs", *args)
    print(proc.stdout)
    if proc.returncode != 0:
        print(proc.stderr, file=sys.stderr)
        return proc.returncode

    pki = DEMO / "pki/demo"
    print(f"Checking {pki} with openssl:")
    ok = True
    verify = run(
        "openssl", "verify", "-CAfile", pki / "ca.crt", pki / "server.crt", pki / "kubecfg.crt"
    )
    ok &= check(
        "server.crt and kubecfg.crt chain to ca.crt",
        verify.returncode == 0,
        verify.stdout + verify.stderr,
    )
    sans = run(
        "openssl", "x509", "-in", pki / "server.crt", "-noout", "-ext", "subjectAltName"
    ).stdout
    for name in (
        "DNS:kubernetes.api",
        "DNS:kubernetes.default.svc.cluster.local",
        "IP Address:10.254.0.1",
        "DNS:k8s-master-1",
        "IP Address:192.0.2.11",
    ):
        ok &= check(f"server.crt names {name}", name in sans, sans)
    purpose = run(
        "openssl",
        "x509",
        "-in",
        pki / "kubecfg.crt",
        "-noout",
        "-subject",
        "-ext",
        "extendedKeyUsage",
    ).stdout
    ok &= check(
        "kubecfg.crt is a client certificate of O=system:masters",
        "O = system:masters" in purpose and "TLS Web Client Authentication" in purpose,
        purpose,
    )
    for key in ("ca.key", "server.key", "kubecfg.key"):
        mode = (pki / key).stat().st_mode & 0o777
        ok &= check(f"{key} is mode 0600", mode == 0o600, oct(mode))
    print("demo " + ("passed" if ok else "FAILED") + f"; files are in {pki}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
