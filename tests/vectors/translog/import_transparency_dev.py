"""Copy the RFC 6962 test vectors of transparency-dev/merkle into JSON files here (run by hand, not by tests).

    python tests/vectors/translog/import_transparency_dev.py GIT_DIR COMMIT

GIT_DIR is a clone of https://github.com/transparency-dev/merkle. Only facts are copied: the leaf inputs,
root and node hashes of testonly/constants.go (read from the Go source by pattern) and every probe of
testdata/inclusion and testdata/consistency (JSON, kept as written: hashes in base64, ``proof`` may be null).
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = "https://github.com/transparency-dev/merkle"


def git(git_dir: str, *args: str) -> str:
    return subprocess.run(["git", "--git-dir", git_dir, *args], check=True, capture_output=True, text=True).stdout


def go_function_hex(source: str, name: str) -> list[str]:
    body = source.split(f"func {name}()", 1)[1].split("\n}\n", 1)[0]
    return re.findall(r'hd\("([0-9a-f]*)"\)', body)


def main(git_dir: str, commit: str) -> None:
    constants = git(git_dir, "show", f"{commit}:testonly/constants.go")
    node_hashes = constants.split("func NodeHashes()", 1)[1].split("\n}\n", 1)[0]
    levels = [re.findall(r'hd\("([0-9a-f]*)"\)', level) for level in node_hashes.split("}, {")]
    reference = {
        "source": {"repository": REPO, "commit": commit, "path": "testonly/constants.go"},
        "leaves_hex": go_function_hex(constants, "LeafInputs"),
        # RootHashes()[0] is EmptyRootHash(), a call the pattern skips: SHA-256 of nothing
        "roots_hex": [hashlib.sha256(b"").hexdigest(), *go_function_hex(constants, "RootHashes")],
        "node_hashes_hex": levels,
    }
    (HERE / "rfc6962_reference.json").write_text(json.dumps(reference, indent=1) + "\n")
    for kind in ("inclusion", "consistency"):
        names = git(git_dir, "ls-tree", "-r", "--name-only", commit, f"testdata/{kind}").split()
        probes = [{"file": name, **json.loads(git(git_dir, "show", f"{commit}:{name}"))} for name in sorted(names)]
        doc = {"source": {"repository": REPO, "commit": commit, "path": f"testdata/{kind}/"}, "probes": probes}
        (HERE / f"{kind}_probes.json").write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main(*sys.argv[1:])
