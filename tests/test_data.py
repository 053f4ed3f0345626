"""Dataset commitments: the root is a function of the data alone, every tampering is detected on read
or on verify, and bad input is refused with a clear message."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path, PurePosixPath

import numpy as np
import pytest
from typer.testing import CliRunner

from fedattest.cli import app
from fedattest.cli import data as cli_data
from fedattest.data import (
    DataIntegrityError,
    DatasetArgumentError,
    DatasetError,
    DatasetIndex,
    commit_directory,
    hashing,
    helper_client,
    open_dataset,
    scan,
    tree,
    walk,
    write_commitment,
)
from fedattest.data import commit as commit_module
from fedattest.data import dataset as dataset_module
from fedattest.data.index import IndexedFile
from fedattest.errors import FormatError
from tests.conftest import assert_one_line_error

CS = 4096  # small chunks, so small files span many chunks


def make(directory: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return directory


def sample(directory: Path) -> Path:
    rng = np.random.default_rng(7)
    return make(
        directory,
        {
            "train/x.bin": rng.bytes(10 * CS + 123),
            "train/y.bin": rng.bytes(3 * CS),
            "README": b"hospital A\n",
            "empty": b"",
            "naïve/ünïcode.txt": "grüß".encode(),
        },
    )


@pytest.fixture
def committed(tmp_path: Path) -> tuple[Path, bytes]:
    directory = sample(tmp_path / "data")
    commitment, _ = commit_directory(directory, chunk_size=CS)
    return directory, commitment.root


# -- the tree -----------------------------------------------------------------------------------------


def rfc6962(leaves: list[bytes]) -> bytes:
    if not leaves:
        return hashlib.sha256(b"\x02").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return hashlib.sha256(b"\x01" + rfc6962(leaves[:k]) + rfc6962(leaves[k:])).digest()


@pytest.mark.parametrize("n", [*range(20), 31, 32, 33, 63, 64, 65, 100])
def test_merkle_root_is_the_rfc6962_tree(n: int) -> None:
    leaves = [tree.chunk_leaf(i.to_bytes(4, "big")) for i in range(n)]
    assert tree.merkle_root(leaves) == rfc6962(leaves)


def test_hashes_are_domain_separated() -> None:
    a, b = tree.chunk_leaf(b"a"), tree.chunk_leaf(b"b")
    # A chunk whose bytes are two leaf hashes is not the node over those leaves.
    assert tree.chunk_leaf(a + b) != tree.node(a, b)
    assert tree.merkle_root([]) != tree.chunk_leaf(b"")
    assert tree.dataset_root(CS, []) != tree.dataset_root(2 * CS, [])


# -- committing ---------------------------------------------------------------------------------------


def test_commit_and_read_everything_back(committed: tuple[Path, bytes]) -> None:
    directory, root = committed
    ds = open_dataset(directory, root)
    assert ds.files() == sorted(ds.files(), key=lambda p: p.encode()) and len(ds.files()) == 5
    for path in ds.files():
        assert ds.read_bytes(path) == (directory / path).read_bytes()
    ds.verify_all()
    assert open_dataset(directory, root.hex()).root == root


def test_root_does_not_depend_on_order_mtime_locale_or_workers(tmp_path: Path) -> None:
    files = {f"d{i % 3}/f{i}": bytes([i]) * (i * 1000) for i in range(12)}
    a = make(tmp_path / "a", files)
    b = make(tmp_path / "b", dict(reversed(list(files.items()))))
    for i, p in enumerate(sorted(b.rglob("*"))):
        os.utime(p, (1_000_000 + i, 1_000_000 + i))
    root_a = commit_directory(a, chunk_size=CS, workers=1)[0].root
    assert commit_directory(b, chunk_size=CS, workers=4)[0].root == root_a
    code = (
        "import sys; from fedattest.data import commit_directory;"
        f"print(commit_directory(sys.argv[1], chunk_size={CS})[0].root.hex())"
    )
    for locale in ("C", "C.UTF-8", "POSIX"):
        env = {**os.environ, "LC_ALL": locale, "LANG": locale}
        out = subprocess.run([sys.executable, "-c", code, str(b)], env=env, capture_output=True, text=True, check=True)
        assert out.stdout.strip() == root_a.hex()


def test_chunk_size_and_content_change_the_root(tmp_path: Path) -> None:
    directory = sample(tmp_path / "d")
    root = commit_directory(directory, chunk_size=CS)[0].root
    assert commit_directory(directory, chunk_size=2 * CS)[0].root != root
    (directory / "README").write_bytes(b"hospital B\n")
    assert commit_directory(directory, chunk_size=CS)[0].root != root


def test_the_index_is_left_out_and_written_atomically(committed: tuple[Path, bytes]) -> None:
    directory, root = committed
    assert (directory / ".fedattest-index").is_file()
    assert commit_directory(directory, chunk_size=CS)[0].root == root  # re-commit ignores its own index
    assert not [p for p in directory.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("chunk_size", [0, 1000, 4095, 3 * 4096, 1 << 31])
def test_bad_chunk_sizes_are_refused(tmp_path: Path, chunk_size: int) -> None:
    with pytest.raises(DatasetError, match="power of two"):
        commit_directory(sample(tmp_path / "d"), chunk_size=chunk_size)


def test_symlink_inside_is_read_through_and_leaving_is_refused(tmp_path: Path) -> None:
    directory = sample(tmp_path / "d")
    (directory / "link").symlink_to(directory / "README")
    _, index = commit_directory(directory, chunk_size=CS)
    assert index.by_path["link"].size == len(b"hospital A\n")
    outside = tmp_path / "secret"
    outside.write_bytes(b"not part of the dataset")
    (directory / "escape").symlink_to(outside)
    with pytest.raises(DatasetError, match="escape: symlink leaves the dataset directory"):
        commit_directory(directory, chunk_size=CS)


@pytest.mark.parametrize(
    ("make_bad", "needle"),
    [
        (lambda d: os.mkfifo(d / "pipe"), "pipe: not a regular file"),
        (lambda d: (d / "dangling").symlink_to(d / "nowhere"), "dangling symlink"),
        (lambda d: (d / "linkdir").symlink_to(d / "train"), "symlinked directories are not supported"),
        (lambda d: (d / os.fsdecode(b"bad\xff")).write_bytes(b"x"), "not valid UTF-8"),
    ],
    ids=["fifo", "dangling", "dir-symlink", "non-utf8"],
)
def test_special_entries_are_refused(tmp_path: Path, make_bad: object, needle: str) -> None:
    directory = sample(tmp_path / "d")
    make_bad(directory)  # type: ignore[operator]
    with pytest.raises(DatasetError, match=needle):
        commit_directory(directory, chunk_size=CS)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read any file, so permissions cannot make one unreadable")
def test_unreadable_files_are_refused(tmp_path: Path) -> None:
    directory = sample(tmp_path / "d")
    (directory / "README").chmod(0)
    with pytest.raises(DatasetError, match="README: not readable"):
        commit_directory(directory, chunk_size=CS)


# -- tampering: each case is detected -------------------------------------------------------------------


def flip(path: Path, offset: int) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x01]))


def test_byte_flipped_before_open(committed: tuple[Path, bytes]) -> None:
    directory, root = committed
    flip(directory / "train/x.bin", 5 * CS + 17)
    ds = open_dataset(directory, root)
    with ds.open("train/x.bin") as f:
        assert f.read(5 * CS) == (directory / "train/x.bin").read_bytes()[: 5 * CS]  # chunks 0-4 are intact
        with pytest.raises(DataIntegrityError) as err:
            f.read(1)
    assert (err.value.path, err.value.chunk) == ("train/x.bin", 5)
    assert err.value.expected != err.value.actual and len(err.value.expected) == 64


def test_byte_flipped_after_open(committed: tuple[Path, bytes]) -> None:
    directory, root = committed
    ds = open_dataset(directory, root)
    with ds.open("train/x.bin") as f:
        assert f.read(CS)  # chunk 0 verified
        flip(directory / "train/x.bin", 9 * CS)
        f.seek(9 * CS)
        with pytest.raises(DataIntegrityError) as err:
            f.read(10)
    assert err.value.chunk == 9


def test_whole_chunk_reads_into_the_callers_buffer_are_verified_and_wiped(committed: tuple[Path, bytes]) -> None:
    directory, root = committed
    flip(directory / "train/x.bin", 2 * CS + 5)
    buf = bytearray(b"\xaa" * (4 * CS))
    with open_dataset(directory, root).open("train/x.bin") as f:
        f.seek(2 * CS)
        with pytest.raises(DataIntegrityError) as err:
            f.readinto(buf)
    assert err.value.chunk == 2
    assert buf[:CS] == bytes(CS)  # the tampered chunk was wiped: nothing unverified is left behind
    assert buf[CS:] == b"\xaa" * (3 * CS)  # and nothing after it was read


def test_truncation_before_and_after_open(committed: tuple[Path, bytes]) -> None:
    directory, root = committed
    ds = open_dataset(directory, root)
    f = ds.open("train/x.bin")
    with (directory / "train/x.bin").open("r+b") as fh:
        fh.truncate(10 * CS)
    f.seek(10 * CS)
    with pytest.raises(DataIntegrityError) as err:
        f.read()
    assert err.value.chunk == 10
    f.close()
    with pytest.raises(DataIntegrityError, match="size in bytes is 40960"):
        ds.open("train/x.bin")


def test_append_before_and_after_open(committed: tuple[Path, bytes]) -> None:
    directory, root = committed
    ds = open_dataset(directory, root)
    f = ds.open("train/y.bin")
    with (directory / "train/y.bin").open("ab") as fh:
        fh.write(b"extra")
    with pytest.raises(DataIntegrityError, match="size in bytes"):
        f.read()
    f.close()
    with pytest.raises(DataIntegrityError, match="size in bytes is 12293"):
        ds.open("train/y.bin")
    with pytest.raises(DataIntegrityError, match=r"train/y\.bin"):
        ds.verify_all()


def test_file_added(committed: tuple[Path, bytes]) -> None:
    directory, root = committed
    (directory / "train/z.bin").write_bytes(b"poison")
    ds = open_dataset(directory, root)
    with pytest.raises(DatasetError, match="not in the commitment"):
        ds.open("train/z.bin")
    with pytest.raises(DataIntegrityError, match="file not in the commitment") as err:
        ds.verify_all()
    assert err.value.path == "train/z.bin"


def test_file_removed(committed: tuple[Path, bytes]) -> None:
    directory, root = committed
    (directory / "README").unlink()
    ds = open_dataset(directory, root)
    with pytest.raises(DataIntegrityError, match="missing"):
        ds.open("README")
    with pytest.raises(DataIntegrityError, match="README"):
        ds.verify_all()


def test_file_renamed(committed: tuple[Path, bytes]) -> None:
    directory, root = committed
    (directory / "train/y.bin").rename(directory / "train/y2.bin")
    ds = open_dataset(directory, root)
    with pytest.raises(DataIntegrityError, match="missing"):
        ds.open("train/y.bin")
    with pytest.raises(DatasetError, match="not in the commitment"):
        ds.open("train/y2.bin")


def test_files_swapped(committed: tuple[Path, bytes]) -> None:
    directory, root = committed
    x, y = directory / "train/x.bin", directory / "train/y.bin"
    data_x, data_y = x.read_bytes(), y.read_bytes()
    x.write_bytes(data_y)
    y.write_bytes(data_x)
    with pytest.raises(DataIntegrityError, match="size in bytes"):
        open_dataset(directory, root).verify_all()


def test_index_edited(committed: tuple[Path, bytes]) -> None:
    directory, root = committed
    path = directory / ".fedattest-index"
    original = path.read_bytes()
    raw = bytearray(original)
    raw[100] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(DatasetError, match="index"):
        open_dataset(directory, root)
    # An index forged consistently (its own stated root recomputed) still fails against the commitment.
    index = DatasetIndex.parse(original)
    first = index.files[0]
    leaves = bytes([first.leaves[0] ^ 0x01]) + first.leaves[1:]
    forged = DatasetIndex(index.chunk_size, (IndexedFile(first.path, first.size, leaves), *index.files[1:]))
    path.write_bytes(forged.to_bytes())
    with pytest.raises(DatasetError, match="does not match the commitment"):
        open_dataset(directory, root)


def test_chunk_size_changed(committed: tuple[Path, bytes]) -> None:
    directory, root = committed
    commit_directory(directory, chunk_size=2 * CS)  # overwrites the index with another chunk size
    with pytest.raises(DatasetError, match="does not match the commitment"):
        open_dataset(directory, root)


def test_wrong_root_and_bad_roots(committed: tuple[Path, bytes]) -> None:
    directory, root = committed
    with pytest.raises(DatasetError, match="does not match"):
        open_dataset(directory, bytes(32))
    for bad in ("zz", "00" * 31, b"short"):
        with pytest.raises(DatasetError, match="root"):
            open_dataset(directory, bad)
    with pytest.raises(DatasetError, match="no index"):
        open_dataset(directory, root, directory / "missing-index")


@pytest.mark.parametrize("path", ["../data/README", "/etc/passwd", "train/../README", "", "train//x.bin", "./README", "nope"])
def test_paths_outside_the_commitment_are_refused(committed: tuple[Path, bytes], path: str) -> None:
    directory, root = committed
    with pytest.raises(DatasetError):
        open_dataset(directory, root).open(path)


# -- reading ---------------------------------------------------------------------------------------------


def test_random_access_hashes_only_the_chunks_it_reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    directory = make(tmp_path / "d", {"big": os.urandom(256 * CS)})
    root = commit_directory(directory, chunk_size=CS)[0].root
    hashed: list[int] = []
    real = tree.chunk_leaf
    monkeypatch.setattr(dataset_module.tree, "chunk_leaf", lambda data: hashed.append(len(data)) or real(data))
    with open_dataset(directory, root).open("big") as f:
        f.seek(-1, os.SEEK_END)
        assert f.read(1) == (directory / "big").read_bytes()[-1:]
        assert hashed == [CS]
        f.seek(3)
        f.read(10)
        f.read(10)  # the same chunk again: served from the last verified chunk
        assert hashed == [CS, CS]


def test_numpy_readers(tmp_path: Path) -> None:
    array = np.arange(50_000, dtype=np.float64).reshape(500, 100)
    directory = tmp_path / "d"
    directory.mkdir()
    np.save(directory / "features.npy", array)
    array.tofile(directory / "raw.f64")
    ds = open_dataset(directory, commit_directory(directory, chunk_size=CS)[0].root)
    with ds.open("features.npy") as f:
        assert np.array_equal(np.load(f), array)
    # np.fromfile-style: read straight into a preallocated array, verified on the way.
    out = np.empty(array.shape, dtype=np.float64)
    with ds.open("raw.f64") as f:
        assert f.readinto(memoryview(out).cast("B")) == array.nbytes
        with pytest.raises(OSError, match="no file descriptor"):
            f.fileno()  # np.fromfile(f) would bypass verification, so it is refused
    assert np.array_equal(out, array)


class RowDataset:
    """The shape of a torch.utils.data.Dataset over fixed-size records (torch itself is not needed)."""

    def __init__(self, path: str, ds: object, row_bytes: int) -> None:
        self.file = ds.open(path)  # type: ignore[attr-defined]
        self.row_bytes = row_bytes
        self.rows = ds.size(path) // row_bytes  # type: ignore[attr-defined]

    def __len__(self) -> int:
        return self.rows

    def __getitem__(self, i: int) -> np.ndarray:
        self.file.seek(i * self.row_bytes)
        return np.frombuffer(self.file.read(self.row_bytes), dtype=np.float64)


def test_dataset_wrapper_random_rows(tmp_path: Path) -> None:
    array = np.random.default_rng(1).random((1000, 16))
    directory = tmp_path / "d"
    directory.mkdir()
    array.tofile(directory / "rows.f64")
    ds = open_dataset(directory, commit_directory(directory, chunk_size=CS)[0].root)
    rows = RowDataset("rows.f64", ds, 16 * 8)
    assert len(rows) == 1000
    for i in (999, 0, 517, 3):
        assert np.array_equal(rows[i], array[i])


# -- index format ------------------------------------------------------------------------------------------


def test_index_round_trip_and_strict_parsing(committed: tuple[Path, bytes]) -> None:
    directory, root = committed
    raw = (directory / ".fedattest-index").read_bytes()
    index = DatasetIndex.parse(raw)
    assert index.to_bytes() == raw and index.root == root
    for bad, field in [
        (b"X" + raw[1:], "index.magic"),
        (raw[:16] + b"\x00\x02" + raw[18:], "index.version"),
        (raw[:-1], "index.root"),
        (raw + b"\x00", "index"),
        (raw[:40], "index.files"),
    ]:
        with pytest.raises(FormatError) as err:
            DatasetIndex.parse(bad)
        assert err.value.field.startswith(field), (field, err.value.field)


# -- command line -------------------------------------------------------------------------------------------

runner = CliRunner()


def test_cli_commit_and_verify(tmp_path: Path) -> None:
    directory = sample(tmp_path / "d")
    out = tmp_path / "commitment.json"
    result = runner.invoke(app, ["data", "commit", str(directory), "--chunk-size", "4KiB", "-o", str(out)])
    assert result.exit_code == 0, result.stderr
    commitment = json.loads(out.read_text())
    assert commitment["files"] == 5 and commitment["chunk_size"] == CS
    assert f"root        {commitment['root']}" in result.stdout
    ok = runner.invoke(app, ["data", "verify", str(directory), "--commitment", str(out), "--json"])
    assert ok.exit_code == 0 and json.loads(ok.stdout)["ok"] is True
    flip(directory / "train/x.bin", 7 * CS)
    bad = runner.invoke(app, ["data", "verify", str(directory), "--root", commitment["root"]])
    line = assert_one_line_error(bad, 1, "'train/x.bin' chunk 7")
    assert "commitment says" in line
    as_json = runner.invoke(app, ["data", "verify", str(directory), "--root", commitment["root"], "--json"])
    assert json.loads(as_json.stdout)["chunk"] == 7


def test_cli_commit_json_and_usage_errors(tmp_path: Path) -> None:
    directory = sample(tmp_path / "d")
    result = runner.invoke(app, ["data", "commit", str(directory), "--json", "--chunk-size", "65536"])
    assert result.exit_code == 0 and len(json.loads(result.stdout)["root"]) == 64
    assert_one_line_error(runner.invoke(app, ["data", "commit", str(directory), "--chunk-size", "1.5MB"]), 2, "--chunk-size")
    assert_one_line_error(runner.invoke(app, ["data", "commit", str(directory), "--chunk-size", "3KiB"]), 2, "power of two")
    assert_one_line_error(runner.invoke(app, ["data", "commit", str(tmp_path / "nope")]), 2, "nope")
    assert_one_line_error(runner.invoke(app, ["data", "verify", str(directory)]), 2, "exactly one of --root")
    assert_one_line_error(runner.invoke(app, ["data", "verify", str(directory), "--root", "xyz"]), 2, "hex digits")
    assert_one_line_error(runner.invoke(app, ["data", "verify", str(directory), "--root", "00" * 32]), 1, "does not match")
    shutil.rmtree(directory / "train")
    (directory / "train").mkdir()
    os.mkfifo(directory / "train" / "pipe")
    assert_one_line_error(runner.invoke(app, ["data", "commit", str(directory)]), 2, "train/pipe: not a regular file")


# -- the commitment format is pinned: roots and index bytes made by the first implementation ----------------


def golden(directory: Path) -> Path:
    """Sizes around chunk boundaries, nesting, a name sorting before '/', unicode, an empty file and an
    empty directory, and two symlinks to files inside (one relative)."""

    def data(seed: int, n: int) -> bytes:
        out = bytearray()
        i = 0
        while len(out) < n:
            out += hashlib.sha256(f"{seed}:{i}".encode()).digest()
            i += 1
        return bytes(out[:n])

    sizes = [0, 1, 31, 4095, 4096, 4097, 8192, 3 * 4096 + 5, 65536, 65537, 200_000]
    for i, size in enumerate(sizes):
        path = directory / f"dir{i % 3}" / f"f{i:02d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data(i, size))
    (directory / "naïve").mkdir()
    (directory / "naïve" / "ünïcode.txt").write_bytes("grüß".encode())
    (directory / "Z").write_bytes(b"upper")
    (directory / "a b").write_bytes(b"space")
    (directory / "deep" / "er" / "est").mkdir(parents=True)
    (directory / "deep" / "er" / "est" / "leaf").write_bytes(data(99, 5000))
    (directory / "emptydir").mkdir()
    (directory / "link").symlink_to(directory / "dir0" / "f03.bin")
    (directory / "dir1" / "rel-link").symlink_to("../Z")
    return directory


# chunk size -> (root, SHA-256 of the index file): computed before the scan was rewritten.
GOLDEN = {
    4096: (
        "560e3302087618f9be88020355029a64f7b7b137ba3a75b7cd8370ac52cc86cb",
        "ff241a50d92c0932caf986672db95449a600aed930815c10f2c93999b4b6e843",
    ),
    8192: (
        "7e80ce1f644c1b12ffd8913858fe9ebe94c2899ce60282bb82fb984499c5c2ed",
        "f47d39bf57de362601312b750a61a44962c31b96fb3cd4c8c1fdd3f2507067a1",
    ),
    1 << 20: (
        "210c26b8658032a44ab69ca439ee8263e58597e10ec6a2c31cede44895e926ce",
        "11100e3fa333ce92287888c618fe31945be6f6b395e191f9457c530c971721c1",
    ),
}
EMPTY_DATASET_ROOT = "b4167bc6e4b5fac67085cd420625fc58e7663eb2664f0950d340068cb96c1bdf"

# Every path of the engine, forced: small files inline, in pool batches, in segments, in helper processes
# (also when a helper gives every file back, or dies).
ENGINES = {
    "default": {},
    "one-worker": {"workers": 1},
    "all-in-pool": {"INLINE_MAX": 0, "BATCH_FILES": 2, "SEGMENT_BYTES": 2 * 4096, "READ_BLOCK": 4096, "workers": 2},
    "helpers": {"HELPER_AFTER": 0, "HELPER_FILES": 3, "HELPER_QUEUE": 50, "workers": 3},
    "helpers-and-here": {"HELPER_AFTER": 0, "HELPER_FILES": 2, "workers": 2},
    "helpers-give-back": {"HELPER_AFTER": 0, "HELPER_MAX": 0, "workers": 2},
    "helpers-and-pool": {
        "HELPER_AFTER": 0,
        "HELPER_MAX": 5000,
        "HELPER_QUEUE": 50,
        "INLINE_MAX": 100,
        "SEGMENT_BYTES": 4 * 4096,
        "workers": 2,
    },
}


def engine(monkeypatch: pytest.MonkeyPatch, name: str) -> int | None:
    settings = dict(ENGINES[name])
    workers = settings.pop("workers", None)
    for attr, value in settings.items():
        owners = [module for module in (walk, hashing, helper_client, scan) if hasattr(module, attr)]
        assert len(owners) == 1, f"{attr} is in {len(owners)} of the engine's modules: a setting must be in one"
        monkeypatch.setattr(owners[0], attr, value)
    if "HELPER_AFTER" in settings:  # helpers are capped at the cores less one: have some on any machine
        monkeypatch.setattr(scan, "default_workers", lambda: 4)
    return workers


@pytest.mark.parametrize("name", list(ENGINES))
def test_roots_and_index_bytes_are_pinned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    workers = engine(monkeypatch, name)
    directory = golden(tmp_path / "data")
    for chunk_size, (root, index_sha) in GOLDEN.items():
        commitment, index = commit_directory(directory, chunk_size=chunk_size, workers=workers)
        assert (commitment.root.hex(), commitment.files, commitment.total_bytes) == (root, 17, 372994)
        raw = (directory / ".fedattest-index").read_bytes()
        assert hashlib.sha256(raw).hexdigest() == index_sha
        assert index.to_bytes() == raw and index.root == commitment.root
    empty = tmp_path / "empty"
    empty.mkdir()
    assert write_commitment(empty, chunk_size=4096, workers=workers).root.hex() == EMPTY_DATASET_ROOT


def test_a_helper_that_dies_is_replaced_by_hashing_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine(monkeypatch, "helpers")

    def dead(self: object, count: int) -> object:
        raise helper_client.HelperError

    monkeypatch.setattr(helper_client.Helper, "receive", dead)
    directory = golden(tmp_path / "data")
    assert commit_directory(directory, chunk_size=4096, workers=2)[0].root.hex() == GOLDEN[4096][0]


def test_requests_too_big_for_the_pipe_are_hashed_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine(monkeypatch, "helpers")
    monkeypatch.setattr(helper_client, "HELPER_QUEUE", 6)
    directory = golden(tmp_path / "data")
    # 100-byte requests: the directory's path and a name or two fit, or not even one (then it is done here).
    monkeypatch.setattr(helper_client, "_pipe_size", lambda fd: 7 * (len(os.fsencode(directory.resolve())) + 40))
    assert commit_directory(directory, chunk_size=4096, workers=2)[0].root.hex() == GOLDEN[4096][0]


@pytest.mark.parametrize("n", range(70))
def test_streaming_merkle_builder_is_merkle_root(n: int) -> None:
    leaves = [tree.chunk_leaf(i.to_bytes(4, "big")) for i in range(n)]
    builder = tree.MerkleBuilder()
    for leaf in leaves:
        builder.add(leaf)
    assert builder.root() == tree.merkle_root(leaves) and builder.count == n


@pytest.mark.parametrize("name", ["default", "all-in-pool", "helpers"])
def test_refusals_are_the_same_on_every_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    workers = engine(monkeypatch, name)
    directory = golden(tmp_path / "data")
    os.mkfifo(directory / "dir2" / "pipe")
    with pytest.raises(DatasetError, match=r"^dir2/pipe: not a regular file"):
        commit_directory(directory, chunk_size=4096, workers=workers)
    os.unlink(directory / "dir2" / "pipe")
    (directory / "dir2" / "out").symlink_to(tmp_path)
    with pytest.raises(DatasetError, match=r"^dir2/out: symlink leaves the dataset directory"):
        commit_directory(directory, chunk_size=4096, workers=workers)
    assert not [p for p in directory.iterdir() if p.name.endswith(".tmp")]  # the index being written is removed


@pytest.mark.parametrize("name", ["default", "all-in-pool", "helpers-give-back"])
def test_a_file_that_cannot_be_opened_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Unreadable files (root reads anything, so the refusal is simulated where this process opens files:
    a helper gives back what it cannot open, and it is opened here)."""
    workers = engine(monkeypatch, name)
    directory = golden(tmp_path / "data")
    real_open = os.open

    def deny(path: object, flags: int, *args: object, **kwargs: object) -> int:
        if os.fsdecode(path).endswith(("f05.bin", "f10.bin")):  # type: ignore[arg-type]
            raise PermissionError(13, "Permission denied")
        return real_open(path, flags, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", deny)
    with pytest.raises(DatasetError, match=r"^dir1/f10\.bin: not readable \(permission denied\)$"):
        commit_directory(directory, chunk_size=4096, workers=workers)


def test_errors_name_the_first_bad_path_in_commitment_order(tmp_path: Path) -> None:
    directory = golden(tmp_path / "data")
    for bad in ("zzz", "dir1/pipe", "b-pipe"):
        os.mkfifo(directory / bad)
    with pytest.raises(DatasetError, match=r"^b-pipe: "):
        commit_directory(directory, chunk_size=4096)


def test_a_file_that_grows_while_hashed_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 10_000)
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(DatasetError, match="changed while being read"):
            hashing.hash_range(fd, b"f", 9_000, 4096, range(3))  # as if it had grown after fstat said 9,000
        with pytest.raises(DatasetError, match="changed while being read"):
            hashing.hash_range(fd, b"f", 12_000, 4096, range(3))  # or shrunk
    finally:
        os.close(fd)


