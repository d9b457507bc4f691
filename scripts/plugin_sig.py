#!/usr/bin/env python3
"""plugin_sig.py: plugbay's plugin signature format (docs/trust.md), written again in Python.

An independent implementation of the format, so that tools outside plugbay can sign and
check plugin folders, and so that the test suite can show the documented format is enough:

    plugin_sig.py sign DIR --key FILE.key [--expires UNIX_SECONDS]
    plugin_sig.py verify DIR

`sign` writes DIR/plugin.sig with a private key file made by `plugbay key new`; `verify`
prints one JSON object ({"valid": ..., "key_id": ..., "problems": [...]}) and exits with 0
when the folder is exactly what was signed, 1 when not. It reads the plugin id and version
from plugin.toml with tomllib (Python 3.11 and later). Needs the `cryptography` package.
"""

import argparse
import hashlib
import json
import os
import sys
import time
import tomllib

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

FORMAT = "plugbay-signature-v1"
SIGNATURE_FILE = "plugin.sig"
PRIVATE_TAG = "plugbay-ed25519-private-v1"


def files_of(folder):
    """Every regular file below `folder` but plugin.sig: path, size, sha256, sorted by path."""
    found = []
    for root, dirs, names in os.walk(folder, followlinks=False):
        for name in dirs + names:
            full = os.path.join(root, name)
            path = os.path.relpath(full, folder).replace(os.sep, "/")
            if os.path.islink(full):
                raise SystemExit(f"{path}: cannot be signed: it is a symbolic link")
            if name in names and path != SIGNATURE_FILE:
                with open(full, "rb") as file:
                    data = file.read()
                found.append({"path": path, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()})
    # Sorting str by code point is sorting their UTF-8 bytes.
    return sorted(found, key=lambda file: file["path"])


def statement(sig):
    """The text the signature covers."""
    expires = "never" if sig["expires"] is None else str(sig["expires"])
    lines = [
        FORMAT,
        f"plugin {sig['plugin']}",
        f"version {sig['version']}",
        f"key {sig['key_id']}",
        f"created {sig['created']}",
        f"expires {expires}",
    ]
    lines += [f"file {f['sha256']} {f['size']} {f['path']}" for f in sig["files"]]
    return ("\n".join(lines) + "\n").encode()


def key_id(public_bytes):
    return hashlib.sha256(public_bytes).hexdigest()[:16]


def sign(folder, key_file, expires):
    with open(key_file) as file:
        tag, seed, *_ = file.read().split()
    if tag != PRIVATE_TAG:
        raise SystemExit(f"{key_file}: not a plugbay private key file")
    private = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(seed))
    public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    with open(os.path.join(folder, "plugin.toml"), "rb") as file:
        manifest = tomllib.load(file)
    sig = {
        "format": FORMAT,
        "plugin": manifest["plugin"]["id"],
        "version": manifest["plugin"]["version"],
        "key_id": key_id(public),
        "public_key": public.hex(),
        "created": int(time.time()),
        "expires": expires,
        "files": files_of(folder),
    }
    sig["signature"] = private.sign(statement(sig)).hex()
    with open(os.path.join(folder, SIGNATURE_FILE), "w") as file:
        json.dump(sig, file, indent=2)
        file.write("\n")


def verify(folder):
    with open(os.path.join(folder, SIGNATURE_FILE)) as file:
        sig = json.load(file)
    problems = []
    public = bytes.fromhex(sig["public_key"])
    if sig.get("format") != FORMAT:
        problems.append(f"format {sig.get('format')!r} is not {FORMAT}")
    if key_id(public) != sig["key_id"]:
        problems.append("key_id is not the id of public_key")
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(bytes.fromhex(sig["signature"]), statement(sig))
    except InvalidSignature:
        problems.append("bad signature")
    now = {f["path"]: f for f in files_of(folder)}
    signed = {f["path"]: f for f in sig["files"]}
    for path, file in signed.items():
        if path not in now:
            problems.append(f"{path}: removed")
        elif (now[path]["sha256"], now[path]["size"]) != (file["sha256"], file["size"]):
            problems.append(f"{path}: changed")
    problems += [f"{path}: added" for path in now if path not in signed]
    if sig["expires"] is not None and time.time() >= sig["expires"]:
        problems.append("expired")
    print(json.dumps({"valid": not problems, "key_id": sig["key_id"], "problems": problems}))
    return not problems


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    signing = commands.add_parser("sign")
    signing.add_argument("dir")
    signing.add_argument("--key", required=True)
    signing.add_argument("--expires", type=int, default=None)
    checking = commands.add_parser("verify")
    checking.add_argument("dir")
    args = parser.parse_args()
    if args.command == "sign":
        sign(args.dir, args.key, args.expires)
        return 0
    return 0 if verify(args.dir) else 1


if __name__ == "__main__":
    sys.exit(main())
