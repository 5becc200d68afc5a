"""CINIC-10 and Tiny ImageNet: download of the published archive (served by a local HTTP server, no internet)
and the decoded-image cache."""
import hashlib
import http.server
import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from datamodules.base import DatasetError
from datamodules.folders import CACHE_FOLDER, CINIC10, TinyImageNet
from datamodules.tiny_datasets import (class_value, make_cinic10, make_cinic10_archive, make_tiny_imagenet,
                            make_tiny_imagenet_archive)

RAW = dict(normalize=False, random_crop=False, hflip=False)
SERVER_LIFETIME = 60.0  # seconds: the server stops by itself even if a test hangs


@pytest.fixture
def serve(tmp_path):
    """``serve(folder) -> base URL`` of a HTTP server on 127.0.0.1 for ``folder``; stopped after the test."""
    servers = []

    def start(folder: Path) -> str:
        handler = lambda *a, **kw: http.server.SimpleHTTPRequestHandler(*a, directory=str(folder), **kw)  # noqa: E731
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        threading.Timer(SERVER_LIFETIME, server.shutdown).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def online(monkeypatch):
    monkeypatch.delenv("ATTENTION_LIGHTNING_OFFLINE", raising=False)


@pytest.mark.parametrize("cls, make, folder", [
    (CINIC10, lambda p: make_cinic10_archive(p, per_class=2), "cinic10"),
    (TinyImageNet, lambda p: make_tiny_imagenet_archive(p, n_classes=3, per_class=2), "data"),
])
def test_download_fetches_checks_and_unpacks_the_archive_in_place(tmp_path, monkeypatch, serve, cls, make, folder):
    online(monkeypatch)
    archive = make(tmp_path / "www")
    url = serve(tmp_path / "www")
    monkeypatch.setattr(cls, "archive_url", f"{url}/{archive.name}")
    monkeypatch.setattr(cls, "archive_md5", md5(archive))
    data_dir = tmp_path / folder
    dm = cls(data_dir=str(data_dir), cache=False, **RAW)  # nothing there yet: no error while it may download
    dm.prepare_data()
    assert dm.download_failure is None
    assert not dm.missing() and not (data_dir / archive.name).exists()  # unpacked in place, archive removed
    assert not list(data_dir.glob(".*partial"))
    dm.setup()
    x, y = dm.test_set[0]
    assert abs(int(round(float(x[0].mean()) * 255)) - class_value(y)) <= 3  # image and label still paired
    assert len(dm.test_set) > 0 and len(dm.train_set) > 0
    again = cls(data_dir=str(data_dir), cache=False)
    again.prepare_data()  # nothing missing: no request (the server's file is gone)
    (tmp_path / "www" / archive.name).unlink()
    again.setup()


def test_archive_with_the_wrong_checksum_is_refused(tmp_path, monkeypatch, serve):
    online(monkeypatch)
    archive = make_cinic10_archive(tmp_path / "www")
    monkeypatch.setattr(CINIC10, "archive_url", f"{serve(tmp_path / 'www')}/{archive.name}")
    monkeypatch.setattr(CINIC10, "archive_md5", "0" * 32)
    dm = CINIC10(data_dir=str(tmp_path / "cinic10"))
    dm.prepare_data()
    assert not (tmp_path / "cinic10" / "train").exists() and not (tmp_path / "cinic10" / archive.name).exists()
    with pytest.raises(DatasetError, match=r"CINIC-10.tar.gz could not be downloaded .*does not have the published "
                                           r"md5 0{32}.*fetch it by hand from https://datashare.ed.ac.uk"):
        dm.setup()
    # --checksum=false takes the archive as it is
    CINIC10(data_dir=str(tmp_path / "cinic10"), checksum=False).prepare_data()
    assert (tmp_path / "cinic10" / "valid" / "cat").is_dir()


def test_unreachable_server_fails_fast_with_one_line_naming_archive_and_page(tmp_path, monkeypatch, serve):
    online(monkeypatch)
    url = serve(tmp_path)  # a port that answers 404 for the archive
    monkeypatch.setattr(TinyImageNet, "archive_url", f"{url}/tiny-imagenet-200.zip")
    dm = TinyImageNet(data_dir=str(tmp_path / "data"))
    t0 = time.perf_counter()
    dm.prepare_data()
    assert time.perf_counter() - t0 < 5
    with pytest.raises(DatasetError) as e:
        dm.setup()
    msg = str(e.value)
    assert "\n" not in msg
    assert "tiny-imagenet-200.zip could not be downloaded from http://127.0.0.1" in msg
    assert "fetch it by hand from http://cs231n.stanford.edu/tiny-imagenet-200.zip" in msg


def test_offline_or_no_download_fails_at_construction(tmp_path, monkeypatch):
    with pytest.raises(DatasetError, match=r"cinic10/train does not exist and ATTENTION_LIGHTNING_OFFLINE is set\. "
                                           r"CINIC-10 is expected as .*datashare.ed.ac.uk"):
        CINIC10(data_dir=str(tmp_path / "cinic10"))
    online(monkeypatch)
    with pytest.raises(DatasetError, match=r"tiny-imagenet-200/wnids.txt does not exist and --download=false"):
        TinyImageNet(data_dir=str(tmp_path), download=False)


