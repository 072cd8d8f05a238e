"""The kinds of member a set holds, as data: the files each is made of, and what it is.

A CA, a certificate, a bare key pair and a kubeconfig differ in a few facts:
which files they occupy (and with which mode), whether a CA of the set signs
them, whether they are a CA, whether they embed their CA.  Those facts live
here, once; the reader, planner, writer and describer ask a member's kind
instead of testing the class of its spec.
"""

from __future__ import annotations

from dataclasses import dataclass

from .defaults import CERT_MODE, KEY_MODE

# A key is kept (the file linked as it is) when its item is reused, re-signed
# with the same key ("reissued") or re-bundled by a CA rotation.
KEY_KEPT_ACTIONS = ("reused", "reissued", "rebundled")


@dataclass(frozen=True)
class FileOf:
    """One file of a member: ``<member name><suffix>``, its bytes in ``Item.<field>``."""

    suffix: str  # ".crt", ".key", ".pub", or "" when the member's name is the file's
    field: str  # the Item attribute holding the file's bytes
    mode: int
    secret: bool = False  # holds a private key
    follows_key: bool = False  # rewritten only when the key is new
    from_key: bool = False  # derived from the key: written anew whenever the item is reissued
    shows: tuple = ()  # what a description says of it: "cert", "public", "server"

    def action(self, item_action):
        """What happens to this file when its member's item has ``item_action``."""
        if self.follows_key and item_action in KEY_KEPT_ACTIONS:
            return "reused"
        if self.from_key and item_action == "reissued":
            return "generated"
        return item_action


CRT = FileOf(".crt", "cert_bytes", CERT_MODE, shows=("cert",))
KEY = FileOf(".key", "key_bytes", KEY_MODE, secret=True, follows_key=True, shows=("public",))
PUB = FileOf(".pub", "pub_bytes", CERT_MODE, from_key=True, shows=("public",))
WHOLE_KUBECONFIG = FileOf(
    "", "file_bytes", KEY_MODE, secret=True, shows=("server", "cert", "public")
)


@dataclass(frozen=True)
class Kind:
    """What a member is: its files (the first names it in plans) and how it is issued."""

    name: str
    files: tuple
    is_ca: bool = False  # self-signed, signs the set's other members
    signed: bool = False  # issued by a CA of the set (a certificate inside)
    embeds_ca: bool = False  # carries its CA's certificate (a kubeconfig)

    def main_file(self, name):
        """The file a member is listed under in plans and messages."""
        return name + self.files[0].suffix


CA = Kind("ca", (CRT, KEY), is_ca=True)
CERTIFICATE = Kind("certificate", (CRT, KEY), signed=True)
KEY_PAIR = Kind("key pair", (KEY, PUB))
KUBECONFIG = Kind("kubeconfig", (WHOLE_KUBECONFIG,), signed=True, embeds_ca=True)
