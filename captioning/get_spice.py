"""Fetch and check what SPICE needs: Stanford CoreNLP 3.6.0, two jars that pycocoevalcap's SPICE
(spice-1.0.jar, whose manifest lists them) expects in its own folder, pycocoevalcap/spice/lib/:
stanford-corenlp-3.6.0.jar and stanford-corenlp-3.6.0-models.jar, taken from
stanford-corenlp-full-2015-12-09.zip (about 400 MB) at nlp.stanford.edu.

    python -m captioning.get_spice               # download with pycocoevalcap's own fetcher, then check
    python -m captioning.get_spice --zip FILE    # install from the zip downloaded on another machine
    python -m captioning.get_spice --check       # only check

The check scores one caption with SPICE (java, -Xmx8G as pycocoevalcap starts it) and expects 1.0
for a caption equal to its reference. SPICE writes its parse cache and temporary files into that
folder too, so it must be writable. Afterwards `python -m captioning.evaluate` reports SPICE and
SPIDEr = (CIDEr + SPICE) / 2.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import zipfile
from pathlib import Path

from common.config import ConfigError, cli_main

CORENLP_ZIP_URL = "http://nlp.stanford.edu/software/stanford-corenlp-full-2015-12-09.zip"
JARS = ("stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar")
DOWNLOAD_TIMEOUT_S = 30  # per network operation: offline, the first one fails at once or after this


def spice_dir() -> Path:
    import pycocoevalcap.spice
    return Path(pycocoevalcap.spice.__file__).parent


def missing_jars() -> list[str]:
    return [jar for jar in JARS if not (spice_dir() / "lib" / jar).is_file()]


def java_major_version() -> int | None:
    """8 for `1.8.0_392`, 17 for `17.0.15`; None without java."""
    if shutil.which("java") is None:
        return None
    shown = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr
    found = re.search(r'version "(\d+)(?:\.(\d+))?', shown)
    if not found:
        return None
    major = int(found.group(1))
    return int(found.group(2) or 0) if major == 1 else major


def install_from_zip(zip_path: Path) -> None:
    """The two CoreNLP jars out of stanford-corenlp-full-2015-12-09.zip into pycocoevalcap/spice/lib/."""
    if not zip_path.is_file():
        raise ConfigError(f"--zip {zip_path}: no such file")
    try:
        with zipfile.ZipFile(zip_path) as archive:
            members = {Path(name).name: name for name in archive.namelist()}
            absent = [jar for jar in JARS if jar not in members]
            if absent:
                raise ConfigError(f"{zip_path} does not hold {', '.join(absent)}; it should be "
                                  f"{CORENLP_ZIP_URL.rsplit('/', 1)[1]}")
            for jar in JARS:
                target = spice_dir() / "lib" / jar
                partial = target.with_name(f".{jar}.partial")
                with archive.open(members[jar]) as source, open(partial, "wb") as out:
                    shutil.copyfileobj(source, out)
                os.replace(partial, target)  # never half a jar under the real name
    except zipfile.BadZipFile:
        raise ConfigError(f"{zip_path} is not a zip file (an interrupted download?); download it again") from None


def download() -> None:
    """pycocoevalcap's own fetcher (what its Spice() does on first use), with a network timeout."""
    from urllib.error import URLError

    from pycocoevalcap.spice.get_stanford_models import get_stanford_models
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        socket.create_connection(("nlp.stanford.edu", 80)).close()  # offline: this line fails, quietly
        get_stanford_models()
    except (URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise ConfigError(f"cannot download {CORENLP_ZIP_URL} ({reason}): run this command on a machine with "
                          f"internet, or download that file elsewhere and run python -m captioning.get_spice "
                          f"--zip <file>") from None


def check() -> float:
    """SPICE of one caption against itself (1.0 when SPICE works)."""
    from captioning.metrics import spice_scorer
    caption = {"1": ["a brown dog runs on the green grass"]}
    try:
        score, _ = spice_scorer().compute_score(caption, caption)
    except (subprocess.CalledProcessError, OSError) as err:
        version = java_major_version()
        hint = (f"SPICE 1.0 needs Java 8 and this java is {version} (Java 9+ stops in its cache serializer): "
                f"install Java 8, e.g. conda install -c conda-forge openjdk=8, and put it first on PATH"
                if version and version > 8 else "see the java messages above")
        raise ConfigError(f"SPICE is installed but failed to run ({type(err).__name__}: {err}); {hint}") from None
    return float(score)


@cli_main
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--zip", type=Path, help="stanford-corenlp-full-2015-12-09.zip, downloaded elsewhere")
    parser.add_argument("--check", action="store_true", help="only check the installation")
    args = parser.parse_args(argv)
    folder = spice_dir()
    if java_major_version() is None:
        raise ConfigError("SPICE needs java on PATH (Java 8: conda install -c conda-forge openjdk=8)")
    if not os.access(folder, os.W_OK) or not os.access(folder / "lib", os.W_OK):
        raise ConfigError(f"{folder} is not writable: SPICE keeps its jars, cache and temporary files there; "
                          f"use an environment of your own (conda env create -f env.yaml)")
    if missing_jars() and not args.check:
        install_from_zip(args.zip) if args.zip else download()
    if missing_jars():
        raise ConfigError(f"{', '.join(missing_jars())} not in {folder / 'lib'}: run python -m captioning.get_spice "
                          f"on a machine with internet (or with --zip <stanford-corenlp-full-2015-12-09.zip>)")
    score = check()
    if abs(score - 1.0) > 1e-6:
        raise ConfigError(f"SPICE ran but scored a caption against itself {score:.4f} instead of 1.0")
    print(f"SPICE works: CoreNLP 3.6.0 in {folder / 'lib'}, java {java_major_version()}; "
          f"python -m captioning.evaluate now reports SPICE and SPIDEr")


if __name__ == "__main__":
    main()
