"""Test-only execution module: a minion whose answer to verify's probe is malformed.

Loaded through that one minion's ``module_dirs``, it takes the place of Salt's
``slsutil`` there (custom modules win over Salt's own), so ``slsutil.renderer``
returns what a broken or hostile minion might: a mapping of the wrong shape.
"""

__virtualname__ = "slsutil"


def __virtual__():
    return __virtualname__


def renderer(*args, **kwargs):  # noqa: ARG001 - the probe's arguments are ignored
    return {"given": ["ca.crt"], "files": {"ca.crt": "garbage", "kubecfg.key": {"path": 5}}}