def test_deep_trees_and_big_directories(tmp_path: Path) -> None:
    directory = tmp_path / "d"
    deep = directory / "/".join(f"l{i}" for i in range(120))
    deep.mkdir(parents=True)
    (deep / "bottom").write_bytes(b"deep")
    wide = directory / "wide"
    wide.mkdir()
    for i in range(3000):  # more than one run of the walk, and enough small files to start helpers
        (wide / f"{i:05d}").write_bytes(i.to_bytes(4, "big"))
    commitment, index = commit_directory(directory, chunk_size=4096)
    assert commitment.files == 3001 and index.files[0].path.endswith("/bottom")
    paths = [f.path.encode() for f in index.files]
    assert paths == sorted(paths)
    assert commit_directory(directory, chunk_size=4096, workers=1)[0].root == commitment.root


# -- arguments: checked before anything is hashed --------------------------------------------------------


@pytest.fixture
def no_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("hashing started before the arguments were checked")

    monkeypatch.setattr(commit_module, "hash_tree", boom)


class PathLikeDir:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __fspath__(self) -> str:
        return str(self.path)


def test_str_and_pathlike_paths_everywhere(tmp_path: Path) -> None:
    directory = sample(tmp_path / "d")
    index = tmp_path / "index"
    out = tmp_path / "inside"
    commitment, _ = commit_directory(str(directory), chunk_size=CS, index_path=str(index), exclude=[str(directory / "README")])
    assert commitment.files == 4 and index.is_file()
    again = write_commitment(
        PathLikeDir(directory), chunk_size=CS, index_path=PathLikeDir(out), exclude=(PathLikeDir(directory / "README"),)
    )
    assert again == commitment
    ds = open_dataset(str(directory), commitment.root.hex(), str(index))
    assert ds.read_bytes(PurePosixPath("train/y.bin")) == (directory / "train/y.bin").read_bytes()
    assert ds.size(PurePosixPath("empty")) == 0
    ds.verify_all(strict=False)
    assert open_dataset(PathLikeDir(directory), commitment.root, PathLikeDir(out)).files() == ds.files()
    with pytest.raises(DatasetError, match="not in the commitment"):  # the excluded file
        ds.open("README")


