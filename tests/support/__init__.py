"""Helpers shared by the tests (and the benchmarks): real Salt, real files."""

import concurrent.futures
import contextlib
import os
import pathlib
import re
import socket
import subprocess
import sys
import threading

import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]
VENV_BIN = pathlib.Path(sys.executable).parent
sys.path.insert(0, str(REPO / "_utils"))

import k8s_pki  # noqa: E402, F401  (the library under test, from _utils/; tests use support.k8s_pki)

SEED_FILES = ("ca.crt", "ca.key", "server.crt", "server.key", "kubecfg.crt", "kubecfg.key")


def at_once(func, items):
    """``[func(item) for item in items]``, each call in a thread of its own.

    For steps that wait on daemons or subprocesses (a salt CLI call to each
    minion, a daemon's start): side by side they cost about one.
    """
    items = list(items)
    with concurrent.futures.ThreadPoolExecutor(max(len(items), 1)) as pool:
        return list(pool.map(func, items))


def start_together(stack, factories):
    """Start pytest-salt-factories daemons at once; ``stack`` (an ExitStack) stops them at once.

    Each start waits for its own daemon to be up (a minion: connected to its
    master), a few seconds each.
    """
    factories = list(factories)
    stack.callback(at_once, lambda f: f.terminate(), factories)  # not started: nothing to stop
    at_once(lambda f: f.start(), factories)


def write_master_config(base, **extra):
    """A master config dir under ``base`` that loads the formula from this checkout.

    Returns the config directory; certificates go to ``base/pki``.
    """
    base = pathlib.Path(base)
    root = base / "root"
    (root / "var/cache/salt/master/proc").mkdir(parents=True, exist_ok=True)
    (root / "var/run/salt/master").mkdir(parents=True, exist_ok=True)
    opts = {
        "root_dir": str(root),
        "runner_dirs": [str(REPO / "_runners")],
        "utils_dirs": [str(REPO / "_utils")],
        "outputter_dirs": [str(REPO / "_output")],
        "k8s_helper": {"pki_root": str(base / "pki")},
        **extra,
    }
    conf = base / "conf"
    conf.mkdir(exist_ok=True)
    (conf / "master").write_text(yaml.safe_dump(opts))
    return conf


def load_runners(conf_dir):
    """The runner functions, loaded in-process the way salt-run loads them."""
    import salt.config
    import salt.loader

    opts = salt.config.master_config(str(pathlib.Path(conf_dir) / "master"))
    return salt.loader.runner(opts, utils=salt.loader.utils(opts))


def make_recorded_set(root, tag, profile, key_type="ecdsa-p256", **settings):
    """A set of ``profile`` under ``root`` with its cluster.yaml, as generate_certs writes it
    (``settings``: those that differ from the profile's defaults, e.g. masters, nodes)."""
    recorded = {"profile": profile, **k8s_pki.PROFILE_DEFAULTS[profile], "key_type": key_type}
    recorded.update({name: k8s_pki.canonical(name, value) for name, value in settings.items()})
    k8s_pki.ensure_set(
        root,
        tag,
        k8s_pki.specs_for(recorded),
        key_type=key_type,
        manifest=k8s_pki.render_manifest(recorded),
    )
    return pathlib.Path(root) / tag


def sign_csr_as(conf_dir, minion_id, **extra):
    """``k8s-helper.sign_csr`` loaded as peer_run runs a minion's call.

    ``salt.daemons.masterapi.RemoteFuncs.minion_runner`` loads the runner with
    the master's options and ``id`` set to the minion id Salt authenticated.
    """
    import salt.config
    import salt.loader

    opts = salt.config.master_config(str(pathlib.Path(conf_dir) / "master"))
    opts.update({"id": minion_id, **extra})
    return salt.loader.runner(opts, utils=salt.loader.utils(opts))["k8s-helper.sign_csr"]