# ------------------------------------------------------------------ the decoded-image cache

def test_cache_packs_each_split_once_and_matches_the_files(tmp_path):
    root = make_cinic10(tmp_path, per_class=2)
    plain = CINIC10(str(root), cache=False, **RAW)
    plain.setup()
    cached = CINIC10(str(root), **RAW)
    cached.setup()
    folder = root / CACHE_FOLDER
    assert sorted(p.name for p in folder.iterdir()) == ["test.json", "test.npy", "train.json", "train.npy",
                                                        "valid.json", "valid.npy"]
    assert np.load(folder / "train.npy").shape == (20, 3, 32, 32)  # channels first
    for a, b in ((plain.train_set, cached.train_set), (plain.val_set, cached.val_set), (plain.test_set, cached.test_set)):
        assert a.indices.tolist() == b.indices.tolist()
        xa, ya = zip(*a.__getitems__(list(range(len(a)))))
        xb, yb = zip(*b.__getitems__(list(range(len(b)))))
        assert ya == yb and torch.equal(torch.stack(xa), torch.stack(xb))
    # a second run maps the packed file instead of decoding
    stamp = (folder / "train.npy").stat().st_mtime_ns
    reuse = CINIC10(str(root), **RAW)
    reuse.setup()
    assert isinstance(reuse.train_set.source.images, np.memmap)
    assert (folder / "train.npy").stat().st_mtime_ns == stamp
    assert json.loads((folder / "train.json").read_text())["shape"] == [20, 3, 32, 32]
    # workers read the mapped file too
    reuse.num_workers = 1
    xb, yb = next(iter(reuse.test_dataloader()))
    assert xb.shape == (20, 3, 32, 32) and sorted(yb.tolist()) == sorted(list(range(10)) * 2)



def test_a_channels_last_cache_of_an_earlier_version_is_packed_again(tmp_path):
    """Caches were (N, H, W, 3) before they became channels first: such a file, with its manifest, is not read
    as if it were (N, 3, H, W) but packed again."""
    root = make_cinic10(tmp_path, per_class=1)
    CINIC10(str(root), **RAW).setup()
    folder = root / CACHE_FOLDER
    for split in ("train", "valid", "test"):
        chw = np.load(folder / f"{split}.npy")  # (N, 3, H, W)
        np.save(folder / f"{split}.npy", np.ascontiguousarray(chw.transpose(0, 2, 3, 1)))  # the old layout
        manifest = json.loads((folder / f"{split}.json").read_text())
        manifest["shape"] = [manifest["shape"][i] for i in (0, 2, 3, 1)]
        (folder / f"{split}.json").write_text(json.dumps(manifest))
    dm = CINIC10(str(root), **RAW)
    dm.setup()
    assert dm.test_set.source.images.shape[1] == 3 and np.load(folder / "test.npy").shape[1] == 3
    plain = CINIC10(str(root), cache=False, **RAW)
    plain.setup()
    n = len(plain.test_set)
    assert torch.equal(plain.test_set.__getitems__(list(range(n))).images, dm.test_set.__getitems__(list(range(n))).images)

def test_a_changed_or_added_file_invalidates_the_cache(tmp_path):
    root = make_cinic10(tmp_path, per_class=1)
    CINIC10(str(root), **RAW).setup()
    victim = root / "test" / "cat" / "cifar10-test-0.png"
    img = np.zeros((32, 32, 3), np.uint8)
    img[..., 1] = 200
    Image.fromarray(img).save(victim)
    os.utime(victim, ns=(time.time_ns(), time.time_ns() + 10**9))  # a newer file, even on coarse clocks
    dm = CINIC10(str(root), **RAW)
    dm.setup()
    k = dm.test_set.source.labels.tolist().index(3)  # the only cat
    assert int(dm.test_set.source.batch(np.array([k]))[0, 1, 0, 0]) == 200  # the new pixels, not the packed ones
    Image.fromarray(img).save(root / "train" / "dog" / "added.png")
    grown = CINIC10(str(root), **RAW)
    grown.setup()
    assert len(grown.train_set) == 11 and grown.train_set.source.images.shape[0] == 11


def test_cache_can_live_elsewhere_and_corrupt_files_fail_while_packing(tmp_path):
    data_dir = make_tiny_imagenet(tmp_path, n_classes=2, per_class=2)
    dm = TinyImageNet(str(data_dir), val_fraction=0.25, cache_dir=str(tmp_path / "cache"))
    dm.setup()
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["train.json", "train.npy", "val.json", "val.npy"]
    assert not (data_dir / "tiny-imagenet-200" / CACHE_FOLDER).exists()
    assert dm.facts().provenance["cache"] == str((tmp_path / "cache").resolve())
    bad = data_dir / "tiny-imagenet-200" / "train" / "n01629819" / "images" / "n01629819_1.JPEG"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(DatasetError, match=rf"corrupt image file {bad}"):
        TinyImageNet(str(data_dir), val_fraction=0.25, cache_dir=str(tmp_path / "cache")).setup()
    assert not list((tmp_path / "cache").glob(".*"))  # no half-written file left behind
