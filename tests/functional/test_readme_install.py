"""The README's install instructions, as written, with the real salt-run.

Option 3 ("point the master at the checkout"): its config snippet, with the
checkout's path for ``/srv/formulas/kubernetes-formula``, plus the README's
``ext_pillar`` snippet, makes a master that mints a set and hands it out
through pillar.  Without ``pillar_dirs`` (the snippet as it was) the
ext_pillar is unavailable: the same test shows that difference.  The test venv
does not hold the formula as a package (see the Makefile), so nothing but the
config can make Salt find it here.
"""

import json
import re

import pytest
import support
import yaml

README = support.REPO / "README.md"
PLACEHOLDER = "/srv/formulas/kubernetes-formula"


def _indented_block(text, after):
    """The first 4-space indented block after the line containing ``after``."""
    lines = text[text.index(after) :].splitlines()[1:]
    start = next(i for i, line in enumerate(lines) if line.startswith("    "))
    block = []
    for line in lines[start:]:
        if not line.startswith("    "):
            break
        block.append(line[4:])
    return "\n".join(block) + "\n"


def readme_dirs():
    """The ``*_dirs`` of install option 3, pointing at this checkout."""
    block = _indented_block(README.read_text(), "**3. Point the master at the checkout**")
    return yaml.safe_load(block.replace(PLACEHOLDER, str(support.REPO)))


def readme_ext_pillar():
    block = _indented_block(README.read_text(), "The recommended way is")
    return yaml.safe_load(block)["ext_pillar"]


def _master(base, dirs):
    conf = support.write_master_config(base)
    opts = yaml.safe_load((conf / "master").read_text())
    for key in ("runner_dirs", "utils_dirs", "outputter_dirs", "pillar_dirs"):
        opts.pop(key, None)
    opts.update(dirs, ext_pillar=readme_ext_pillar())
    (conf / "master").write_text(yaml.safe_dump(opts))
    return conf


@pytest.fixture(scope="module")
def readme_master(tmp_path_factory):
    base = tmp_path_factory.mktemp("readme")
    conf = _master(base, readme_dirs())
    with support.event_sink(conf):
        made = support.salt_run(conf, "k8s-helper.generate_certs", "key_type=ecdsa-p256")
        assert made.returncode == 0, made.stdout + made.stderr
        yield {"conf": conf, "pki": base / "pki"}


def test_option_3_snippet_names_every_folder():
    dirs = readme_dirs()
    assert set(dirs) == {"runner_dirs", "utils_dirs", "outputter_dirs", "pillar_dirs"}
    for key, folders in dirs.items():
        assert len(folders) == 1 and (support.REPO / folders[0]).is_dir(), key


def test_option_3_master_hands_out_the_set_through_the_ext_pillar(readme_master):
    shown = support.salt_run(readme_master["conf"], "pillar.show_pillar", "k8s-master-1")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    certs = json.loads(shown.stdout)["kubernetes"]["certs"]
    assert set(certs) == {"ca.crt", "kubecfg.crt", "kubecfg.key", "server.cert", "server.key"}
    ca = (readme_master["pki"] / "default" / "ca.crt").read_text()
    assert certs["ca.crt"].strip() == ca.strip()


def test_without_pillar_dirs_the_ext_pillar_is_unavailable(readme_master, tmp_path):
    """Why the snippet needs pillar_dirs: the old snippet's master compiles no certificates."""
    dirs = {k: v for k, v in readme_dirs().items() if k != "pillar_dirs"}
    conf = _master(tmp_path, dirs)
    opts = yaml.safe_load((conf / "master").read_text())
    opts["k8s_helper"]["pki_root"] = str(readme_master["pki"])
    (conf / "master").write_text(yaml.safe_dump(opts))
    with support.event_sink(conf):
        shown = support.salt_run(conf, "pillar.show_pillar", "k8s-master-1")
    assert "kubernetes" not in (json.loads(shown.stdout) or {}), shown.stdout


def test_salt_run_d_is_how_the_readme_shows_the_docs(readme_master):
    text = README.read_text()
    assert "salt-run -d k8s-helper" in text
    assert not re.search(r"doc\.runner\s+k8s-helper", text)
    proc = support.salt_run(readme_master["conf"], "-d", "k8s-helper", out=None)
    assert proc.returncode == 0, proc.stderr
    assert "k8s-helper.generate_certs:" in proc.stdout
    assert "k8s-helper.renew:" in proc.stdout
