#!/usr/bin/env python3
"""Pack directories into an OCI image-layout tar (one layer per directory), deterministically.

Used by hack/bench/run to make the pause, busybox and multi-layer images that both runtimes import,
so both run byte-identical images. Layers are tarred with uid/gid 0 and mtime 0 in sorted order.

usage: mkimage.py --ref REF --out FILE [--entrypoint JSON] [--cmd JSON] [--gzip] --layer DIR...
"""
import argparse
import gzip
import hashlib
import io
import json
import os
import platform
import tarfile

ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer_tar(root: str) -> bytes:
    """The tree under root as a tar whose bytes do not depend on when or by whom it was made."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in sorted(dirnames) + sorted(filenames):
                path = os.path.join(dirpath, name)
                info = tar.gettarinfo(path, arcname=os.path.relpath(path, root))
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                info.mtime = 0
                if info.isreg():
                    with open(path, "rb") as f:
                        tar.addfile(info, f)
                else:
                    tar.addfile(info)
    return buf.getvalue()


def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ref", required=True, help="full image name, e.g. localhost/bench/pause:1")
    p.add_argument("--out", required=True)
    p.add_argument("--entrypoint", default="null")
    p.add_argument("--cmd", default="null")
    p.add_argument("--gzip", action="store_true", help="gzip the layers (as registries serve them)")
    p.add_argument("--layer", action="append", required=True)
    a = p.parse_args()

    blobs, layers, diff_ids = [], [], []
    for root in a.layer:
        raw = layer_tar(root)
        diff_ids.append(digest(raw))
        blob = gzip.compress(raw, mtime=0) if a.gzip else raw
        media = "application/vnd.oci.image.layer.v1.tar" + ("+gzip" if a.gzip else "")
        layers.append({"mediaType": media, "digest": digest(blob), "size": len(blob)})
        blobs.append(blob)
    config = {
        "architecture": ARCH,
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created_by": "crius hack/bench/mkimage.py"} for _ in diff_ids],
    }
    for key, value in (("Entrypoint", a.entrypoint), ("Cmd", a.cmd)):
        if json.loads(value) is not None:
            config["config"][key] = json.loads(value)
    config_bytes = json.dumps(config, separators=(",", ":")).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": digest(config_bytes),
            "size": len(config_bytes),
        },
        "layers": layers,
    }
    manifest_bytes = json.dumps(manifest, separators=(",", ":")).encode()
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": digest(manifest_bytes),
                "size": len(manifest_bytes),
                # Both names: containerd's full-name annotation and the OCI ref.name.
                "annotations": {
                    "io.containerd.image.name": a.ref,
                    "org.opencontainers.image.ref.name": a.ref,
                },
            }
        ],
    }
    tmp = a.out + ".tmp"
    with tarfile.open(tmp, mode="w", format=tarfile.PAX_FORMAT) as tar:
        add(tar, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        add(tar, "index.json", json.dumps(index, separators=(",", ":")).encode())
        for blob in [config_bytes, manifest_bytes] + blobs:
            add(tar, "blobs/sha256/" + digest(blob)[len("sha256:"):], blob)
    os.replace(tmp, a.out)


if __name__ == "__main__":
    main()
