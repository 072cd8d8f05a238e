"""The OpenBao backend's master config, parsed strictly (no server needed).

Every bad input is refused with one line that starts with the key's path and
never shows a secret.
"""

import os

import pytest
from support.openbao import k8s_openbao, master_opts, write_secret

SECRET = "s.secret-token-that-must-never-show"


@pytest.fixture
def token_file(tmp_path):
    return write_secret(tmp_path / "token", SECRET)


def parse(url="https://bao.example:8200", auth=None, **extra):
    return k8s_openbao.parse_config(master_opts(url, auth, **extra))


def refused(opts_or_call, key):
    with pytest.raises(k8s_openbao.ConfigError) as info:
        opts_or_call()
    message = str(info.value)
    assert message.startswith(key), message
    assert "\n" not in message
    assert SECRET not in message
    return message


def token_auth(path):
    return {"method": "token", "token_file": path}


def test_a_good_config_with_defaults(token_file):
    config = parse(auth=token_auth(token_file))
    assert config.urls == ("https://bao.example:8200",)
    assert config.auth == k8s_openbao.TokenAuth(token_file=token_file)
    assert config.mount_prefix == "k8s-pki"
    assert config.ca_bundle is None
    assert (config.timeout, config.retry_seconds) == (10, 30)
    assert k8s_openbao.mount_path(config, "prod", "ca") == "k8s-pki/prod/ca"


def test_backend_defaults_to_local_and_is_checked():
    assert k8s_openbao.backend({}) == "local"
    assert k8s_openbao.backend({"k8s_helper": {"pki_root": "/x"}}) == "local"
    assert k8s_openbao.backend({"k8s_helper": {"backend": "openbao"}}) == "openbao"
    refused(lambda: k8s_openbao.backend({"k8s_helper": {"backend": "vault"}}), "k8s_helper:backend")
    refused(lambda: k8s_openbao.backend({"k8s_helper": ["x"]}), "k8s_helper")


def test_missing_section_and_unknown_keys(token_file):
    refused(lambda: k8s_openbao.parse_config({"k8s_helper": {}}), "k8s_helper:openbao")
    refused(
        lambda: k8s_openbao.parse_config({"k8s_helper": {"openbao": "http://x"}}),
        "k8s_helper:openbao",
    )
    refused(lambda: parse(auth=token_auth(token_file), token="x"), "k8s_helper:openbao:token")
    refused(
        lambda: parse(auth={**token_auth(token_file), "role_id": "r"}),
        "k8s_helper:openbao:auth:role_id",
    )


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8200",
        "http://localhost:8200",
        "http://[::1]:8200",
        "https://bao.example",
        "https://10.0.0.5:8200/",
    ],
)
def test_accepted_urls(url, token_file):
    assert parse(url=url, auth=token_auth(token_file)).urls == (url.rstrip("/"),)


@pytest.mark.parametrize(
    "url",
    [
        None,
        "",
        [],
        42,
        "bao.example:8200",
        "ftp://bao.example",
        "http://bao.example:8200",
        "http://10.0.0.5:8200",
        "http://127.0.0.2:8200",
        "https://bao.example:8200/v1",
        "https://bao.example:8200?x=1",
        "https://bao.example:99999",
        ["https://a.example", "http://b.example"],
    ],
)
def test_refused_urls(url, token_file):
    message = refused(lambda: parse(url=url, auth=token_auth(token_file)), "k8s_helper:openbao:url")
    if isinstance(url, str) and url.startswith("http://") and "bao.example" in url:
        assert "use https" in message


def test_a_url_with_credentials_is_refused_without_echoing_them(token_file):
    message = refused(
        lambda: parse(url=f"https://admin:{SECRET}@bao.example", auth=token_auth(token_file)),
        "k8s_helper:openbao:url",
    )
    assert "admin" not in message


def test_several_urls(token_file):
    config = parse(
        url=["https://a.example:8200", "https://b.example:8200"], auth=token_auth(token_file)
    )
    assert config.urls == ("https://a.example:8200", "https://b.example:8200")


def test_auth_method(token_file):
    refused(lambda: parse(auth=None), "k8s_helper:openbao:auth")
    refused(lambda: parse(auth={"method": "userpass"}), "k8s_helper:openbao:auth:method")
    refused(lambda: parse(auth={"method": "token"}), "k8s_helper:openbao:auth:token_file")
    refused(
        lambda: parse(auth={"method": "token", "token_file": "relative/token"}),
        "k8s_helper:openbao:auth:token_file",
    )


def test_token_file_checks(tmp_path):
    key = "k8s_helper:openbao:auth:token_file"
    missing = tmp_path / "missing"
    assert "cannot be read" in refused(lambda: parse(auth=token_auth(str(missing))), key)
    real = write_secret(tmp_path / "real", SECRET)
    link = tmp_path / "link"
    link.symlink_to(real)
    assert "symlink" in refused(lambda: parse(auth=token_auth(str(link))), key)
    folder = tmp_path / "folder"
    folder.mkdir(mode=0o700)
    assert "regular file" in refused(lambda: parse(auth=token_auth(str(folder))), key)
    for mode in (0o640, 0o604, 0o620, 0o644):
        path = write_secret(tmp_path / f"mode{mode:o}", SECRET, mode=mode)
        assert "chmod 600" in refused(lambda p=path: parse(auth=token_auth(p)), key)
    other = write_secret(tmp_path / "other", SECRET)
    os.chown(other, 65534, 65534)
    assert "not owned" in refused(lambda: parse(auth=token_auth(other)), key)
    empty = write_secret(tmp_path / "empty", "")
    refused(lambda: parse(auth=token_auth(empty)), key)
    two = write_secret(tmp_path / "two", f"{SECRET}\n{SECRET}")
    refused(lambda: parse(auth=token_auth(two)), key)
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfe" + SECRET.encode())
    binary.chmod(0o600)
    refused(lambda: parse(auth=token_auth(str(binary))), key)


