"""``picbench data fetch`` against a real HTTP server on 127.0.0.1 serving archives built from the
shared data in GitHub's codeload layout (tests/data_server.py): byte equality with the shared data,
the manifest, cat1.jpg's blob id, corrupt/truncated/wrong/HTML/unsafe archives and a dying server
(each a named error, nothing half-written), resume with Range, --from, a full disk and a read-only
home (both on real tmpfs mounts in a user namespace), and the default data root."""

from __future__ import annotations

import filecmp
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
from dataclasses import replace
from pathlib import Path

import pytest
from data_server import ArchiveServer, source_archive, tar_gz, upstream_files, zip_bytes
from typer.testing import CliRunner

from picbench.cli import app
from picbench.data.errors import (
    ChecksumMismatchError,
    CorruptArchiveError,
    DownloadHTTPError,
    DownloadInterruptedError,
    MissingFileError,
    NotAnArchiveError,
    UnsafeArchiveError,
)
from picbench.data.fetch import WORK_DIR, fetch
from picbench.data.manifest import Manifest, build_manifest, file_digests, load_manifest
from picbench.data.msbench_table import msbench_table_json
from picbench.data.sources import SOURCES, sources_for
from picbench.errors import FormatError

REPO = Path(__file__).resolve().parents[1]
CAT1 = "msbench/images/living/cat1.jpg"
MS, UNO = SOURCES["ms-diffusion"], SOURCES["uno"]
# A small slice of the manifest for the fault tests: UNO's three files and five of MS-Diffusion's.
PICBENCH = f"{sys.executable} -c 'from picbench.cli import main; main()'"
SUBSET = {
    *(f"dreambench/{n}" for n in ("dreambench_singleip.json", "dreambench_multiip.json", "LICENSE.uno-json")),
    *("msbench/LICENSE", "msbench/msbench.json", "msbench/images/object/lantern.jpg", "msbench/images/midwearing/shirt.jpg", CAT1),
}


def tree(root: Path) -> list[str]:
    """Every file and folder under root, relative (what a test sees as 'written')."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")) if root.exists() else []


@pytest.fixture(scope="module")
def subset(data_dir: Path) -> Manifest:
    return Manifest({p: e for p, e in load_manifest().files.items() if p in SUBSET})


@pytest.fixture()
def server(data_dir: Path, subset: Manifest):
    """UNO and MS-Diffusion archives holding the subset's files."""
    srv = ArchiveServer()
    srv.serve([UNO, MS], lambda s: source_archive(s, data_dir, subset))
    yield srv
    srv.stop()


def assert_subset_placed(root: Path, data_dir: Path, subset: Manifest) -> None:
    for path, entry in subset.files.items():
        if not entry.optional:
            assert filecmp.cmp(root / path, data_dir / path, shallow=False), path
    assert not (root / WORK_DIR).exists()


# --- the manifest and the converted prompt table ---------------------------------------------------


def test_shipped_manifest_equals_the_shared_data(data_dir: Path) -> None:
    """scripts/data_manifest.py's output for the shared data is what the package ships."""
    assert build_manifest(data_dir).to_json() == load_manifest().to_json()
    assert len([e for e in load_manifest().files.values() if not e.optional]) == 205


def test_git_blob_ids_are_computed_as_git_does(data_dir: Path) -> None:
    """`git ls-tree 74eb2d6d msbench/living/` in MS-Diffusion/MS-Diffusion prints blob 8210529f...
    for cat.jpg and 836f1a88... for cat1.jpg (the file the shared snapshot lacks)."""
    assert file_digests(data_dir / "msbench/images/living/cat.jpg")[1] == "8210529fa5674021cdab0d35807066645427f869"
    cat1 = load_manifest().files[CAT1]
    assert cat1.git_blob == "836f1a880a504e1cb1b067579fbb8352bdb1a2f0" and cat1.optional and cat1.sha256 is None


