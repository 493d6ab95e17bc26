"""moto's standalone S3 server in its own process on a free loopback port.

moto answers every ListMultipartUploads with the same ``Initiated`` date (2010-11-10), which
would make every upload look a day old to ``sweep_stale``; the server is therefore started
through a small wrapper that stamps each upload with its real start time (what S3, MinIO and
Ceph report), and leaves everything else as moto ships it.

``running_s3(auth=True)`` enforces signatures: it creates an IAM user with full access, hands out
its keys, then switches moto's request authentication on (``/moto-api/reset-auth``).

moto (5.2) checks only the ``Authorization`` header: with authentication on it answers any
presigned URL (SigV4 in the query string) with a 500, and with it off it serves one without
looking at it. The wrapper therefore also checks presigned requests when authentication is on,
with :func:`presigned_refusal`: AWS's documented query-string algorithm written out here
(independent of botocore, which signs), pinned by AWS's published example in
``tests/test_signed_urls.py``. No S3 server that checks SigV4 query signatures installs from
the registries this project reaches (s3rver 3.7 leaves "V4 signature calculation unimplemented";
Debian 12's rclone 1.60 has no ``serve s3``; radosgw needs a Ceph cluster).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import subprocess
import sys
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
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
"""

# With moto's authentication on, presigned requests (no Authorization header, X-Amz-Signature in
# the query) are checked by presigned_refusal and anonymous ones refused; the rest goes to moto.
_PRESIGNED = """
import datetime
from moto import settings
from moto.core.authorization import ActionAuthenticatorMixin
from moto.iam.access_control import CreateAccessKeyFailure, create_access_key
from moto.s3 import exceptions
from tests.servers.s3 import presigned_refusal

authenticate = ActionAuthenticatorMixin._authenticate_and_authorize_action
REFUSALS = {
    "AccessDenied": exceptions.S3AccessDeniedError,
    "InvalidAccessKeyId": exceptions.S3InvalidAccessKeyIdError,
    "SignatureDoesNotMatch": exceptions.S3SignatureDoesNotMatchError,
}

def query_signed(self, iam_request_cls, resource="*"):
    enforcing = ActionAuthenticatorMixin.request_count >= settings.INITIAL_NO_AUTH_ACTION_COUNT
    if not enforcing or "Authorization" in self.headers:
        return authenticate(self, iam_request_cls, resource)
    if "X-Amz-Signature" not in self.querystring:
        raise exceptions.S3AccessDeniedError()  # anonymous (moto would fail with a 500)
    def secret_of(key_id):
        try:
            return create_access_key(self.current_account, "aws", key_id, {})._secret_access_key
        except CreateAccessKeyFailure:
            return None
    refusal = presigned_refusal(
        self.method, self.raw_path, self.parsed_url.query, self.headers, secret_of, datetime.datetime.now(datetime.UTC)
    )
    if refusal:
        raise REFUSALS[refusal]()

ActionAuthenticatorMixin._authenticate_and_authorize_action = query_signed
main(sys.argv[1:])
"""
REPO = Path(__file__).resolve().parents[2]


def _uri_encode(text: str, safe: str = "-_.~") -> str:
    return urllib.parse.quote(text, safe=safe)


def presigned_refusal(
    method: str,
    raw_path: str,
    raw_query: str,
    headers: Mapping[str, str],
    secret_of: Callable[[str], str | None],
    now: datetime,
) -> str | None:
    """Why S3 refuses a presigned request (``AccessDenied`` when malformed or expired,
    ``InvalidAccessKeyId``, ``SignatureDoesNotMatch``), or None when it is valid: SigV4 with
    the signature in the query ("Authenticating Requests: Using Query Parameters")."""
    params = urllib.parse.parse_qsl(raw_query, keep_blank_values=True)
    values = dict(params)
    try:
        stamp, signed_headers = values["X-Amz-Date"], values["X-Amz-SignedHeaders"]
        key_id, day, region, service, terminal = values["X-Amz-Credential"].split("/")
        expires = int(values["X-Amz-Expires"])
        signed_at = datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        signature = values["X-Amz-Signature"]
    except (KeyError, ValueError):
        return "AccessDenied"
    if (
        values.get("X-Amz-Algorithm") != "AWS4-HMAC-SHA256"
        or terminal != "aws4_request"
        or day != stamp[:8]
        or not 1 <= expires <= 7 * 24 * 3600
    ):
        return "AccessDenied"
    secret = secret_of(key_id)
    if secret is None:
        return "InvalidAccessKeyId"
    lowered = {name.lower(): value for name, value in headers.items()}
    canonical_headers = "".join(
        f"{name}:{' '.join(lowered.get(name, '').split())}\n" for name in signed_headers.split(";")
    )
    query = "&".join(
        f"{name}={value}"
        for name, value in sorted(
            (_uri_encode(name), _uri_encode(value)) for name, value in params if name != "X-Amz-Signature"
        )
    )
    canonical = "\n".join(
        [
            method,
            _uri_encode(urllib.parse.unquote(raw_path), safe="/-_.~"),
            query,
            canonical_headers,
            signed_headers,
            values.get("X-Amz-Content-Sha256", "UNSIGNED-PAYLOAD"),
        ]
    )
    scope = f"{day}/{region}/{service}/aws4_request"
    to_sign = f"AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    key = f"AWS4{secret}".encode()
    for part in (day, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    if not hmac.compare_digest(hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest(), signature):
        return "SignatureDoesNotMatch"
    if now > signed_at + timedelta(seconds=expires):
        return "AccessDenied"  # S3's message: "Request has expired"
    return None


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
        [sys.executable, "-c", _WRAPPER + _PRESIGNED, "-H", "127.0.0.1", "-p", str(port)],
        cwd=REPO,  # the wrapper imports presigned_refusal from this module
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
