"""The ``k8s_orch`` outputter through the real ``salt-run``, no daemons: an
orchestration of runner steps only (they run in salt-run's own process), one
of which fails.  Orchestrations against real minions, with this outputter:
tests/integration/test_replace_daemons.py."""

import json

import pytest
from support import event_sink, k8s_pki, salt_run, write_master_config

ORCH = """\
demo-check:
  salt.runner:
    - name: k8s-helper.check_expiration
    - cluster_tag: prod
    - table: False
demo-missing:
  salt.runner:
    - name: k8s-helper.check_expiration
    - cluster_tag: nowhere
    - table: False
    - require:
      - salt: demo-check
demo-after:
  salt.runner:
    - name: k8s-helper.check_expiration
    - cluster_tag: prod
    - table: False
    - require:
      - salt: demo-missing
"""


@pytest.fixture
def conf(tmp_path):
    roots = tmp_path / "roots"
    (roots / "demo").mkdir(parents=True)
    (roots / "demo" / "orch.sls").write_text(ORCH)
    conf = write_master_config(tmp_path, id="orch-master", file_roots={"base": [str(roots)]})
    k8s_pki.ensure_set(tmp_path / "pki", "prod", k8s_pki.seed_specs(), key_type="ecdsa-p256")
    with event_sink(conf):
        yield conf


def test_a_failed_step_is_one_line_with_its_reason(conf, tmp_path):
    proc = salt_run(conf, "state.orchestrate", "demo.orch", out="k8s_orch")
    assert proc.returncode != 0
    lines = proc.stdout.splitlines()
    assert lines[0] == "orch-master:", proc.stdout
    assert lines[1:6] == [
        "  ok       demo-check",
        f"    {tmp_path / 'pki' / 'prod'}: 3 certificates: 3 ok, 0 renew-soon, 0 expired, "
        "0 unreadable",
        "  FAILED   demo-missing",
        f"    {tmp_path / 'pki' / 'nowhere'}: no certificate set here",
        "  skipped  demo-after",
    ], proc.stdout
    assert lines[6].startswith("3 steps: 1 FAILED, 1 ok, 1 skipped (")
    assert len(lines) == 7
    # the same run as data: every detail is still there
    proc = salt_run(conf, "state.orchestrate", "demo.orch", out="json")
    data = json.loads(proc.stdout)["data"]
    (steps,) = data.values()
    assert len(json.dumps(steps)) > 2000


def test_other_data_goes_to_nested(conf):
    """--out=k8s_orch on something that is not an orchestration: Salt's nested
    outputter (no loop back into k8s_orch)."""
    proc = salt_run(conf, "k8s-helper.check_expiration", "cluster_tag=prod", out="k8s_orch")
    assert proc.returncode == 0, proc.stderr
    assert "certificates:" in proc.stdout and "renew_before_days:" in proc.stdout