def compiled_pillar(base, pki_root, minion_id, ext_pillar):
    """``minion_id``'s pillar as the master's own compiler makes it, with ``ext_pillar``
    (the formula's ext_pillars loaded from this checkout) over sets in ``pki_root``."""
    import salt.config
    import salt.pillar

    base = pathlib.Path(base)
    pillar_root = write_pillar(base / "pillar-roots", None, text="{}\n")
    conf = write_master_config(
        base / "m",
        pillar_roots={"base": [str(pillar_root)]},
        pillar_dirs=[str(REPO / "_pillar")],
        ext_pillar=ext_pillar,
        file_client="local",
        k8s_helper={"pki_root": str(pki_root)},
    )
    opts = salt.config.master_config(str(conf / "master"))
    return salt.pillar.get_pillar(opts, {"id": minion_id}, minion_id).compile_pillar()


@contextlib.contextmanager
def event_sink(conf_dir):
    """Accept and drop the events salt-run publishes when no master daemon runs.

    Without a listener every salt-run waits ~2 s trying to connect; this makes a
    call cost ~0.6 s.  It changes nothing about what the runner does.
    """
    opts = yaml.safe_load((pathlib.Path(conf_dir) / "master").read_text())
    path = pathlib.Path(opts["root_dir"]) / "var/run/salt/master/master_event_pull.ipc"
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen(64)

    def drain(conn):
        with conn:
            while conn.recv(65536):
                pass

    def serve():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=drain, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield
    finally:
        server.close()
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def salt_run(conf_dir, fun, *args, out="json"):
    """Run the real salt-run; returns the CompletedProcess (stdout/stderr as text).

    ``out=None`` leaves the outputter to salt-run (what an operator sees).
    """
    outs = [f"--out={out}"] if out else []
    cmd = [str(VENV_BIN / "salt-run"), "-c", str(conf_dir), *outs, fun, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


def snapshot(root):
    """Every file and folder under ``root`` with its mode and bytes: to prove nothing changed."""
    root = pathlib.Path(root)
    if not root.exists():
        return {}
    state = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = pathlib.Path(dirpath, name)
            st = path.lstat()
            data = path.read_bytes() if path.is_file() and not path.is_symlink() else None
            state[str(path.relative_to(root))] = (st.st_mode, st.st_ino, data)
    return state


def openssl(*args, check=True):
    proc = subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"openssl {' '.join(map(str, args))} failed: {proc.stderr}")
    return proc


# --------------------------------------------------------------------------
# Minion side: salt-call --local against this checkout
# --------------------------------------------------------------------------

#: pillar key under kubernetes:certs -> file name in a generated set
PILLAR_FILES = k8s_pki.PILLAR_FILES


# The pillar example of the user's certificate-management document, verbatim
# (only its "..." placeholder lines left out).
SEED_PILLAR = """\
{% set cluster_tag = "default" %}
{% set pki_path = "/var/salt/k8s-helper/pki/" + cluster_tag + "/" %}

kubernetes:
  k8s_env: {{ cluster_tag }}
  certs:
    "ca.crt": |
      {{ salt.cmd.run("cat " + pki_path + "ca.crt") | indent(8) }}
    "kubecfg.crt": |
      {{ salt.cmd.run("cat " + pki_path + "kubecfg.crt") | indent(8) }}
    "kubecfg.key": |
      {{ salt.cmd.run("cat " + pki_path + "kubecfg.key") | indent(8) }}
    "server.cert": |
      {{ salt.cmd.run("cat " + pki_path + "server.crt") | indent(8) }}
    "server.key": |
      {{ salt.cmd.run("cat " + pki_path + "server.key") | indent(8) }}
"""


def pillar_certs(set_dir, server=True):
    """The ``kubernetes:certs`` mapping for a set written by generate_certs."""
    set_dir = pathlib.Path(set_dir)
    return {
        key: (set_dir / name).read_text()
        for key, name in PILLAR_FILES.items()
        if server or key not in k8s_pki.MASTERS_ONLY
    }


