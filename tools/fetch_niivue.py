"""Fetch NiiVue's browser bundle from npm for the report's volume viewer (run at build time by setup.py).

The report is a folder of files opened from disk (file://), where Chromium refuses ES modules, so the viewer loads
NiiVue's UMD build (``dist/niivue.umd.js``, which sets ``window.niivue``) with a classic ``<script src>``. The
script is fetched with ``npm pack``, checked against the tarball's pinned sha512 integrity and its own pinned
sha256, and never committed (see .gitignore). Standard library only: setup.py imports this module before any
dependency is installed.

Usage: ``python tools/fetch_niivue.py DEST`` (e.g. ``src/brainlearn/report/assets/niivue.umd.js``).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

PACKAGE = "@niivue/niivue"
VERSION = "0.69.0"
LICENSE = "BSD-2-Clause"
# `npm view @niivue/niivue@0.69.0 dist.integrity`: the sha512 of the registry's tarball.
INTEGRITY = "sha512-YMjQvJgD1W2b7DuoxkwlC4VxbrgIePRJ5qyQzXKxi2v2MBVg285P/CIQyg46oDDGDIcaNlbd+MhtO/edMbXJkA=="
MEMBER = "package/dist/niivue.umd.js"
SHA256 = "47b896b77ec4a5be3ef1949c33ad393b6f45629921f326c279000bcf51bdb4af"
NOTICE = "NIIVUE_LICENSE.txt"
# The first line names the version as its first word that starts with a digit (brainlearn.report.page reads it).
NOTICE_TEXT = f"""\
NiiVue {VERSION} (npm package {PACKAGE}, https://github.com/niivue/niivue): niivue.umd.js is its UMD build.
Its licence ({LICENSE}, from the LICENSE file of https://github.com/niivue/niivue):

BSD 2-Clause License

Copyright (c) 2021, Niivue
All rights reserved.

Redistribution and use in source and binary forms, with or without modification, are permitted provided that the
following conditions are met:

1. Redistributions of source code must retain the above copyright notice, this list of conditions and the following
   disclaimer.
2. Redistributions in binary form must reproduce the above copyright notice, this list of conditions and the
   following disclaimer in the documentation and/or other materials provided with the distribution.

THIS SOFTWARE IS PROVIDED BY THE COPYRIGHT HOLDERS AND CONTRIBUTORS "AS IS" AND ANY EXPRESS OR IMPLIED WARRANTIES,
INCLUDING, BUT NOT LIMITED TO, THE IMPLIED WARRANTIES OF MERCHANTABILITY AND FITNESS FOR A PARTICULAR PURPOSE ARE
DISCLAIMED. IN NO EVENT SHALL THE COPYRIGHT HOLDER OR CONTRIBUTORS BE LIABLE FOR ANY DIRECT, INDIRECT, INCIDENTAL,
SPECIAL, EXEMPLARY, OR CONSEQUENTIAL DAMAGES (INCLUDING, BUT NOT LIMITED TO, PROCUREMENT OF SUBSTITUTE GOODS OR
SERVICES; LOSS OF USE, DATA, OR PROFITS; OR BUSINESS INTERRUPTION) HOWEVER CAUSED AND ON ANY THEORY OF LIABILITY,
WHETHER IN CONTRACT, STRICT LIABILITY, OR TORT (INCLUDING NEGLIGENCE OR OTHERWISE) ARISING IN ANY WAY OUT OF THE USE
OF THIS SOFTWARE, EVEN IF ADVISED OF THE POSSIBILITY OF SUCH DAMAGE.
"""
NPM_TIMEOUT_S = 300

log = logging.getLogger("fetch_niivue")


class FetchError(RuntimeError):
    """NiiVue could not be fetched or did not match its pinned hashes; the message says what to do."""


def ensure_niivue(dest: Path) -> Path:
    """Put the pinned NiiVue UMD script at ``dest`` (and its licence notice beside it) unless it is already there.

    Raises:
        FetchError: npm is missing, the registry is unreachable, or a download does not match its pinned hash.
    """
    dest = Path(dest)
    if dest.is_file() and _sha256(dest.read_bytes()) == SHA256:
        _write_atomically(dest.with_name(NOTICE), NOTICE_TEXT.encode())
        return dest
    with tempfile.TemporaryDirectory(prefix="niivue-") as tmp:
        tarball = _npm_pack(Path(tmp))
        script = _extract_script(tarball)
    _write_atomically(dest, script)
    _write_atomically(dest.with_name(NOTICE), NOTICE_TEXT.encode())
    log.info("fetched %s %s into %s", PACKAGE, VERSION, dest)
    return dest


def _npm_pack(folder: Path) -> Path:
    """Download the pinned tarball with ``npm pack`` into ``folder`` and check its sha512 integrity."""
    npm = shutil.which("npm")
    if npm is None:
        raise FetchError(
            f"npm not found: building brainlearn fetches the volume viewer ({PACKAGE} {VERSION}) with npm. "
            "Install Node.js and npm (Debian: apt-get install npm) and build again."
        )
    command = [npm, "pack", f"{PACKAGE}@{VERSION}", "--pack-destination", str(folder), "--ignore-scripts"]
    try:
        done = subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=NPM_TIMEOUT_S)
    except subprocess.TimeoutExpired as error:
        raise FetchError(_unreachable(f"npm pack gave no answer within {NPM_TIMEOUT_S} s")) from error
    if done.returncode != 0:
        raise FetchError(_unreachable(_npm_reason(done.stderr) or f"exit status {done.returncode}"))
    found = sorted(folder.glob("*.tgz"))  # a fresh folder: the one tarball is npm's ("niivue-niivue-0.69.0.tgz")
    if len(found) != 1:
        raise FetchError(f"npm pack left {[p.name for p in found]} in {folder}, expected one tarball")
    tarball = found[0]
    integrity = "sha512-" + base64.b64encode(hashlib.sha512(tarball.read_bytes()).digest()).decode()
    if integrity != INTEGRITY:
        raise FetchError(
            f"{PACKAGE}@{VERSION}: the downloaded tarball's integrity {integrity} differs from the pinned {INTEGRITY}. "
            "The registry or a proxy served another file; do not use it. Clear the npm cache (npm cache clean --force) "
            "and try again, or check your npm registry setting."
        )
    return tarball


def _npm_reason(stderr: str) -> str:
    """The first lines of npm's error report ("code ECONNREFUSED / ... / FetchError: request to ... failed")."""
    lines = [line.removeprefix("npm error").removeprefix("npm ERR!") for line in stderr.splitlines()]
    lines = [line.strip() for line in lines if line.strip() and not line.startswith(("  ", "\t"))]
    return " / ".join([line for line in lines if not line.startswith("A complete log")][:4])


def _unreachable(reason: str) -> str:
    return (
        f"npm pack {PACKAGE}@{VERSION} failed ({reason}). brainlearn's build needs the npm registry once "
        "(afterwards npm's cache suffices): check the network or proxy (npm config get registry), or fetch it on a "
        "connected machine with `python tools/fetch_niivue.py src/brainlearn/report/assets/niivue.umd.js` and copy "
        "that file here. To build without the volume viewer set BRAINLEARN_NO_NIIVUE=1."
    )


def _extract_script(tarball: Path) -> bytes:
    """Read only the UMD script out of ``tarball`` (no path from the archive touches the disk) and check its sha256."""
    try:
        with tarfile.open(tarball, "r:gz") as archive:
            member = archive.getmember(MEMBER)
            member = tarfile.data_filter(member, "/nonexistent")  # refuses links, devices, absolute paths
            if not member.isfile():
                raise FetchError(f"{tarball.name}: {MEMBER} is not a regular file")
            script = archive.extractfile(member).read()
    except (tarfile.TarError, KeyError, OSError) as error:
        raise FetchError(f"{tarball.name}: cannot read {MEMBER} ({error})") from error
    if _sha256(script) != SHA256:
        raise FetchError(f"{tarball.name}: {MEMBER} has sha256 {_sha256(script)}, expected the pinned {SHA256}")
    return script


def _write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path`` and rename it over ``path`` (readers never see half)."""
    if path.is_file() and path.read_bytes() == data:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".partial-{path.name}-")
    try:
        with os.fdopen(fd, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if len(argv) != 1:
        log.error("usage: python tools/fetch_niivue.py DEST  (e.g. src/brainlearn/report/assets/niivue.umd.js)")
        return 2
    try:
        ensure_niivue(Path(argv[0]))
    except FetchError as error:
        log.error("error: %s", error)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
