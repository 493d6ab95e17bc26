"""moto's standalone S3 server in its own process on a free loopback port.

moto answers every ListMultipartUploads with the same ``Initiated`` date (2010-11-10), which
would make every upload look a day old to ``sweep_stale``; the server is therefore started
through a small wrapper that stamps each upload with its real start time (what S3, MinIO and
Ceph report), and leaves everything else as moto ships it.

``running_s3(auth=True)`` enforces signatures: it creates an IAM user with full access, hands out
its keys, then switches moto's request authentication on (``/moto-api/reset-auth``).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3  # type: ignore[import-untyped]

from . import free_port, stop_process, wait_for

FAKE_INITIATED = "2010-11-10T20:48:33.000Z"

# Run with ``python -c``: patch moto's hard-coded Initiated date, then serve.
_WRAPPER = f"""
import datetime, re, sys
from moto.s3 import models, responses
from moto.server import main

init = models.FakeMultipart.__init__
def stamped(self, *args, **kwargs):
    init(self, *args, **kwargs)
    self.initiated = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
models.FakeMultipart.__init__ = stamped

listing = responses.S3Response.list_multipart_uploads
def real_dates(self):
    status, headers, body = listing(self)
    uploads = self.backend.list_multipart_uploads(self.bucket_name)
    text = body.decode() if isinstance(body, bytes) else body
    def fix(match):
        upload = uploads.get(re.search("<UploadId>(.*?)</UploadId>", match.group(0)).group(1))
        return match.group(0).replace({FAKE_INITIATED!r}, upload.initiated) if upload else match.group(0)
    return status, headers, re.sub("<Upload>.*?</Upload>", fix, text, flags=re.S)
responses.S3Response.list_multipart_uploads = real_dates
assert {FAKE_INITIATED!r} in __import__("inspect").getsource(listing), "moto changed: review the patch"
main(sys.argv[1:])
"""


@dataclass
class S3Server:
    port: int
    process: subprocess.Popen[bytes]
    log_path: str
    host: str = "127.0.0.1"
    access_key: str = "testing-access-key"
    secret_key: str = "testing-secret-key"
    region: str = "us-east-1"

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def options(self, bucket: str, **extra: Any) -> dict[str, Any]:
        """Options for an ``s3`` storage on this server."""
        return {
            "bucket": bucket,
            "endpoint_url": self.endpoint_url,
            "region": self.region,
            "access_key": self.access_key,
            "secret_key": self.secret_key,
            "addressing_style": "path",
            **extra,
        }

    def client(self, **kwargs: Any) -> Any:
        """A plain boto3 client straight to the server (not through any proxy)."""
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            **kwargs,
        )

    def alive(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.endpoint_url}/moto-api/", timeout=2):
                return True
        except OSError:
            return self.process.poll() is not None  # stop waiting: it died


def _enable_auth(server: S3Server) -> None:
    iam = boto3.client(
        "iam",
        endpoint_url=server.endpoint_url,
        region_name=server.region,
        aws_access_key_id="setup",
        aws_secret_access_key="setup",
    )
    iam.create_user(UserName="backupsite")
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
    iam.put_user_policy(UserName="backupsite", PolicyName="all", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName="backupsite")["AccessKey"]
    server.access_key, server.secret_key = key["AccessKeyId"], key["SecretAccessKey"]
    request = urllib.request.Request(
        f"{server.endpoint_url}/moto-api/reset-auth", data=b"0", headers={"Content-Type": "text/plain"}
    )
    with urllib.request.urlopen(request, timeout=10):
        pass


@contextlib.contextmanager
def running_s3(auth: bool = False) -> Iterator[S3Server]:
    port = free_port()
    log = tempfile.NamedTemporaryFile(prefix="moto-s3-", suffix=".log", delete=False)  # noqa: SIM115
    env = {**os.environ, "MOTO_PORT": str(port)}
    env.pop("INITIAL_NO_AUTH_ACTION_COUNT", None)
    process = subprocess.Popen(
        [sys.executable, "-c", _WRAPPER, "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
    )
    server = S3Server(port=port, process=process, log_path=log.name)
    try:
        wait_for(server.alive, "moto's S3 server", timeout=60)
        if process.poll() is not None:
            with open(log.name) as output:
                raise RuntimeError(f"moto's S3 server exited: {output.read()[-2000:]}")
        if auth:
            _enable_auth(server)
        yield server
    finally:
        stop_process(process)
        log.close()
        os.unlink(log.name)