def write_pillar(pillar_root, data, text=None):
    """A pillar tree with one sls (``k8s``) for every minion: ``data`` as YAML, or raw ``text``."""
    pillar_root = pathlib.Path(pillar_root)
    pillar_root.mkdir(parents=True, exist_ok=True)
    (pillar_root / "top.sls").write_text("base:\n  '*':\n    - k8s\n")
    (pillar_root / "k8s.sls").write_text(text if text is not None else yaml.safe_dump(data))
    return pillar_root


def formula_root(base):
    """A folder serving the formula as a salt file root: links to ``kubernetes/`` and
    the ``_*`` extension folders of this checkout, and nothing else (a checkout holds
    a .venv with thousands of files that every ``saltutil.sync_*`` would walk)."""
    root = pathlib.Path(base) / "formula"
    root.mkdir(parents=True, exist_ok=True)
    for part in REPO.iterdir():
        if part.is_dir() and (part.name == "kubernetes" or part.name.startswith("_")):
            link = root / part.name
            if not link.exists():
                link.symlink_to(part)
    return root


def write_minion_config(base, pillar_root, minion_id="k8s-master-1", **extra):
    """A masterless minion config serving the formula (see formula_root) as file_roots.

    Returns the config directory.  ``extension_modules`` can be shared between
    configs so one ``saltutil.sync_all`` serves them all.
    """
    base = pathlib.Path(base)
    opts = {
        "id": minion_id,
        "file_client": "local",
        "root_dir": str(base / "root"),
        "user": "root",
        "file_roots": {"base": [str(formula_root(base))]},
        "pillar_roots": {"base": [str(pillar_root)]},
        **extra,
    }
    conf = base / "conf"
    conf.mkdir(parents=True, exist_ok=True)
    (conf / "minion").write_text(yaml.safe_dump(opts))
    return conf


def salt_call_argv(conf_dir, *args, out="json"):
    """argv of the real salt-call --local (exit status passed through from states)."""
    return [
        str(VENV_BIN / "salt-call"),
        "--local",
        "-c",
        str(conf_dir),
        f"--out={out}",
        "--retcode-passthrough",
        *map(str, args),
    ]


def key_lines(*pems):
    """The base64 body lines of PEM keys: if any shows up in output, key material leaked."""
    lines = []
    for pem in pems:
        text = pem.decode() if isinstance(pem, bytes) else pem
        lines += [ln for ln in text.splitlines() if ln and not ln.startswith("-----")]
    return lines


def leaked(text, pems):
    """The first key line (or PEM key header) found in ``text``, or None."""
    if "PRIVATE KEY" in text:
        return "PRIVATE KEY"
    return next((line for line in key_lines(*pems) if line in text), None)


# --------------------------------------------------------------------------
# pillar.example: the examples in its comments are tested, not just shown
# --------------------------------------------------------------------------

EXAMPLE = REPO / "pillar.example"


def example_snippets():
    """The indented example blocks inside pillar.example's comments.

    A block starts at a comment line ``#   ext_pillar:`` or ``#   # <name>`` and
    runs to the next bare ``#`` line.
    """
    blocks, name, lines = {}, None, []
    for line in EXAMPLE.read_text().splitlines():
        if name is not None:
            if line.strip() == "#":
                blocks[name] = "\n".join(lines) + "\n"
                name, lines = None, []
            else:
                lines.append(line[4:])
            continue
        if line.startswith("#   ext_pillar:"):
            name, lines = "ext_pillar", [line[4:]]
        elif re.match(r"^#   # \S+\.sls$", line):
            name, lines = line[6:], []
    return blocks


def documented_ext_pillar():
    """The ``ext_pillar`` list exactly as pillar.example shows it."""
    return yaml.safe_load(example_snippets()["ext_pillar"])["ext_pillar"]
