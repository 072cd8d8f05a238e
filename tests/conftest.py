import logging

import pytest
import salt._logging.impl
import support
from support import sandbox

# Salt installs a handler that queues every log record until logging is set up
# and writes them to stderr at exit, after pytest's summary (and onto a closed
# stream).  Tests have no use for it: records go to pytest's handlers instead.
salt._logging.impl.shutdown_temp_handler()
logging.root.setLevel(logging.INFO)

# Host paths the certificate states would write if they escaped the sandbox.
HOST_PATHS = (
    "/srv",
    "/etc/ssl/certs",
    "/usr/local/share/ca-certificates",
    "/var/lib/kubelet",
    "/var/salt",
    "/etc/ca-certificates.conf",
    "/etc/pki",
    # ... and the node life-cycle states (kubernetes.running, kubelet.removed),
    # the test's init script and container runtimes.
    "/etc/kubernetes",
    "/etc/default/kubelet",
    "/etc/init.d/kubelet",
    "/etc/rc2.d",
    "/etc/systemd/system/kubelet.service.d",
    "/var/lib/kube-proxy",
    "/var/lib/kube-controller-manager",
    "/var/lib/kube-scheduler",
    "/var/log/kubelet.actions",
    "/etc/docker",
    "/run/docker",
    "/run/containerd",
    "/var/lib/docker",
    "/var/lib/containerd",
)


@pytest.fixture(scope="session")
def salt_factories_config(tmp_path_factory):
    """pytest-salt-factories under a short root: its unix sockets must fit AF_UNIX paths.

    ``slow_stop: False``: a module's daemons are killed when it ends instead of
    being asked to stop and waited for (5-10 s each, most of a daemon module's
    teardown); they live in temporary folders and nothing reads them afterwards.
    """
    return {"root_dir": str(tmp_path_factory.mktemp("sf")), "slow_stop": False}


@pytest.fixture
def pki_root(tmp_path):
    return tmp_path / "pki"


@pytest.fixture
def master_conf(tmp_path):
    """A throwaway master config loading the formula from this checkout (pki under tmp)."""
    return support.write_master_config(tmp_path)


@pytest.fixture
def runners(master_conf):
    return support.load_runners(master_conf)


@pytest.fixture(scope="session")
def host_before():
    """The host's certificate-related paths as they were when the session started."""
    return sandbox.host_tree(*HOST_PATHS)


@pytest.fixture(scope="module")
def host_untouched(host_before):
    """Fails the module (teardown error) if its tests changed the host's paths."""
    yield host_before
    after = sandbox.host_tree(*HOST_PATHS)
    changed = sorted(set(after) ^ set(host_before)) or sorted(
        p for p in after if after[p] != host_before[p]
    )
    assert not changed, f"the host changed: {changed[:10]}"


@pytest.fixture(scope="module")
def new_sandbox(tmp_path_factory, host_untouched):
    """Make fresh sandboxes (see tests/support/sandbox.py); skips where they cannot run."""
    reason = sandbox.available()
    if reason:
        pytest.skip(f"sandbox unavailable: {reason}")

    def make(name="box"):
        return sandbox.Sandbox(tmp_path_factory.mktemp(name))

    return make


def pytest_unconfigure(config):
    """Send Salt's deferred log records to a file instead of a closed stderr.

    Importing Salt in the pytest process installs a handler that keeps records
    (the daemons' "received a SIGTERM" lines, forwarded at teardown) and writes
    them to the stderr it saw at start when Python exits; by then pytest has
    closed that stream, and each record turns into a "--- Logging error ---"
    traceback printed after pytest's summary.  Keep them in the basetemp.
    """
    try:
        from salt._logging import impl
    except ImportError:
        return
    handler = impl.get_temp_handler()
    factory = getattr(config, "_tmp_path_factory", None)
    if handler is None or factory is None:
        return
    path = factory.getbasetemp() / "salt-deferred.log"
    # Not setStream(): it would first flush the queue to the old stream.
    handler.stream = open(path, "a")  # noqa: SIM115  (written and closed at exit)