@pytest.mark.usefixtures("no_hashing")
@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"directory": "missing"}, "missing: No such file or directory"),
        ({"directory": "file"}, "file: not a directory"),
        ({"directory": 42}, "directory: expected a path"),
        ({"directory": b"/bytes"}, "directory: expected a path"),
        ({"directory": ""}, "directory: the path is empty"),
        ({"chunk_size": "1MiB"}, "chunk_size: expected a number of bytes"),
        ({"chunk_size": True}, "chunk_size: expected a number of bytes"),
        ({"chunk_size": 3000}, "chunk_size: 3000 is not a power of two"),
        ({"chunk_size": 1 << 31}, "is not a power of two between 4 KiB and 1 GiB"),
        ({"workers": 0}, "workers: expected a positive number"),
        ({"workers": "2"}, "workers: expected a positive number"),
        ({"index_path": "nowhere/index"}, "is not an existing directory"),
        ({"index_path": "."}, "is a directory"),
        ({"index_path": "data/README"}, "refusing to overwrite a file that is not a index"),
        ({"index_path": "fifo"}, "not a regular file"),
        ({"index_path": 3.5}, "index: expected a path"),
        ({"exclude": "data/README"}, "exclude: expected a list of paths"),
        ({"exclude": [None]}, "exclude: expected a path"),
        ({"progress": "yes"}, "progress: expected a callable"),
    ],
)
def test_bad_arguments_are_refused_before_hashing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kwargs: dict[str, object], needle: str
) -> None:
    monkeypatch.chdir(tmp_path)
    sample(tmp_path / "data")
    (tmp_path / "file").write_bytes(b"x")
    os.mkfifo(tmp_path / "fifo")
    before = (tmp_path / "data" / "README").read_bytes()
    args: dict[str, object] = {"directory": "data", **kwargs}
    with pytest.raises(DatasetArgumentError) as err:
        write_commitment(**args)  # type: ignore[arg-type]
    assert needle in str(err.value) and "\n" not in str(err.value)
    assert isinstance(err.value, ValueError) and isinstance(err.value, DatasetError)
    assert (tmp_path / "data" / "README").read_bytes() == before
    assert not list((tmp_path / "data").glob(".fedattest-index*"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write in any directory")
@pytest.mark.usefixtures("no_hashing")
def test_an_index_directory_that_is_not_writable_is_refused_first(tmp_path: Path) -> None:
    directory = sample(tmp_path / "d")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(DatasetArgumentError, match="permission denied"):
        commit_directory(directory, index_path=locked / "index")


def test_an_existing_index_is_replaced_and_a_foreign_file_kept(tmp_path: Path) -> None:
    directory = sample(tmp_path / "d")
    index = tmp_path / "index"
    index.write_bytes(b"")  # an empty file (mktemp) may be used
    root = commit_directory(directory, chunk_size=CS, index_path=index)[0].root
    assert commit_directory(directory, chunk_size=2 * CS, index_path=index)[0].root != root  # an index: replaced
    with pytest.raises(DatasetArgumentError, match="refusing to overwrite"):
        commit_directory(directory, chunk_size=CS, index_path=directory / "train" / "x.bin")


def test_bad_arguments_to_open_and_verify(committed: tuple[Path, bytes], tmp_path: Path) -> None:
    directory, root = committed
    for args, needle in [
        ((tmp_path / "missing", root), "No such file or directory"),
        ((directory / "README", root), "not a directory"),
        ((directory, "zz"), "64 hex digits"),
        ((directory, b"short"), "32 bytes"),
        ((directory, 12345), "32 bytes or 64 hex digits"),
        ((directory, root, 7), "index: expected a path"),
    ]:
        with pytest.raises(DatasetArgumentError, match=needle):
            open_dataset(*args)  # type: ignore[arg-type]
    ds = open_dataset(directory, bytearray(root))
    with pytest.raises(DatasetArgumentError, match="workers"):
        ds.verify_all(workers=0)
    with pytest.raises(DatasetArgumentError, match="committed path"):
        ds.open(b"README")  # type: ignore[arg-type]


def test_cli_bad_arguments_are_one_line_exit_2_before_hashing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    directory = sample(tmp_path / "d")
    (tmp_path / "notes.txt").write_text("my notes")
    monkeypatch.setattr(commit_module, "hash_tree", lambda *a, **k: pytest.fail("hashing started"))
    commit = ["data", "commit", str(directory)]
    for args, needle in [
        (["data", "commit", str(tmp_path / "nope")], "nope: No such file or directory"),
        (["data", "commit", str(directory / "README")], "not a directory"),
        ([*commit, "--chunk-size", "3KiB"], "--chunk-size: 3072 is not a power of two"),
        ([*commit, "--chunk-size", "0"], "--chunk-size: 0 is not a power of two"),
        ([*commit, "--index", str(tmp_path / "no" / "index")], "is not an existing directory"),
        ([*commit, "--index", str(tmp_path)], "is a directory"),
        ([*commit, "--index", str(tmp_path / "notes.txt")], "refusing to overwrite"),
        ([*commit, "-o", str(tmp_path)], "--output: commitment"),
        ([*commit, "-o", str(tmp_path / "notes.txt")], "refusing to overwrite"),
        ([*commit, "-o", str(tmp_path / "x"), "--index", str(tmp_path / "x")], "name the same file"),
        ([*commit, "--workers", "0"], "--workers"),
        (["data", "verify", str(tmp_path / "nope"), "--root", "00" * 32], "No such file or directory"),
    ]:
        assert_one_line_error(runner.invoke(app, args), 2, needle)
    assert (tmp_path / "notes.txt").read_text() == "my notes"


def test_cli_output_inside_the_directory_is_left_out(tmp_path: Path) -> None:
    directory = sample(tmp_path / "d")
    plain = runner.invoke(app, ["data", "commit", str(directory), "--json"])
    inside = runner.invoke(app, ["data", "commit", str(directory), "--json", "-o", str(directory / "commitment.json")])
    assert plain.exit_code == inside.exit_code == 0
    assert json.loads(plain.stdout)["root"] == json.loads(inside.stdout)["root"]
    again = runner.invoke(app, ["data", "commit", str(directory), "--json", "-o", str(directory / "commitment.json")])
    assert again.exit_code == 0 and json.loads(again.stdout) == json.loads(inside.stdout)  # its own file: replaced


# -- progress -----------------------------------------------------------------------------------------------


def test_progress_is_shown_only_on_a_terminal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    progress = cli_data._Progress(stream, delay=0.0, every=0.0)
    progress(10, 5 << 20)
    progress(20, 10 << 20)
    assert stream.getvalue().count("\r") == 2 and "20 files, 10.0 MiB" in stream.getvalue()
    progress.clear()
    assert stream.getvalue().endswith("\r\x1b[K")
    quiet = io.StringIO()
    cli_data._Progress(quiet, delay=3600)(10, 10)
    cli_data._Progress(quiet).clear()
    assert quiet.getvalue() == ""

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stderr", Tty())
    monkeypatch.setenv("TERM", "xterm")
    assert cli_data._show_progress(json_out=False) and not cli_data._show_progress(json_out=True)
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert not cli_data._show_progress(json_out=False)
    # Not a terminal (captured): nothing at all on stderr.
    result = runner.invoke(app, ["data", "commit", str(sample(tmp_path / "d"))])
    assert result.exit_code == 0 and result.stderr == ""


def test_progress_callback_sees_every_file(tmp_path: Path) -> None:
    directory = sample(tmp_path / "d")
    seen: list[tuple[int, int]] = []
    commitment = write_commitment(directory, chunk_size=CS, progress=lambda f, b: seen.append((f, b)))
    assert seen[-1] == (commitment.files, commitment.total_bytes)


@pytest.mark.parametrize("name", ["train/x.bin", "empty"])
def test_a_committed_file_replaced_by_a_fifo_is_refused_at_once(committed: tuple[Path, bytes], name: str) -> None:
    import threading

    directory, root = committed
    (directory / name).unlink()
    os.mkfifo(directory / name)  # nobody ever writes: a blocking open() would wait forever
    ds = open_dataset(directory, root)
    raised: dict[str, BaseException | None] = {}

    def attempt(what: str, call: object) -> None:
        try:
            call()  # type: ignore[operator]
            raised[what] = None
        except BaseException as exc:
            raised[what] = exc

    for what, call in (("read_bytes", lambda: ds.read_bytes(name)), ("verify_all", ds.verify_all)):
        worker = threading.Thread(target=attempt, args=(what, call), daemon=True)
        worker.start()
        worker.join(timeout=60)
        if worker.is_alive():  # a regression: let the blocked open() go, then fail rather than hang the suite
            with contextlib.suppress(OSError):
                os.close(os.open(directory / name, os.O_WRONLY | os.O_NONBLOCK))
            pytest.fail(f"{what} of a FIFO hangs")
        exc = raised[what]
        assert isinstance(exc, DataIntegrityError), exc
        assert exc.path == name and "not a regular file" in str(exc) and "FIFO" in str(exc), exc