def test_approle(tmp_path):
    secret = write_secret(tmp_path / "secret-id", SECRET)
    config = parse(auth={"method": "approle", "role_id": "abc-123", "secret_id_file": secret})
    assert config.auth == k8s_openbao.AppRoleAuth("abc-123", secret, "approle")
    key = "k8s_helper:openbao:auth"
    refused(lambda: parse(auth={"method": "approle", "secret_id_file": secret}), f"{key}:role_id")
    refused(
        lambda: parse(auth={"method": "approle", "role_id": "a b", "secret_id_file": secret}),
        f"{key}:role_id",
    )
    refused(lambda: parse(auth={"method": "approle", "role_id": "r"}), f"{key}:secret_id_file")
    open_secret = write_secret(tmp_path / "open", SECRET, mode=0o644)
    refused(
        lambda: parse(auth={"method": "approle", "role_id": "r", "secret_id_file": open_secret}),
        f"{key}:secret_id_file",
    )
    refused(
        lambda: parse(
            auth={"method": "approle", "role_id": "r", "secret_id_file": secret, "mount": "a/b"}
        ),
        f"{key}:mount",
    )
    refused(
        lambda: parse(
            auth={"method": "approle", "role_id": "r", "secret_id_file": secret, "token_file": "/x"}
        ),
        f"{key}:token_file",
    )


@pytest.mark.parametrize("value", ["", "a/b", "..", "-x", "x" * 64, 7, None])
def test_mount_prefix(value, token_file):
    refused(
        lambda: parse(auth=token_auth(token_file), mount_prefix=value),
        "k8s_helper:openbao:mount_prefix",
    )


@pytest.mark.parametrize("key", ["timeout", "retry_seconds"])
@pytest.mark.parametrize("value", [-1, True, "10", 1000, None])
def test_seconds(key, value, token_file):
    refused(lambda: parse(auth=token_auth(token_file), **{key: value}), f"k8s_helper:openbao:{key}")


def test_timeout_zero_refused(token_file):
    refused(lambda: parse(auth=token_auth(token_file), timeout=0), "k8s_helper:openbao:timeout")


def test_ca_bundle(tmp_path, token_file):
    key = "k8s_helper:openbao:ca_bundle"
    refused(lambda: parse(auth=token_auth(token_file), ca_bundle="rel.pem"), key)
    refused(lambda: parse(auth=token_auth(token_file), ca_bundle=str(tmp_path / "none.pem")), key)
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    assert "no PEM certificate" in refused(
        lambda: parse(auth=token_auth(token_file), ca_bundle=str(junk)), key
    )


def test_cluster_tag_and_ca_in_mount_path(token_file):
    config = parse(auth=token_auth(token_file))
    for tag in ("a/b", "..", ""):
        with pytest.raises(k8s_openbao.ConfigError):
            k8s_openbao.mount_path(config, tag, "ca")


def test_serial_text():
    assert k8s_openbao.serial_text(0xABC) == "0a:bc"
    assert k8s_openbao.serial_text("AA:BB") == "aa:bb"


def test_role_settings_allow_exactly_the_spec():
    spec = k8s_openbao.LeafRequest(
        "kube-apiserver", ("o1",), ("server",), ("kubernetes",), ("10.0.0.1", "::1")
    )
    role = k8s_openbao.role_settings(spec, 3600, "ecdsa-p256")
    assert role["allowed_domains"] == ["kube-apiserver", "kubernetes"]
    assert role["allowed_ip_sans_cidr"] == ["10.0.0.1/32", "::1/128"]
    assert (role["server_flag"], role["client_flag"]) == (True, False)
    assert role["organization"] == ["o1"]
    assert not role["allow_subdomains"] and not role["allow_any_name"]
    assert role["cn_validations"] != ["disabled"]
    assert (role["key_type"], role["key_bits"]) == ("ec", 256)
    with pytest.raises(k8s_openbao.BackendError):
        k8s_openbao.role_settings(k8s_openbao.LeafRequest("x", usages=("code",)), 1, "ecdsa-p256")


def test_without_hvac_a_run_fails_with_one_line_naming_it(token_file):
    """A master whose Salt Python lacks hvac: the first request says what to install."""
    import subprocess
    import sys

    script = (
        "import sys; sys.modules['hvac'] = None; sys.path.insert(0, sys.argv[1]);"
        "import k8s_openbao as k;"
        "c = k.OpenBaoPKI(k.parse_config({'k8s_helper': {'openbao': {'url': 'http://127.0.0.1:1',"
        " 'auth': {'method': 'token', 'token_file': sys.argv[2]}}}}));"
        "\ntry:\n    c.login()\nexcept k.BackendError as err:\n    print(err)"
    )
    utils = str(os.path.join(os.path.dirname(k8s_openbao.__file__)))
    out = subprocess.run(
        [sys.executable, "-c", script, utils, str(token_file)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.strip().startswith("k8s_helper:backend: openbao needs the Python package hvac")