def test_msbench_table_is_converted_without_running_it(data_dir: Path) -> None:
    """tests/fixtures/ms-diffusion/msbench.py is MS-Diffusion @ 74eb2d6d's file (its blob id
    4680516e... from `git ls-tree`); its JSON equals the shared msbench.json byte for byte."""
    text = (REPO / "tests/fixtures/ms-diffusion/msbench.py").read_bytes()
    assert file_digests(REPO / "tests/fixtures/ms-diffusion/msbench.py")[1] == "4680516e75661ec2f6ad822b9cd266b0ffc6c3f6"
    assert msbench_table_json(text.decode()) == (data_dir / "msbench/msbench.json").read_bytes()
    with pytest.raises(FormatError, match="not a literal"):
        msbench_table_json(text.decode() + "\nx = __import__('os').system('true')\n")
    with pytest.raises(FormatError, match="only `NAME = literal`"):
        msbench_table_json("import os\n" + text.decode())


# --- full fetch, byte for byte ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def full_server(data_dir: Path):
    srv = ArchiveServer()
    srv.serve(SOURCES.values(), lambda s: source_archive(s, data_dir, load_manifest()))
    yield srv
    srv.stop()


def test_full_fetch_equals_the_shared_data_and_a_rerun_does_nothing(data_dir: Path, full_server: ArchiveServer, tmp_path: Path) -> None:
    root = tmp_path / "data"
    result = CliRunner().invoke(app, ["data", "fetch", "all", "--data-dir", str(root), "--mirror", full_server.url])
    assert result.exit_code == 0, result.output
    expected = [p for p in tree(data_dir) if p.split("/")[0] in ("dreambench", "msbench")]
    assert tree(root) == expected  # no extra file, no .fetch/ left
    for rel in expected:
        if (data_dir / rel).is_file():
            assert filecmp.cmp(root / rel, data_dir / rel, shallow=False), rel
    assert [path for path, _ in full_server.requests] == [f"/{s.owner}/{s.repo}/tar.gz/{s.commit}" for s in SOURCES.values()]
    out = "".join(result.output.split())  # rich wraps long lines anywhere
    assert "CCBY4.0" in out and "Apache-2.0(LICENSE)" in out and "MIT(LICENSE)" in out and "LICENSE.uno-json" in out
    assert f"{CAT1}isnotin" in out  # the snapshot lacks it: reported, not refused

    n_requests = len(full_server.requests)
    again = CliRunner().invoke(app, ["data", "fetch", "all", "--data-dir", str(root), "--mirror", full_server.url])
    assert again.exit_code == 0, again.output
    assert len(full_server.requests) == n_requests  # no network
    assert again.output.count("nothing to do") == 3


# --- cat1.jpg: checked by its upstream git blob id ------------------------------------------------


def test_cat1_is_verified_by_its_blob_id(data_dir: Path, subset: Manifest, tmp_path: Path) -> None:
    """An archive with a cat1.jpg that is not upstream's is refused; with the manifest's blob id
    set to that file's (the check injected), the same archive is accepted and cat1 placed."""
    fake = b"\xff\xd8\xff\xe0 not the upstream cat\xff\xd9"
    files = {**upstream_files(MS, data_dir, subset), "msbench/living/cat1.jpg": fake}
    srv = ArchiveServer({f"/{MS.owner}/{MS.repo}/tar.gz/{MS.commit}": tar_gz(MS.top_folder, files, commit=MS.commit)})
    try:
        with pytest.raises(ChecksumMismatchError, match=r"cat1\.jpg.*git blob id .*upstream's is 836f1a88"):
            fetch([MS], tmp_path / "a", mirror=srv.url, manifest=subset)
        assert tree(tmp_path / "a") == []
        blob = hashlib.sha1(f"blob {len(fake)}\0".encode() + fake).hexdigest()
        injected = Manifest({**subset.files, CAT1: replace(subset.files[CAT1], git_blob=blob)})
        (outcome,) = fetch([MS], tmp_path / "b", mirror=srv.url, manifest=injected)
        assert (tmp_path / "b" / CAT1).read_bytes() == fake and outcome.unverifiable == []
    finally:
        srv.stop()


