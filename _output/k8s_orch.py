"""
Print an orchestration's run as a short summary, one block per step.

    salt-run state.orchestrate kubernetes.orch.replace_certs pillar=... --out=k8s_orch

Salt's default ``highstate`` outputter prints every state of every host that a
``salt.state`` step ran, and every runner's whole return: over a thousand lines
for a cluster of three hosts.  This one prints, for each step of the
orchestration, its status (``ok``, ``changed``, ``FAILED``, ``skipped``) and
what matters: per host, the states that changed, the services (re)started or
stopped, the health check's answer; for a failure, the host, the state and its
comment.  The return itself is unchanged: ``--out=json`` (or ``--out=highstate``)
still prints everything.  Any other data goes to the ``nested`` outputter.

The master finds this module through ``outputter_dirs`` or after
``salt-run saltutil.sync_output``.
"""

import textwrap

__virtualname__ = "k8s_orch"

_WIDTH = 160  # longest line kept from a comment or error


def __virtual__():
    return __virtualname__


def _short(text):
    """First line of ``text``, cut at _WIDTH characters."""
    line = str(text).strip().splitlines()[0] if str(text).strip() else ""
    return line if len(line) <= _WIDTH else line[: _WIDTH - 3] + "..."


def _state_id(key):
    # "<module>_|-<id>_|-<name>_|-<function>"
    parts = key.split("_|-")
    return parts[1] if len(parts) == 4 else key


def _state_fun(key):
    parts = key.split("_|-")
    return f"{parts[0]}.{parts[3]}" if len(parts) == 4 else ""


def _is_states(ret):
    return isinstance(ret, dict) and ret and all("_|-" in key for key in ret)


def _host_states(minion, states):
    """Lines for one host's state run: failures in full, the rest counted."""
    ordered = sorted(states.items(), key=lambda item: item[1].get("__run_num__", 0))
    changed, services, failed = [], [], []
    count = 0  # states that changed something (several may name the same file)
    for key, state in ordered:
        if state.get("result") is False:
            failed.append((key, state))
        elif state.get("changes"):
            count += 1
            if _state_fun(key).startswith("service."):
                services.append(f"{state.get('name', _state_id(key))}: {_short(state['comment'])}")
            elif (state.get("name") or _state_id(key)) not in changed:
                changed.append(state.get("name") or _state_id(key))
    head = f"  {minion}: {len(ordered)} states, {count} changed"
    if failed:
        head += f", {len(failed)} failed"
    lines = [head]
    if changed:
        lines += textwrap.wrap(
            ", ".join(map(str, changed)),
            width=100,
            initial_indent="    changed: ",
            subsequent_indent=" " * 13,
            break_on_hyphens=False,
            break_long_words=False,
        )
    lines += [f"    service {text}" for text in services]
    for key, state in failed:
        lines.append(f"    FAILED {_state_id(key)} ({_state_fun(key)}): {_short(state['comment'])}")
    return lines


def _healthz(minion, ret):
    if ret.get("healthy"):
        served = ret.get("server_certificate") or {}
        by = (ret.get("verified_by") or {}).get("subject", "?")
        return [
            f"  {minion}: {ret.get('url')} answered {ret.get('answer')!r}; served "
            f"{served.get('subject', '?')} (sha256 {served.get('sha256', '?')[:23]}...), "
            f"verified by {by}"
        ]
    return [f"  {minion}: {_short(ret.get('error', 'not healthy'))}"]


def _cleanup(minion, ret):
    if ret.get("result") is False:
        return [f"  {minion}: {_short(ret.get('error', 'failed'))}"]
    lines = [f"  {minion}: {ret.get('server')}"]
    lines.append(f"    deleted secrets: {', '.join(ret.get('deleted_secrets') or []) or 'none'}")
    lines.append(f"    restarted: {', '.join(ret.get('restarted') or []) or 'none'}")
    if ret.get("not_found"):
        lines.append(f"    not found: {', '.join(ret['not_found'])}")
    return lines


def _function(name, changes):
    """Lines for a salt.function step: one per host."""
    lines = []
    for minion, ret in sorted((changes.get("ret") or {}).items()):
        if _is_states(ret):  # state.sls through salt.function
            lines += _host_states(minion, ret)
        elif isinstance(ret, dict) and name == "k8s_cluster.healthz":
            lines += _healthz(minion, ret)
        elif isinstance(ret, dict) and name == "k8s_cluster.cleanup":
            lines += _cleanup(minion, ret)
        elif isinstance(ret, dict) and ret.get("error"):
            lines.append(f"  {minion}: {_short(ret['error'])}")
        elif isinstance(ret, bool | int | float | str) or ret is None:
            lines.append(f"  {minion}: {_short(ret)}")
        else:
            lines.append(f"  {minion}: done")
    return lines


