import pytest
import support


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
def salt_factories_config(tmp_path_factory):
    """pytest-salt-factories' root: short (AF_UNIX paths) and under pytest's basetemp."""
    return {"root_dir": str(tmp_path_factory.mktemp("sf"))}