# --- faults: each named, nothing half-written, a rerun resumes -------------------------------------


@pytest.mark.parametrize("damage", ["bad-deflate", "short-archive"])
def test_corrupt_archive_is_named_and_deleted(damage: str, server: ArchiveServer, subset: Manifest, tmp_path: Path) -> None:
    """A deflate stream that cannot decode (first block of type 11, which does not exist) and an
    archive served whole but cut short (the server's Content-Length agrees, the gzip ends early)."""
    path = f"/{MS.owner}/{MS.repo}/tar.gz/{MS.commit}"
    body = server.archives[path]
    server.archives[path] = body[:10] + b"\xff" + body[11:] if damage == "bad-deflate" else body[: len(body) // 2]
    with pytest.raises(CorruptArchiveError, match="corrupt or truncated"):
        fetch([MS], tmp_path, mirror=server.url, manifest=subset)
    assert tree(tmp_path) == []  # no data file, no staging, no archive kept


def test_wrong_checksum_names_the_file_and_places_nothing(data_dir: Path, subset: Manifest, tmp_path: Path) -> None:
    files = upstream_files(MS, data_dir, subset)
    files["LICENSE"] = files["LICENSE"].replace(b"MIT", b"MTI")
    srv = ArchiveServer({f"/{MS.owner}/{MS.repo}/tar.gz/{MS.commit}": tar_gz(MS.top_folder, files, commit=MS.commit)})
    try:
        with pytest.raises(ChecksumMismatchError, match=r"msbench/LICENSE \(from MS-Diffusion-74eb2d6d.*\.tar\.gz\): sha256"):
            fetch([MS], tmp_path, mirror=srv.url, manifest=subset)
    finally:
        srv.stop()
    assert tree(tmp_path) == []  # files verified before the bad one are not placed either


def test_missing_file_is_named(data_dir: Path, subset: Manifest, tmp_path: Path) -> None:
    files = upstream_files(UNO, data_dir, subset)
    del files["datasets/dreambench_multiip.json"]
    srv = ArchiveServer({f"/{UNO.owner}/{UNO.repo}/tar.gz/{UNO.commit}": tar_gz(UNO.top_folder, files, commit=UNO.commit)})
    try:
        with pytest.raises(MissingFileError, match="dreambench/dreambench_multiip.json"):
            fetch([UNO], tmp_path, mirror=srv.url, manifest=subset)
    finally:
        srv.stop()
    assert tree(tmp_path) == []


@pytest.mark.parametrize("fault", ["truncate", "die"])
def test_broken_download_is_named_and_a_rerun_resumes_with_range(
    fault: str, data_dir: Path, server: ArchiveServer, subset: Manifest, tmp_path: Path
) -> None:
    server.fault = fault
    with pytest.raises(DownloadInterruptedError, match=r"stopped after \d+ of \d+ bytes.*run the same command again to resume"):
        fetch([MS], tmp_path, mirror=server.url, manifest=subset)
    (part,) = (tmp_path / WORK_DIR).glob("*.part")
    got = part.stat().st_size
    assert 0 < got < len(server.archives[f"/{MS.owner}/{MS.repo}/tar.gz/{MS.commit}"])
    assert tree(tmp_path) == [WORK_DIR, f"{WORK_DIR}/{part.name}"]  # nothing in the data layout
    if fault == "die":
        with pytest.raises(DownloadInterruptedError, match="cannot connect"):
            fetch([MS], tmp_path, mirror=server.url, manifest=subset)
        server = ArchiveServer(server.archives)  # the mirror comes back (on a new port)
    server.fault = None
    server.requests.clear()
    try:
        fetch([MS], tmp_path, mirror=server.url, manifest=subset)
    finally:
        server.stop() if fault == "die" else None
    assert server.requests == [(f"/{MS.owner}/{MS.repo}/tar.gz/{MS.commit}", f"bytes={got}-")]
    assert_subset_placed(tmp_path, data_dir, Manifest({p: e for p, e in subset.files.items() if MS.owns(p)}))


def test_server_ignoring_range_restarts_the_download(data_dir: Path, server: ArchiveServer, subset: Manifest, tmp_path: Path) -> None:
    server.fault = "truncate"
    with pytest.raises(DownloadInterruptedError):
        fetch([UNO], tmp_path, mirror=server.url, manifest=subset)
    server.fault = "ignore-range"
    fetch([UNO], tmp_path, mirror=server.url, manifest=subset)
    assert server.requests[-1][1] is not None  # asked for a range, got the whole file, kept it whole
    assert_subset_placed(tmp_path, data_dir, Manifest({p: e for p, e in subset.files.items() if UNO.owns(p)}))


@pytest.mark.parametrize("fault", ["html", "html-as-octet"])
def test_mirror_serving_html_is_refused(fault: str, server: ArchiveServer, subset: Manifest, tmp_path: Path) -> None:
    server.fault = fault
    with pytest.raises(NotAnArchiveError, match="HTML page"):
        fetch([UNO], tmp_path, mirror=server.url, manifest=subset)
    assert tree(tmp_path) == []


def _hostile(kind: str):
    def add(tar: tarfile.TarFile) -> None:
        top = UNO.top_folder
        info = tarfile.TarInfo(
            {"dotdot": f"{top}/datasets/../../escaped.txt", "absolute": "/tmp/picbench-escaped.txt"}.get(kind, f"{top}/x")
        )
        if kind == "outside":
            info.name = "other-folder/escaped.txt"
        if kind in ("symlink", "hardlink"):
            info.type = tarfile.SYMTYPE if kind == "symlink" else tarfile.LNKTYPE
            info.name, info.linkname = f"{top}/datasets/dreambench_singleip.json.lnk", "/etc/passwd"
            tar.addfile(info)
            return
        if kind == "device":
            info.type = tarfile.CHRTYPE
            tar.addfile(info)
            return
        data = b"escaped"
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))

    return add


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "outside", "symlink", "hardlink", "device"])
def test_unsafe_archive_members_are_refused(kind: str, data_dir: Path, subset: Manifest, tmp_path: Path) -> None:
    root = tmp_path / "root" / "data"
    files = upstream_files(UNO, data_dir, subset)
    body = tar_gz(UNO.top_folder, files, commit=UNO.commit, extra=_hostile(kind))
    srv = ArchiveServer({f"/{UNO.owner}/{UNO.repo}/tar.gz/{UNO.commit}": body})
    try:
        with pytest.raises(
            UnsafeArchiveError, match={"dotdot": r"escapes its folder", "absolute": "absolute", "outside": "outside"}.get(kind, "refused")
        ):
            fetch([UNO], root, mirror=srv.url, manifest=subset)
    finally:
        srv.stop()
    assert tree(tmp_path) == ["root", "root/data"]
    assert not Path("/tmp/picbench-escaped.txt").exists()


