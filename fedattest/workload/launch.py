"""Running a workload in the simulated TEE: check its trusted files, then start its entrypoint with the
manifest's argv and environment, and with the identity the measurement gives it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from fedattest.errors import TeeError
from fedattest.tee.base import WorkloadIdentity
from fedattest.tee.current import ENV_IDENTITY, ENV_PLATFORM, identity_to_env
from fedattest.tee.simulated import SimulatedPlatform
from fedattest.workload.manifest import Manifest, ManifestError


def child_environment(manifest: Manifest, platform: SimulatedPlatform, identity: WorkloadIdentity) -> dict[str, str]:
    """Exactly the manifest's environment (as Gramine passes it), plus what ``fedattest.tee.current()``
    needs to find the simulated platform and the measured identity."""
    env = dict(manifest.env)
    env[ENV_PLATFORM] = str(platform.directory.resolve())
    env[ENV_IDENTITY] = identity_to_env(identity)
    return env


def entrypoint_path(manifest: Manifest, base: Path) -> Path:
    path = Path(manifest.entrypoint)
    return path if path.is_absolute() else base / path


def run_workload(manifest: Manifest, base: Path, platform: SimulatedPlatform, identity: WorkloadIdentity) -> int:
    """Start the entrypoint (cwd: the manifest's directory) and wait for it; returns its exit status."""
    program = entrypoint_path(manifest, base)
    if not os.access(program, os.X_OK):
        raise ManifestError(f"libos.entrypoint: {program} is not an executable file")
    try:
        # argv[0] becomes the entrypoint's path, so that an interpreter finds its own installation (a venv's
        # python locates its site-packages from it); the rest is the manifest's argv, verbatim.
        completed = subprocess.run(  # noqa: S603 - argv comes from the measured manifest, no shell
            [str(program), *manifest.argv[1:]],
            cwd=base,
            env=child_environment(manifest, platform, identity),
            check=False,
        )
    except OSError as exc:
        raise TeeError(f"cannot start {program}: {exc.strerror or exc}") from None
    return completed.returncode
