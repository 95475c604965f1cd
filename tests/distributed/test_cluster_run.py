"""``restore ... --ray`` on a real two-node cluster: the local command's bytes, report and resume, on both nodes."""

from __future__ import annotations

import re

import pytest
from cluster_helpers import bounded, local_cluster, moto_server, outputs, run_cli

from lib_codeformer.storage.images import READABLE_FORMATS

pytest.importorskip("ray")


@pytest.fixture(scope="module")
def cluster():
    with local_cluster() as running:
        yield running


def failures(stderr: str) -> list[str]:
    return sorted(line for line in stderr.splitlines() if line.startswith("failed: "))


def summary(stdout: str) -> str:
    return re.search(r"^(\d+ images written, .*) -> ", stdout, re.MULTILINE).group(1)


def test_same_bytes_report_and_exit_status_as_locally_on_both_nodes(
    cluster, archive, local_reference, small_weights_file, tmp_path
):
    local_out, local = local_reference
    out = tmp_path / "out"
    common = (str(archive), "-r", "--output", str(out), "--weights", str(small_weights_file), "--ray", cluster.address)
    ray = run_cli(*common)
    assert ray.returncode == 1, ray.stderr  # the corrupt file, as locally
    assert outputs(out) == outputs(local_out)  # every result, byte for byte
    assert len(outputs(out)) == 28
    assert failures(ray.stderr) == failures(local.stderr) and "broken.png" in failures(ray.stderr)[0]
    assert summary(ray.stdout) == summary(local.stdout) == "28 images written, 4 faces restored, 0 skipped, 1 failed"
    assert re.search(r"^ray: 29 images on 2 nodes \(\d+ \+ \d+\)", ray.stderr, re.MULTILINE), ray.stderr
    assert not [path for path in out.rglob("*") if path.name.endswith(".part")]

    before = {path: (path.stat().st_mtime_ns, path.stat().st_ino) for path in out.rglob("*") if path.is_file()}
    again = run_cli(*common, "--skip-existing")
    assert again.returncode == 1
    assert summary(again.stdout) == "0 images written, 0 faces restored, 28 skipped, 1 failed"
    # Only the file that failed went to the cluster again; nothing written was touched.
    assert re.search(r"^ray: 1 images on 1 nodes", again.stderr, re.MULTILINE), again.stderr
    assert {path: (path.stat().st_mtime_ns, path.stat().st_ino) for path in out.rglob("*") if path.is_file()} == before


def test_object_storage_in_and_out_through_the_s3_client(cluster, archive, local_reference, small_weights_file):
    """Input and output on an S3 server (moto's, on 127.0.0.1) through pyarrow's real S3 client; an object that
    exists is never replaced without --overwrite."""
    boto3 = pytest.importorskip("boto3")
    local_out, _ = local_reference
    with moto_server() as endpoint:
        s3 = boto3.client("s3", endpoint_url=endpoint)
        s3.create_bucket(Bucket="photos")
        for path in sorted(archive.rglob("*")):
            if path.is_file():
                s3.upload_file(str(path), "photos", f"archive/{path.relative_to(archive).as_posix()}")
        s3.put_object(Bucket="photos", Key="restored/people/astronaut.png", Body=b"an older result")
        common = ("s3://photos/archive", "-r", "--output", "s3://photos/restored", "--weights", str(small_weights_file))
        ray = run_cli(*common, "--ray", cluster.address, env={"AWS_ENDPOINT_URL": endpoint})
        listed = s3.list_objects_v2(Bucket="photos", Prefix="restored/")["Contents"]
        stored = {item["Key"].removeprefix("restored/"): _body(s3, item["Key"]) for item in listed}
    assert ray.returncode == 1, ray.stderr
    assert stored == {**outputs(local_out), "people/astronaut.png": b"an older result"}  # no temporary keys either
    assert failures(ray.stderr) == [
        "failed: s3://photos/archive/people/astronaut.png: photos/restored/people/astronaut.png exists "
        "(--skip-existing to keep it, --overwrite to replace it)",
        f"failed: s3://photos/archive/scenes/broken.png: not a readable image (formats read: {', '.join(READABLE_FORMATS)})",
    ]
    assert "27 images written, 3 faces restored, 0 skipped, 2 failed -> s3://photos/restored" in ray.stdout


def _body(s3, key: str) -> bytes:
    return s3.get_object(Bucket="photos", Key=key)["Body"].read()


def test_restore_images_is_a_step_of_a_ray_data_pipeline(cluster, archive, local_reference, small_weights_file):
    """Read with Ray Data, restore, then the user's own next step: the same bytes as the command line writes."""
    import ray

    from lib_codeformer.distributed import restore_images

    local_out, _ = local_reference
    ray.init(address=cluster.address)
    try:
        files = ray.data.read_binary_files([str(archive / "people"), str(archive / "scenes" / "broken.png")], include_paths=True)
        restored = restore_images(files, weights=small_weights_file, detector="yunet", fidelity=0.5)
        named = restored.map(lambda row: {**row, "name": row["path"].rsplit("/", 1)[-1]})
        rows = bounded(named.take_all)
    finally:
        ray.shutdown()
    by_name = {row["name"]: row for row in rows}
    assert sorted(by_name) == ["astronaut.png", "broken.png", "deep.png", "hopper.webp", "rotated.jpg"]
    for name in ("astronaut.png", "deep.png", "hopper.webp", "rotated.jpg"):
        assert by_name[name]["bytes"] == (local_out / "people" / name).read_bytes()
        assert by_name[name]["faces"] == 1 and by_name[name]["error"] is None
    assert by_name["broken.png"]["bytes"] is None and "not a readable image" in by_name["broken.png"]["error"]


def test_more_actors_than_the_cluster_holds_is_a_usage_error(cluster, archive, tmp_path, capsys):
    """Ray Data would wait for ever for a pool it cannot place; the command says so instead."""
    from lib_codeformer.frontends import cli

    arguments = ["restore", str(archive / "people"), "--output", str(tmp_path / "out"), "--quiet"]
    status = cli.main([*arguments, "--ray", cluster.address, "--ray-actors", "3"])
    assert status == 2
    assert "--ray-actors 3: the Ray cluster holds 2 1-CPU actors at once" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