# --- --from: local archives and checkouts -----------------------------------------------------------


def test_from_a_folder_of_zip_archives_and_checkouts(data_dir: Path, subset: Manifest, tmp_path: Path) -> None:
    local = tmp_path / "local"
    local.mkdir()
    (local / f"{MS.top_folder}.zip").write_bytes(zip_bytes(MS.top_folder, upstream_files(MS, data_dir, subset)))
    for rel, data in upstream_files(UNO, data_dir, subset).items():  # a checkout folder named like the repository
        (local / UNO.repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (local / UNO.repo / rel).write_bytes(data)
    root = tmp_path / "data"
    outcomes = fetch([UNO, MS], root, from_dir=local, manifest=subset)
    assert [o.action for o in outcomes] == ["copied", "copied"] and outcomes[1].unverifiable == [CAT1]
    assert_subset_placed(root, data_dir, subset)

    (local / UNO.repo / "LICENSE").unlink()
    (local / UNO.repo / "LICENSE").symlink_to("/etc/hostname")
    with pytest.raises(UnsafeArchiveError, match="symlink"):
        fetch([UNO], tmp_path / "other", from_dir=local, manifest=subset)
    with pytest.raises(MissingFileError, match=r"--from .*no copy of google/dreambooth"):
        fetch(sources_for("dreambench"), tmp_path / "other", from_dir=local)


# --- a full disk and a read-only home: real tmpfs mounts in a user namespace -----------------------


def _in_namespace(script: str, tmp_path: Path) -> subprocess.CompletedProcess:
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode != 0:
        pytest.skip("needs `unshare -rm` (user and mount namespaces) to mount a small or read-only tmpfs")
    env = {k: v for k, v in os.environ.items() if k != "PICBENCH_DATA_DIR"}
    return subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)