def _runner(ret):
    """Lines for a salt.runner step, from the k8s-helper runners' returns."""
    if not isinstance(ret, dict):
        return [f"  {_short(ret)}"] if ret not in (None, "") else []
    if ret.get("error"):
        return [f"  {_short(ret['error'])}"]
    if isinstance(ret.get("files"), dict):  # generate_certs, renew, rotate_ca
        by_action = {}
        for name, info in sorted(ret["files"].items()):
            action = info.get("action", "?") if isinstance(info, dict) else "?"
            by_action.setdefault(action, []).append(name)
        lines = [f"  {action}: {', '.join(names)}" for action, names in sorted(by_action.items())]
        if ret.get("backup"):
            lines.append(f"  backup: {ret['backup']}")
        return lines
    if isinstance(ret.get("certificates"), list):  # check_expiration
        counts = ", ".join(f"{n} {status}" for status, n in (ret.get("summary") or {}).items())
        return [f"  {ret.get('directory')}: {len(ret['certificates'])} certificates: {counts}"]
    if isinstance(ret.get("hosts"), dict):  # verify
        lines = [f"  {ret.get('summary_line', '')}"]
        for host, info in sorted(ret["hosts"].items()):
            if info.get("status") == "ok":
                continue
            if info.get("error"):
                lines.append(f"  {host}: {info.get('status')}: {_short(info['error'])}")
            for check in info.get("checks", []):
                if check.get("status") not in ("match", "absent"):  # k8s_pki.VERIFY_OK
                    lines.append(
                        f"  {host}: {check.get('path')}: {check.get('status')} "
                        f"{_short(check.get('detail', ''))}".rstrip()
                    )
        return lines
    return []


_ORDER = ("FAILED", "changed", "ok", "skipped", "would change", "test")


def _status(key, step):
    if step.get("result") is None:
        return "would change" if step.get("changes") else "test"
    if step.get("result"):
        # a runner's or a function's return is not a change on a host
        changed = _state_fun(key) == "salt.state" and step.get("changes")
        return "changed" if changed else "ok"
    if str(step.get("comment", "")).startswith("One or more requisite failed"):
        return "skipped"
    return "FAILED"


def _step(key, step):
    fun = _state_fun(key)
    status = _status(key, step)
    lines = [f"{status:8} {_state_id(key)}"]
    changes = step.get("changes") if isinstance(step.get("changes"), dict) else {}
    if status == "skipped":
        return lines
    if fun == "salt.state":
        for minion, ret in sorted((changes.get("ret") or {}).items()):
            if _is_states(ret):
                lines += _host_states(minion, ret)
            else:  # a minion that returned no state results (a render error...)
                text = "; ".join(map(str, ret)) if isinstance(ret, list) else ret
                lines.append(f"  {minion}: {_short(text)}")
    elif fun == "salt.function":
        lines += _function(step.get("name", ""), changes)
    elif fun == "salt.runner":
        lines += _runner(changes.get("return"))
    elif fun == "test.configurable_test_state" and _state_id(key).endswith("-plan"):
        # a dry run's plan (kubernetes/orch/rolling.jinja, dry_run): every line of it
        lines += [f"  {line}" for line in str(step.get("comment", "")).splitlines()]
    if status == "FAILED" and len(lines) == 1:
        lines.append(f"  {_short(step.get('comment', ''))}")
    return lines


def _orchestration(name, steps):
    ordered = sorted(steps.items(), key=lambda item: item[1].get("__run_num__", 0))
    lines = [f"{name}:"]
    counts = {}
    for key, step in ordered:
        lines += ["  " + line for line in _step(key, step)]
        status = _status(key, step)
        counts[status] = counts.get(status, 0) + 1
    seconds = sum(step.get("duration", 0) or 0 for step in steps.values()) / 1000
    summary = ", ".join(f"{counts[status]} {status}" for status in _ORDER if status in counts)
    lines.append(f"{len(ordered)} steps: {summary} ({seconds:.1f} s)")
    return lines


def output(data, **kwargs):  # pylint: disable=unused-argument
    """An orchestration's return as a summary; anything else as ``nested``."""
    if isinstance(data, dict) and isinstance(data.get("data"), dict) and "outputter" in data:
        data = data["data"]  # salt-run hands over the whole return (as to highstate)
    if not isinstance(data, dict) or not data:
        return _fallback(data)
    lines = []
    for name, steps in data.items():
        if isinstance(steps, list):  # the orchestration did not render
            lines.append(f"{name}:")
            lines += [f"  {error}" for error in steps]
        elif isinstance(steps, dict) and _is_states(steps):
            lines += _orchestration(name, steps)
        else:
            return _fallback(data)
    return "\n".join(lines)


def _fallback(data):
    import salt.output  # noqa: PLC0415

    # Without "output" in the options: --out=k8s_orch there would bring the
    # data straight back here.
    opts = {key: value for key, value in __opts__.items() if key != "output"}
    return salt.output.out_format(data, "nested", opts)
