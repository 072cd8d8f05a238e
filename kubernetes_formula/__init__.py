"""
The kubernetes formula as a Salt extension: where Salt's loader finds its modules.

``pip install <checkout>`` (or ``salt-pip install``) registers :func:`loader_dirs`
in the ``salt.loader`` entry-point group (pyproject.toml): a master or minion then
loads the formula's runner, execution modules, states, ext_pillars and outputter
without ``runner_dirs``/``pillar_dirs``/... and without ``saltutil.sync_*``.
The module folders stay where they are in the checkout (``_runners/``,
``_modules/``, ...); a wheel carries them as ``kubernetes_formula/_runners/``, ...

Salt 3008's utils loader ignores entry points, so the PKI library
``_utils/k8s_pki/`` is also installed as the top-level package ``k8s_pki``,
which every module imports by that name.  The SLS files are not part of the
package: they stay a formula served from ``file_roots`` or gitfs.
"""

import os

# Salt's loader kinds (the keys it asks for) -> the formula's folder.
_FOLDERS = {
    "runners": "_runners",
    "modules": "_modules",
    "states": "_states",
    "pillar": "_pillar",
    "output": "_output",
    "utils": "_utils",
}


def _folder(name):
    """The folder ``name``: inside this package (a wheel) or beside it (a checkout)."""
    here = os.path.dirname(os.path.abspath(__file__))
    for candidate in (os.path.join(here, name), os.path.join(os.path.dirname(here), name)):
        if os.path.isdir(candidate):
            return candidate
    return None


def loader_dirs():
    """The formula's module folders, by loader kind (Salt's new-style entry point)."""
    found = {kind: _folder(name) for kind, name in _FOLDERS.items()}
    return {kind: [path] for kind, path in found.items() if path}