@pytest.mark.parametrize("size", ["2m", "30m"])  # full while downloading (22.6 MB) / while staging
def test_full_disk_is_named_and_leaves_nothing(size: str, full_server: ArchiveServer, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    result = _in_namespace(
        f"mount -t tmpfs -o size={size} tmpfs {home} && PICBENCH_HOME={home} {PICBENCH} data fetch msbench --mirror {full_server.url}; "
        f"echo rc=$?; find {home} | sort",
        tmp_path,
    )
    assert "rc=2" in result.stdout, result.stdout + result.stderr
    assert "no space left on the device" in " ".join(result.stderr.split())
    assert (".tar.gz.part" if size == "2m" else ".staging") in "".join(result.stderr.split())  # where it ran out
    listed = [line for line in result.stdout.splitlines() if line.startswith(str(home))]
    assert listed == [str(home), str(home / "data")], listed  # no partial download, no staging, no data file


def test_read_only_home_is_named_and_a_complete_read_only_root_is_fine(full_server: ArchiveServer, tmp_path: Path) -> None:
    home, full = tmp_path / "home", tmp_path / "full"
    home.mkdir()
    full.mkdir()
    before = len(full_server.requests)
    fetch_msbench = f"{PICBENCH} data fetch msbench --mirror {full_server.url}"
    result = _in_namespace(
        f"mount -t tmpfs -o ro tmpfs {home} && PICBENCH_HOME={home} {fetch_msbench}; echo rc=$?; "
        f"mount -t tmpfs tmpfs {full} && PICBENCH_HOME={full} {fetch_msbench} >/dev/null 2>&1 && mount -o remount,ro {full} && "
        f"PICBENCH_HOME={full} {fetch_msbench}; echo rc=$?",
        tmp_path,
    )
    assert "rc=2" in result.stdout, result.stdout + result.stderr
    assert f"cannot write to the data root {home / 'data'}" in " ".join(result.stderr.split())
    assert len(full_server.requests) == before + 1  # the refusal came before any download; then one fetch into `full`
    assert result.stdout.count("rc=0") == 1 and "nothing to do" in result.stdout  # read-only but complete: nothing to write


# --- the default data root --------------------------------------------------------------------------


def test_missing_data_names_the_fetch_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PICBENCH_DATA_DIR")
    monkeypatch.setenv("PICBENCH_HOME", str(tmp_path / "home"))
    result = CliRunner().invoke(app, ["bench", "build", "positionic-open"])
    assert result.exit_code == 2
    message = " ".join(result.output.split())
    assert f"{tmp_path / 'home' / 'data'} (default: $PICBENCH_HOME/data) does not exist" in message
    assert "run `picbench data fetch all`" in message


# --- a fresh machine: the README's set-up, the fetch, the README's main command --------------------


def readme_main_command() -> list[str]:
    """The command lines of the README's "The main command" block, comments dropped."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    block = text.split("## The main command", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    return [line.split("#", 1)[0].strip() for line in block.splitlines() if line.split("#", 1)[0].strip()]


@pytest.mark.slow
def test_fresh_clone_fetches_the_data_and_runs_the_readme_main_command(full_server: ArchiveServer, tmp_path: Path) -> None:
    """A copy of the tree with no ../shared beside it, a new venv, PICBENCH_DATA_DIR unset: the
    README's set-up command, then the README's main command block as written (its `picbench data
    fetch all` pointed at the local server through $PICBENCH_DATA_MIRROR), with no other step."""
    commands = readme_main_command()
    assert commands[0] == "picbench data fetch all" and any(c.startswith("picbench run ") for c in commands)
    clone = tmp_path / "clone" / "picbench"
    ignore = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", "runs", "report.html")
    shutil.copytree(REPO, clone, ignore=ignore, symlinks=True)
    assert not (clone.parent.parent / "shared").exists() and not (clone.parent / "shared").exists()
    venv = tmp_path / "venv"
    subprocess.run(
        [str(Path(sys.base_prefix) / "bin" / "python3"), "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=120
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PICBENCH_DATA_DIR", "PYTHONPATH", "VIRTUAL_ENV")}
    env |= {"PATH": f"{venv / 'bin'}:{env['PATH']}", "VIRTUAL_ENV": str(venv), "PICBENCH_HOME": str(tmp_path / "home")}
    env |= {"PICBENCH_DATA_MIRROR": full_server.url, "COLUMNS": "200"}

    def sh(command: str, timeout: int) -> str:
        done = subprocess.run(["bash", "-c", command], cwd=clone, env=env, capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, f"{command}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return done.stdout + done.stderr

    sh("bash scripts/dev-setup.sh", 600)
    assert sh("python -c 'import picbench; print(picbench.__file__)'", 60).strip() == str(clone / "picbench" / "__init__.py")
    before = len(full_server.requests)
    outputs = [sh(command, 900) for command in commands]
    assert len(full_server.requests) == before + 3  # the three archives, from the local server only
    assert (tmp_path / "home" / "data" / "dreambench" / "dreambench_singleip.json").is_file()
    assert "not built yet: building it now" in " ".join(outputs)
    assert (clone / "runs" / "positionic__positionic-open" / "results.json").is_file() and (clone / "report.html").is_file()


def test_verify_rehashes_present_files_and_replaces_a_damaged_one(
    data_dir: Path, server: ArchiveServer, subset: Manifest, tmp_path: Path
) -> None:
    fetch([UNO], tmp_path, mirror=server.url, manifest=subset)
    damaged = tmp_path / "dreambench" / "LICENSE.uno-json"
    damaged.write_bytes(damaged.read_bytes().replace(b"Apache", b"Apachf"))  # same size
    n = len(server.requests)
    assert [o.action for o in fetch([UNO], tmp_path, mirror=server.url, manifest=subset)] == ["present"]  # sizes only
    assert len(server.requests) == n
    assert [o.action for o in fetch([UNO], tmp_path, mirror=server.url, manifest=subset, verify=True)] == ["downloaded"]
    assert_subset_placed(tmp_path, data_dir, Manifest({p: e for p, e in subset.files.items() if UNO.owns(p)}))


def test_mirror_without_the_archive_is_named(subset: Manifest, tmp_path: Path) -> None:
    srv = ArchiveServer()  # serves nothing: 404
    try:
        with pytest.raises(DownloadHTTPError, match=rf"{srv.url}/bytedance/UNO/tar.gz/{UNO.commit}: HTTP 404"):
            fetch([UNO], tmp_path, mirror=srv.url, manifest=subset)
    finally:
        srv.stop()
    assert tree(tmp_path) == []
