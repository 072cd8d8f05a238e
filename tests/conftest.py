import logging

import pytest
import salt._logging.impl
import support

# Salt installs a handler that queues every log record until logging is set up
# and writes them to stderr at exit, after pytest's summary (and onto a closed
# stream).  Tests have no use for it: records go to pytest's handlers instead.
salt._logging.impl.shutdown_temp_handler()
logging.root.setLevel(logging.INFO)


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
