"""Dataset commitments: the root is a function of the data alone, every tampering is detected on read
or on verify, and bad input is refused with a clear message."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fedattest.cli import app
from fedattest.data import DataIntegrityError, DatasetError, DatasetIndex, commit_directory, open_dataset, tree
from fedattest.data import dataset as dataset_module
from fedattest.data.index import IndexedFile
from fedattest.errors import FormatError
from tests.test_cli_quote import assert_one_line_error

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
