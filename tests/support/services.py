"""Let the real Salt drive a System V init script inside a sandbox.

PID 1 here is not systemd, and ``systemctl`` is installed but offline: Salt's
service states then load the systemd module in "offline mode" and start or
stop nothing.  Inside a sandbox (tests/support/sandbox.py) two things make Salt pick
its ``debian_service`` module instead, which runs ``service <name> <action>``
(``/usr/sbin/service`` -> ``/etc/init.d/<name>``) for real:

- ``/dev/null`` bind-mounted over ``/usr/bin/systemctl`` (not executable, so
  Salt does not find it), in that namespace only;
- a ``runlevel`` command printing ``N 2`` first on PATH (the real one asks
  systemd or utmp, neither of which is there).

The service itself is a small init script written into the sandbox's /etc: it
stands in for the kubelet package's unit and records every start, stop and
restart in ``/var/log/<name>.actions`` (inside the sandbox), so a test can see
exactly what Salt did to the service.  ``install`` also runs the real
``update-rc.d <name> defaults`` (as a package's postinst would), which links it
into /etc/rc?.d: Salt then sees it enabled.  Salt's ``service.enable`` for a
service that is not linked yet would need ``insserv``, which this machine does
not have (installing it rewrites the host's boot links), so enabling from
scratch is not exercised here.
"""

import os
import pathlib

INIT_SCRIPT = """#!/bin/sh
### BEGIN INIT INFO
# Provides:          {name}
# Required-Start:    $remote_fs
# Required-Stop:     $remote_fs
# Default-Start:     2 3 4 5
# Default-Stop:      0 1 6
# Short-Description: test stand-in for {name}: records what it is asked to do
### END INIT INFO
ACTIONS=/var/log/{name}.actions
RUNNING=/var/lib/{name}.running
case "$1" in
  start) echo start >> $ACTIONS; touch $RUNNING ;;
  stop) echo stop >> $ACTIONS; rm -f $RUNNING ;;
  restart|force-reload) echo "$1" >> $ACTIONS; touch $RUNNING ;;
  status) [ -e $RUNNING ] || exit 3 ;;
  *) echo "Usage: $0 {{start|stop|restart|force-reload|status}}" >&2; exit 2 ;;
esac
exit 0
"""

_HIDE_SYSTEMCTL = (
    "for f in /usr/bin/systemctl /bin/systemctl; do\n"
    '  if [ -e "$f" ] && [ ! -L "$f" ]; then mount --bind /dev/null "$f"; fi\n'
    "done\n"
    'exec "$@"\n'
)


class SysV:
    """Wraps commands so that Salt inside ``box`` manages init scripts for real."""

    def __init__(self, box, bindir):
        self.box = box
        self.bindir = pathlib.Path(bindir)
        self.bindir.mkdir(parents=True, exist_ok=True)
        runlevel = self.bindir / "runlevel"
        runlevel.write_text("#!/bin/sh\necho 'N 2'\n")
        runlevel.chmod(0o755)

    def argv(self, argv):
        return ["sh", "-ec", _HIDE_SYSTEMCTL, "sysv", *map(str, argv)]

    def env(self):
        return {**os.environ, "PATH": f"{self.bindir}:{os.environ.get('PATH', '/usr/bin:/bin')}"}

    def run(self, argv, **kwargs):
        return self.box.run(self.argv(argv), env=self.env(), **kwargs)

    def install(self, name):
        """The init script of ``name`` in the sandbox's /etc/init.d, linked into the runlevels."""
        script = self.box.upper(f"/etc/init.d/{name}")
        script.parent.mkdir(parents=True, exist_ok=True)
        script.write_text(INIT_SCRIPT.format(name=name))
        script.chmod(0o755)
        self.run(["update-rc.d", name, "defaults"], check=True)

    def install_binary(self, path):
        """A stand-in executable at ``path`` in the sandbox (what a package would bring:
        kubernetes.running checks that the kubelet binary is there before anything)."""
        binary = self.box.upper(path)
        binary.parent.mkdir(parents=True, exist_ok=True)
        binary.write_text("#!/bin/sh\n# test stand-in: never run by the tests\nexit 0\n")
        binary.chmod(0o755)

    def actions(self, name):
        """What the service was asked to do so far: ['start', 'restart', 'stop', ...]."""
        data = self.box.read(f"/var/log/{name}.actions")
        return data.decode().split() if data else []
