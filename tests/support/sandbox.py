"""Run commands as root against a throwaway copy of /etc, /var, /srv, /usr/local and /usr/bin.

Each :meth:`Sandbox.run` starts a private mount namespace (``unshare --mount
--propagation private``) and mounts an overlay over each of those folders: the
host's folder is the read-only lower layer, a folder under the sandbox's base
dir (a pytest tmp dir) the upper layer.  Writes land in the upper layers only,
and the mounts vanish with the last process of the namespace: the host never
changes.  The upper layers stay, so several runs with the same Sandbox see one
another's writes, like one machine.

``/etc/ca-certificates/update.d`` is covered with an empty folder: Debian's
hooks there (the Java keystore one) would reach outside the overlays.

Later tests reuse this for any state that writes the real system paths::

    box = Sandbox(tmp_path / "box")
    box.run(["salt-call", "--local", "-c", conf, "state.apply", "kubernetes.certs.present"])
    box.tree("/srv/kubernetes")        # what the merged view holds, from inside
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys

# /usr/bin: where packages put binaries (a stand-in kubelet, tests/support/services.py).
OVERLAID = ("/etc", "/var", "/srv", "/usr/local", "/usr/bin")
EMPTIED = ("/etc/ca-certificates/update.d",)

# Prints, as JSON, every entry under the given paths: kind, mode, owner, and the
# bytes (hex) of files or the target of links.  Runs inside the namespace.
_TREE = r"""
import json, os, stat, sys
out = {}
def add(path):
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    entry = {"mode": stat.S_IMODE(st.st_mode), "uid": st.st_uid, "gid": st.st_gid}
    if stat.S_ISLNK(st.st_mode):
        entry.update(kind="link", target=os.readlink(path))
    elif stat.S_ISDIR(st.st_mode):
        entry["kind"] = "dir"
    else:
        with open(path, "rb") as handle:
            entry.update(kind="file", data=handle.read().hex())
    out[path] = entry
for top in sys.argv[1:]:
    add(top)
    if os.path.isdir(top) and not os.path.islink(top):
        for dirpath, dirnames, filenames in os.walk(top):
            for name in sorted(dirnames + filenames):
                add(os.path.join(dirpath, name))
json.dump(out, sys.stdout)
"""


def available():
    """Why the sandbox cannot run here, or None when it can."""
    if os.geteuid() != 0:
        return "needs root (mount namespaces and overlay mounts)"
    if not shutil.which("unshare"):
        return "needs unshare (util-linux)"
    missing = [d for d in OVERLAID if not os.path.isdir(d)]
    if missing:
        return f"needs the folders {', '.join(missing)} to exist on the host"
    return None


class Sandbox:
    def __init__(self, base):
        self.base = pathlib.Path(base)
        self.empty = self.base / "empty"
        self.empty.mkdir(parents=True, exist_ok=True)
        for top in OVERLAID:
            self.upper_root(top).mkdir(parents=True, exist_ok=True)
            (self.base / ("wk" + top.replace("/", "_"))).mkdir(parents=True, exist_ok=True)

    def upper_root(self, top):
        return self.base / ("up" + top.replace("/", "_"))

    def upper(self, path):
        """Where a file the sandbox wrote to ``path`` lives on the host (its upper layer)."""
        path = os.path.abspath(path)
        for top in sorted(OVERLAID, key=len, reverse=True):
            if path == top or path.startswith(top + "/"):
                return self.upper_root(top) / os.path.relpath(path, top)
        raise ValueError(f"{path} is not under one of {OVERLAID}")

    def prelude(self):
        """Shell commands that build the sandbox's view inside a fresh mount namespace."""
        lines = []
        for top in OVERLAID:
            upper = self.upper_root(top)
            work = self.base / ("wk" + top.replace("/", "_"))
            lines.append(
                f"mount -t overlay overlay -o lowerdir={top},upperdir={upper},workdir={work} {top}"
            )
        for path in EMPTIED:
            lines.append(f"if [ -d {path} ]; then mount --bind {self.empty} {path}; fi")
        return "\n".join(lines) + "\n"

    def wrap(self, argv):
        """The command line that runs ``argv`` inside the sandbox (same pid: exec all the way)."""
        script = self.prelude() + 'exec "$@"\n'
        return [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-ec",
            script,
            "sandbox",
        ] + [str(a) for a in argv]

    def run(self, argv, check=False, timeout=300, **kwargs):
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        proc = subprocess.run(self.wrap(argv), timeout=timeout, check=False, **kwargs)
        if check and proc.returncode != 0:
            raise AssertionError(
                f"sandboxed {' '.join(map(str, argv))} exited {proc.returncode}\n"
                f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
            )
        return proc

    def tree(self, *paths):
        """{path: {kind, mode, uid, gid, data (hex) | target}} for everything under ``paths``,
        as seen inside the sandbox."""
        proc = self.run([sys.executable, "-c", _TREE, *paths], check=True)
        return json.loads(proc.stdout)

    def read(self, path):
        """Bytes of ``path`` as seen inside the sandbox, or None."""
        entry = self.tree(path).get(path)
        if entry is None:
            return None
        return bytes.fromhex(entry["data"])


def tree_in(pid, *paths):
    """The same listing, as seen by the running process ``pid`` (e.g. a sandboxed
    daemon started with :meth:`Sandbox.wrap`): enters its mount namespace.

    Use this, not :meth:`Sandbox.tree`, while the daemon runs: a second overlay
    mount of the same upper and work folders is refused."""
    proc = subprocess.run(
        ["nsenter", "--target", str(pid), "--mount", sys.executable, "-c", _TREE, *paths],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(proc.stdout)


def host_tree(*paths):
    """The same listing as :meth:`Sandbox.tree`, of the host itself (no sandbox)."""
    proc = subprocess.run(
        [sys.executable, "-c", _TREE, *paths], capture_output=True, text=True, check=True
    )
    return json.loads(proc.stdout)
