"""A masterless minion (salt-call --local with this checkout as file_roots) whose
every call runs inside a sandbox, and readers of a state.apply return: used by the
certificate, kubeadm and node life-cycle state tests."""

import json
import pathlib
import subprocess

import support


class Minion:
    """A masterless minion (salt-call --local) whose every call runs inside ``box``."""

    def __init__(self, box, base, minion_id="k8s-master-1", sync=True, **extra):
        self.box = box
        self.base = pathlib.Path(base)
        self.pillar_root = self.base / "pillar"
        support.write_pillar(self.pillar_root, {})
        self.conf = support.write_minion_config(self.base, self.pillar_root, minion_id, **extra)
        if not sync:  # rendering only: no custom module needed
            return
        # The formula's _states/_utils, synced the way a deployment does it.  It
        # writes only under the minion's root_dir, so it runs outside the sandbox.
        proc = subprocess.run(
            support.salt_call_argv(self.conf, "saltutil.sync_all"),
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        synced = json.loads(proc.stdout)["local"]
        assert "states.k8s_certs" in synced["states"], synced
        # the PKI library is a package: every module of it reaches the minion
        modules = (support.REPO / "_utils/k8s_pki").glob("*.py")
        package = {f"utils.k8s_pki.{path.stem}" for path in modules}
        assert package <= set(synced["utils"]), synced

    def pillar(self, data=None, text=None):
        support.write_pillar(self.pillar_root, data, text=text)

    def call(self, *args):
        """(process, parsed 'local' return or None), logging at info level to stderr."""
        proc = self.box.run(support.salt_call_argv(self.conf, "-l", "info", *args))
        try:
            data = json.loads(proc.stdout)["local"]
        except (ValueError, KeyError, TypeError):
            data = None
        return proc, data

    def log(self):
        path = self.base / "root/var/log/salt/minion"
        return path.read_text() if path.exists() else ""


def by_id(states):
    """{state id: result dict} from a state.apply return."""
    return {key.split("_|-")[1]: value for key, value in states.items()}


def changed(states):
    return sorted(sid for sid, r in by_id(states).items() if r["changes"])
