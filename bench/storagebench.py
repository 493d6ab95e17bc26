"""Storage upload benchmark: our storages against each kind's plain client, on loopback servers.

    .venv/bin/python bench/run.py --engines storages [--storages local,s3,sftp,ftp,gcs,azure]
        [--storage-mib 1024] [--runs 3] [--warmup 1]

For each kind, one file of incompressible bytes (``--storage-mib``, made once under
``bench/work/storages/``) is uploaded to the test suite's loopback server of that kind
(``tests/servers``) by two child processes, one after the other:

* **raw**: the plain client (boto3 ``upload_fileobj``, paramiko ``SFTPClient.putfo``, ftplib
  ``FTP_TLS.storbinary``, google-cloud-storage ``Blob.upload_from_file``, azure-storage-blob
  ``BlobClient.upload_blob``, ``shutil.copyfileobj`` + fsync for local), library defaults;
* **ours**: ``backups.storages.build_storage`` with the test plugins' options, the file streamed
  through ``open_writer()`` in 1 MiB chunks, ``commit()``, then ``confirm(path, size, sha256)``
  (timed apart: it re-reads the object).

Then **fan-out**: one child streams the file once into local + s3 + sftp at the same time, a
``backups.streaming.pipeline.BackgroundWriter`` per destination as ``backups.runs.destinations.FanOut`` does, commits
each, then confirms them in parallel as a backup does.

Every child times itself (connect to commit, clock started after its imports) and reports its
own VmHWM; the parent also records each child's wall time and ``ru_maxrss`` (``measure.run_child``).
The servers run in a separate ``serve`` child so that this process (whose pages every child's
``ru_maxrss`` starts from) never loads boto3 or the SDKs. Each child deletes what it uploaded
before it exits (untimed), so moto and the emulators do not accumulate gigabytes.

Internal modes: ``storagebench.py serve KINDS WORKDIR`` and ``storagebench.py child SPEC.json``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024
CHUNK = MIB  # what ours is fed per write(), as a backup's pipeline does
KINDS = ("local", "s3", "sftp", "ftp", "gcs", "azure")
FANOUT_KINDS = ("local", "s3", "sftp")
BUCKET = "bench"

# What each side runs, for the report (the code below is the authority).
RAW_CALLS = {
    "local": "with open(src, 'rb') as f, open(dst, 'wb') as out: shutil.copyfileobj(f, out); "
    "out.flush(); os.fsync(out.fileno())",
    "s3": "boto3.client('s3', endpoint_url=..., config=Config(s3={'addressing_style': 'path'}))"
    ".upload_fileobj(f, bucket, key)  # TransferConfig defaults: 8 MiB parts, 10 threads",
    "sftp": "SSHClient (known_hosts, RejectPolicy, key auth).open_sftp().putfo(f, path)  "
    "# 32 KiB pipelined writes, default 2 MiB window, then stat",
    "ftp": "FTP_TLS(context=ssl.create_default_context(cafile=ca)); auth(); login(); prot_p(); "
    "storbinary('STOR ' + path, f)  # 8 KiB blocks",
    "gcs": "storage.Client(credentials=service-account file, api_endpoint=...).bucket(b).blob(n)"
    ".upload_from_file(f, size=size)  # resumable, 100 MiB chunks",
    "azure": "BlobServiceClient(endpoint, account key).get_blob_client(c, n).upload_blob(f, length=size)"
    "  # 4 MiB blocks, max_concurrency 1",
}
OURS_CALL = (
    "s = build_storage(kind, kind, options); w = s.open_writer(path); "
    "w.write(chunk) for each 1 MiB chunk; w.commit()  ...then, timed apart: s.confirm(path, size, sha256)"
)


class StorageBenchError(Exception):
    """A child or a server failed."""


# ---------------------------------------------------------------------------------------------
# The parent: source file, servers, rounds
# ---------------------------------------------------------------------------------------------


@dataclass
class Run:
    """One child: what it timed itself and what the parent measured of it."""

    label: str  # "raw-s3", "ours-s3", "fanout"
    seconds: float  # connect .. upload complete (ours: commit returned), in the child
    confirm_seconds: float  # ours: storage.confirm(); fan-out: every confirm, in parallel
    wall_seconds: float  # launch .. exit, measured by the parent (interpreter start and imports)
    maxrss_kib: int  # ru_maxrss from os.wait4 (floor: this process's pages at fork)
    hwm_kib: int  # the child's own VmHWM at its end (confirm included)
    hwm_upload_kib: int  # its VmHWM right after the upload (before confirm)
    ready_kib: int  # its VmRSS after imports, when its clock started
    extra: dict[str, float] = field(default_factory=dict)  # fan-out: per-destination done times
    settings: dict[str, Any] = field(default_factory=dict)  # ours: upload settings in effect


@dataclass
class StorageResult:
    kinds: list[str]
    size_bytes: int
    sha256: str
    warmup_bytes: int
    runs: dict[str, list[Run]]  # label -> timed runs
    warmups: dict[str, list[Run]]
    versions: dict[str, str]
    options: dict[str, dict[str, Any]]  # kind -> our storage's options (secrets masked)
    fanout: list[str]
    seconds: float = 0.0
    load: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    child_argv: str = ""
    # kind -> the upload settings our storage used, defaults included (part size, concurrency...)
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)


def source_file(work: Path, mib: int) -> tuple[Path, str]:
    """``mib`` MiB of os.urandom bytes, made once; (path, sha256 hex)."""
    work.mkdir(parents=True, exist_ok=True)
    path, sidecar = work / f"source-{mib}.bin", work / f"source-{mib}.sha256"
    size = mib * MIB
    if path.exists() and sidecar.exists() and path.stat().st_size == size:
        recorded = sidecar.read_text().split()
        if len(recorded) == 2 and recorded[1] == str(path.stat().st_mtime_ns):
            return path, recorded[0]
    print(f"writing {mib} MiB of random bytes to {path.relative_to(ROOT)} ...", flush=True)
    digest = hashlib.sha256()
    with open(path, "wb") as out:
        for _ in range(mib):
            block = os.urandom(MIB)
            digest.update(block)
            out.write(block)
    sidecar.write_text(f"{digest.hexdigest()} {path.stat().st_mtime_ns}\n")
    return path, digest.hexdigest()


class Servers:
    """The loopback servers, held by a ``serve`` child until :meth:`stop`."""

    def __init__(self, kinds: list[str], work: Path, logs: Path) -> None:
        self.log = logs / "storages-servers.log"
        argv = [sys.executable, str(Path(__file__).resolve()), "serve", ",".join(kinds), str(work)]
        self._log = open(self.log, "wb")  # noqa: SIM115  (closed in stop)
        self.process = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, cwd=ROOT, env=_env(work)
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            self.stop()
            tail = self.log.read_text(errors="replace")[-3000:]
            raise StorageBenchError(f"the storage servers did not start:\n{tail}")
        self.info: dict[str, Any] = json.loads(line)

    def stop(self) -> None:
        if self.process.stdin is not None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log.close()


def _env(work: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("DATABASE_URL", None)
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "BACKUPSITE_HOME": str(work / "home"),
            "PYTHONPATH": str(ROOT),
        }
    )
    return env


def _median(values: list[float]) -> float:
    return float(statistics.median(values))


def _masked(options: dict[str, Any]) -> dict[str, Any]:
    secret = ("password", "secret_key", "access_key", "account_key")
    return {k: ("***" if k in secret else v) for k, v in options.items()}


@dataclass(frozen=True)
class Source:
    path: Path
    sha256: str
    size: int


class Child:
    def __init__(self, work: Path, logs: Path) -> None:
        self.work, self.logs = work, logs
        self.spec_path = work / "spec.json"

    def run(self, label: str, spec: dict[str, Any], source: Source) -> Run:
        from measure import run_child  # the bench's child runner (os.wait4 + VmHWM polling)

        spec = {**spec, "source": str(source.path), "sha256": source.sha256, "size": source.size}
        spec["name"] = f"{label}-{uuid.uuid4().hex[:8]}.bin"
        # The options carry the test servers' throwaway credentials: a 0600 file, not argv.
        fd = os.open(self.spec_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(spec, handle)
        out, err = self.logs / f"storages-{label}.stdout", self.logs / f"storages-{label}.stderr"
        argv = [sys.executable, str(Path(__file__).resolve()), "child", str(self.spec_path)]
        with open(out, "wb") as stdout, open(err, "wb") as stderr:
            child = run_child(argv, stdout=stdout, stderr=stderr, env=_env(self.work), cwd=ROOT)
        if child.returncode != 0:
            tail = err.read_text(errors="replace")[-3000:]
            raise StorageBenchError(f"{label} exited {child.returncode}:\n{tail}")
        report = json.loads(out.read_text().strip().splitlines()[-1])
        return Run(
            label=label,
            seconds=report["seconds"],
            confirm_seconds=report.get("confirm_seconds", 0.0),
            wall_seconds=child.seconds,
            maxrss_kib=child.maxrss_kib,
            hwm_kib=report["hwm_kib"],
            hwm_upload_kib=report["hwm_upload_kib"],
            ready_kib=report["ready_kib"],
            extra=report.get("extra", {}),
            settings=report.get("settings", {}),
        )


def _show(when: str, run: Run, size: int) -> None:
    confirm = f" + confirm {run.confirm_seconds:6.2f}s" if run.confirm_seconds else " " * 18
    print(
        f"  {when:<12} {run.label:<12} {run.seconds:7.2f}s ({size / MIB / run.seconds:7.1f} MiB/s){confirm}"
        f"  wall {run.wall_seconds:6.2f}s  VmHWM {run.hwm_kib / 1024:6.1f} MiB"
        f" (ready {run.ready_kib / 1024:5.1f})",
        flush=True,
    )


def _versions(kinds: list[str]) -> dict[str, str]:
    from importlib import metadata

    def package(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "?"

    wanted = {"local": [], "s3": ["boto3", "botocore", "moto"], "sftp": ["paramiko"]}
    wanted |= {"ftp": ["pyftpdlib"], "gcs": ["google-cloud-storage", "gcp-storage-emulator"]}
    wanted |= {"azure": ["azure-storage-blob"]}
    versions = {"python": sys.version.split()[0], "Django": package("Django")}
    for kind in kinds:
        versions.update({name: package(name) for name in wanted[kind]})
    if "sftp" in kinds:
        done = subprocess.run(["ssh", "-V"], capture_output=True, text=True, check=False)
        versions["OpenSSH"] = (done.stderr or done.stdout).strip().split(",")[0]
    if "azure" in kinds:
        with contextlib.suppress(OSError, ValueError, KeyError):
            package_json = ROOT / ".venv" / "node" / "node_modules" / "azurite" / "package.json"
            versions["Azurite"] = json.loads(package_json.read_text())["version"]
    return versions


def _cache(path: Path) -> None:
    """Read the file once so every side finds it in the page cache."""
    with open(path, "rb", buffering=0) as handle:
        while handle.read(8 * MIB):
            pass


def measure(
    kinds: list[str], mib: int, runs: int, warmup: int, work: Path, logs: Path, warmup_mib: int = 64
) -> StorageResult:
    started = time.perf_counter()
    load = [" ".join(f"{x:.2f}" for x in os.getloadavg())]
    (work / "home").mkdir(parents=True, exist_ok=True)
    path, sha256 = source_file(work, mib)
    source = Source(path, sha256, path.stat().st_size)
    small = min(mib, warmup_mib)
    warm = source if small == mib else Source(*source_file(work, small), small * MIB)
    _cache(path)
    size = source.size
    fanout = list(FANOUT_KINDS) if all(k in kinds for k in FANOUT_KINDS) else []
    skipped = {} if fanout else {"fan-out": f"needs {', '.join(FANOUT_KINDS)} in --storages"}
    remote = [kind for kind in kinds if kind != "local"]
    print(f"starting loopback servers for {', '.join(remote) or 'no remote kind'} ...", flush=True)
    servers = Servers(kinds, work, logs)
    try:
        child = Child(work, logs)
        options: dict[str, dict[str, Any]] = servers.info["options"]
        raw: dict[str, dict[str, Any]] = servers.info["raw"]
        actions: dict[str, dict[str, Any]] = {}
        for kind in kinds:
            actions[f"raw-{kind}"] = {"side": "raw", "kind": kind, "raw": raw[kind]}
            actions[f"ours-{kind}"] = {"side": "ours", "kind": kind, "options": options[kind]}
        if fanout:
            actions["fanout"] = {"side": "fanout", "destinations": {k: options[k] for k in fanout}}
        warmups: dict[str, list[Run]] = {label: [] for label in actions}
        samples: dict[str, list[Run]] = {label: [] for label in actions}
        for round_ in range(warmup + runs):  # interleaved: drift on the machine hits every side alike
            timed = round_ >= warmup
            when = f"run {round_ - warmup + 1}/{runs}" if timed else f"warm-up {round_ + 1}/{warmup}"
            for label, spec in actions.items():
                result = child.run(label, spec, source if timed else warm)
                (samples if timed else warmups)[label].append(result)
                _show(when, result, source.size if timed else warm.size)
        child.spec_path.unlink(missing_ok=True)
    finally:
        servers.stop()
    load.append(" ".join(f"{x:.2f}" for x in os.getloadavg()))
    return StorageResult(
        kinds=kinds,
        size_bytes=size,
        sha256=sha256,
        warmup_bytes=warm.size,
        runs=samples,
        warmups=warmups,
        versions=_versions(kinds),
        options={kind: _masked(options[kind]) for kind in kinds},
        settings={kind: samples[f"ours-{kind}"][0].settings for kind in kinds if samples[f"ours-{kind}"]},
        fanout=fanout,
        seconds=time.perf_counter() - started,
        load=load,
        skipped=skipped,
        child_argv=".venv/bin/python bench/storagebench.py child bench/work/storages/spec.json",
    )


def save(result: StorageResult, path: Path) -> None:
    path.write_text(json.dumps(asdict(result), indent=2, default=str))


# ---------------------------------------------------------------------------------------------
# The ``serve`` child: the test suite's loopback servers, held until stdin closes
# ---------------------------------------------------------------------------------------------


def serve(kinds: list[str], work: Path) -> None:
    sys.path.insert(0, str(ROOT))
    options: dict[str, dict[str, Any]] = {}
    raw: dict[str, dict[str, Any]] = {}
    with contextlib.ExitStack() as stack:
        if "local" in kinds:
            for side in ("ours", "raw"):
                (work / f"local-{side}").mkdir(parents=True, exist_ok=True)
            options["local"] = {"path": str(work / "local-ours")}
            raw["local"] = {"directory": str(work / "local-raw")}
        if "s3" in kinds:
            from tests.servers.s3 import running_s3

            s3 = stack.enter_context(running_s3())
            s3.client().create_bucket(Bucket=BUCKET)
            options["s3"] = s3.options(BUCKET)  # as tests/plugins/s3.py
            raw["s3"] = {k: options["s3"][k] for k in ("bucket", "endpoint_url", "region")}
            raw["s3"] |= {"access_key": s3.access_key, "secret_key": s3.secret_key}
        if "sftp" in kinds:
            from tests.servers.sshd import running_sshd

            sshd = stack.enter_context(running_sshd())
            known_hosts = str(sshd.known_hosts(sshd.base / "bench_known_hosts"))
            # as tests/plugins/sftp.py: key auth, host key checked against a known_hosts file
            options["sftp"] = sshd.options(
                str(sshd.fresh_dir("ours")), host_key_fingerprint=None, known_hosts=known_hosts
            )
            raw["sftp"] = {
                "host": sshd.host, "port": sshd.port, "user": sshd.user, "known_hosts": known_hosts,
                "private_key": str(sshd.key("client_key")), "root": str(sshd.fresh_dir("raw")),
            }  # fmt: skip
        if "ftp" in kinds:
            from tests.servers.ftp import running_ftp

            ftp = stack.enter_context(running_ftp(tls=True))
            options["ftp"] = ftp.options(root="/ours")  # as tests/plugins/ftp.py: FTPS, the test CA
            raw["ftp"] = {
                "host": ftp.host, "port": ftp.port, "user": ftp.user, "password": ftp.password,
                "ca_file": str(ftp.ca_file), "root": "/raw",
            }  # fmt: skip
        if "gcs" in kinds:
            from tests.servers.gcs import running_gcs

            gcs = stack.enter_context(running_gcs())
            gcs.create_bucket(BUCKET)
            # as tests/plugins/gcs.py, without its 10 s request timeout (a 1 GiB finalize may need more)
            options["gcs"] = {
                "bucket": BUCKET,
                "endpoint_url": gcs.endpoint,
                "credentials_file": str(gcs.credentials_file()),
            }
            raw["gcs"] = dict(options["gcs"])
        if "azure" in kinds:
            from azure.storage.blob import BlobServiceClient

            from tests.servers.azurite import running_azurite

            azurite = stack.enter_context(running_azurite())
            with BlobServiceClient.from_connection_string(azurite.connection_string()) as client:
                client.create_container(BUCKET)
            # as tests/plugins/azure.py, but with the production block size (8 MiB; the tests use
            # 1 MiB so that a small dead writer stages a block) and the default timeout
            options["azure"] = {
                "account_name": azurite.account,
                "account_key": azurite.key,
                "container": BUCKET,
                "endpoint_url": azurite.endpoint,
            }
            raw["azure"] = dict(options["azure"])
        print(json.dumps({"options": options, "raw": raw}), flush=True)
        sys.stdin.read()  # until the parent closes our stdin


# ---------------------------------------------------------------------------------------------
# The measured children
# ---------------------------------------------------------------------------------------------


def _status_kib(field_name: str) -> int:
    with open("/proc/self/status", "rb") as status:
        for line in status:
            if line.startswith(field_name.encode() + b":"):
                return int(line.split()[1])
    return 0


def _raw_local(spec: dict[str, Any], source: IO[bytes]) -> tuple[float, Any]:
    import shutil

    target = Path(spec["raw"]["directory"]) / spec["name"]
    started = time.perf_counter()
    with open(target, "wb") as out:
        shutil.copyfileobj(source, out)
        out.flush()
        os.fsync(out.fileno())
    return time.perf_counter() - started, lambda: target.unlink()


def _raw_s3(spec: dict[str, Any], source: IO[bytes]) -> tuple[float, Any]:
    import boto3  # type: ignore[import-untyped]
    from botocore.config import Config  # type: ignore[import-untyped]

    raw = spec["raw"]
    started = time.perf_counter()
    client = boto3.client(
        "s3",
        endpoint_url=raw["endpoint_url"],
        region_name=raw["region"],
        aws_access_key_id=raw["access_key"],
        aws_secret_access_key=raw["secret_key"],
        config=Config(s3={"addressing_style": "path"}),
    )
    client.upload_fileobj(source, raw["bucket"], spec["name"])
    seconds = time.perf_counter() - started
    return seconds, lambda: client.delete_object(Bucket=raw["bucket"], Key=spec["name"])


def _raw_sftp(spec: dict[str, Any], source: IO[bytes]) -> tuple[float, Any]:
    import paramiko

    raw = spec["raw"]
    started = time.perf_counter()
    client = paramiko.SSHClient()
    client.load_host_keys(raw["known_hosts"])
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(
        raw["host"], port=raw["port"], username=raw["user"], key_filename=raw["private_key"],
        look_for_keys=False, allow_agent=False, timeout=10,
    )  # fmt: skip
    sftp = client.open_sftp()
    with contextlib.suppress(OSError):
        sftp.mkdir(raw["root"])
    remote = f"{raw['root']}/{spec['name']}"
    sftp.putfo(source, remote)
    seconds = time.perf_counter() - started

    def cleanup() -> None:
        sftp.remove(remote)
        client.close()

    return seconds, cleanup


def _raw_ftp(spec: dict[str, Any], source: IO[bytes]) -> tuple[float, Any]:
    import ftplib
    import ssl

    raw = spec["raw"]
    started = time.perf_counter()
    ftp = ftplib.FTP_TLS(context=ssl.create_default_context(cafile=raw["ca_file"]), timeout=10)
    ftp.connect(raw["host"], raw["port"])
    ftp.auth()
    ftp.login(raw["user"], raw["password"])
    ftp.prot_p()
    with contextlib.suppress(ftplib.error_perm):
        ftp.mkd(raw["root"])
    remote = f"{raw['root']}/{spec['name']}"
    ftp.storbinary(f"STOR {remote}", source)
    seconds = time.perf_counter() - started

    def cleanup() -> None:
        ftp.delete(remote)
        ftp.quit()

    return seconds, cleanup


def _raw_gcs(spec: dict[str, Any], source: IO[bytes]) -> tuple[float, Any]:
    from google.cloud import storage  # type: ignore[import-untyped]
    from google.oauth2 import service_account

    raw = spec["raw"]
    started = time.perf_counter()
    credentials = service_account.Credentials.from_service_account_file(
        raw["credentials_file"], scopes=["https://www.googleapis.com/auth/devstorage.read_write"]
    )
    client = storage.Client(
        project=credentials.project_id, credentials=credentials,
        client_options={"api_endpoint": raw["endpoint_url"]},
    )  # fmt: skip
    blob = client.bucket(raw["bucket"]).blob(spec["name"])
    blob.upload_from_file(source, size=spec["size"])
    seconds = time.perf_counter() - started
    return seconds, lambda: blob.delete()


def _raw_azure(spec: dict[str, Any], source: IO[bytes]) -> tuple[float, Any]:
    from azure.storage.blob import BlobServiceClient

    raw = spec["raw"]
    started = time.perf_counter()
    service = BlobServiceClient(
        account_url=raw["endpoint_url"],
        credential={"account_name": raw["account_name"], "account_key": raw["account_key"]},
    )
    blob = service.get_blob_client(raw["container"], spec["name"])
    blob.upload_blob(source, length=spec["size"])
    seconds = time.perf_counter() - started
    return seconds, lambda: blob.delete_blob()


RAW = {"local": _raw_local, "s3": _raw_s3, "sftp": _raw_sftp, "ftp": _raw_ftp}
RAW |= {"gcs": _raw_gcs, "azure": _raw_azure}
RAW_IMPORTS = {
    "s3": ["boto3", "botocore.config"],
    "sftp": ["paramiko"],
    "ftp": ["ftplib", "ssl"],
    "gcs": ["google.cloud.storage", "google.oauth2.service_account"],
    "azure": ["azure.storage.blob"],
}


def _child_raw(spec: dict[str, Any]) -> dict[str, Any]:
    import importlib

    for module in RAW_IMPORTS.get(spec["kind"], []):  # imported before the clock starts
        importlib.import_module(module)
    ready = _status_kib("VmRSS")
    with open(spec["source"], "rb") as source:
        seconds, cleanup = RAW[spec["kind"]](spec, source)
    hwm = _status_kib("VmHWM")
    cleanup()
    return {"seconds": seconds, "ready_kib": ready, "hwm_kib": hwm, "hwm_upload_kib": hwm}


def _django() -> None:
    import django

    django.setup()  # our process, as a backup runs it: settings and apps loaded


def _stream(source: IO[bytes], write: Any) -> None:
    while chunk := source.read(CHUNK):
        write(chunk)


# What bounds each kind's upload buffers: (option, attribute of the built storage, divisor).
UPLOAD_SETTINGS = {
    "s3": [("part_size_mib", "part_size", MIB), ("upload_concurrency", "concurrency", 1)],
    "gcs": [("upload_chunk_mib", "upload_chunk_size", MIB), ("chunk_size_mib", "chunk_size", MIB)],
    "azure": [("block_size_mib", "block_size", MIB), ("upload_concurrency", "concurrency", 1)],
}


def upload_settings(kind: str, storage: Any) -> dict[str, Any]:
    """The upload settings ``storage`` runs with, its defaults included (the options given to it
    name only what the test plugins set)."""
    return {
        name: getattr(storage, attribute) // divisor
        for name, attribute, divisor in UPLOAD_SETTINGS.get(kind, [])
        if hasattr(storage, attribute)
    }


def _child_ours(spec: dict[str, Any]) -> dict[str, Any]:
    _django()
    from backups.storages import build_storage, storage_class

    storage_class(spec["kind"])  # imports the kind's module (and its SDK) before the clock starts
    ready = _status_kib("VmRSS")
    with open(spec["source"], "rb", buffering=0) as source:
        started = time.perf_counter()
        storage = build_storage(spec["kind"], spec["kind"], spec["options"])
        writer = storage.open_writer(spec["name"])
        try:
            _stream(source, writer.write)
            stored = writer.commit()
        except BaseException:
            writer.abort()
            raise
        seconds = time.perf_counter() - started
    if stored.size != spec["size"]:
        raise StorageBenchError(f"{spec['kind']}: committed {stored.size} of {spec['size']} bytes")
    hwm_upload = _status_kib("VmHWM")
    started = time.perf_counter()
    storage.confirm(spec["name"], spec["size"], spec["sha256"])
    confirm = time.perf_counter() - started
    hwm = _status_kib("VmHWM")
    storage.delete(spec["name"])
    storage.close()
    return {
        "seconds": seconds, "confirm_seconds": confirm, "ready_kib": ready,
        "hwm_kib": hwm, "hwm_upload_kib": hwm_upload,
        "settings": upload_settings(spec["kind"], storage),
    }  # fmt: skip


def _child_fanout(spec: dict[str, Any]) -> dict[str, Any]:
    """What ``FanOut.open/write/commit`` and ``_confirm_and_describe`` do, without the catalog."""
    _django()
    from backups.storages import build_storage, storage_class
    from backups.streaming.pipeline import BackgroundWriter

    kinds = list(spec["destinations"])
    for kind in kinds:
        storage_class(kind)
    ready = _status_kib("VmRSS")
    done: dict[str, float] = {}
    with open(spec["source"], "rb", buffering=0) as source:
        started = time.perf_counter()
        storages = {kind: build_storage(kind, kind, spec["destinations"][kind]) for kind in kinds}
        writers = {kind: storages[kind].open_writer(spec["name"]) for kind in kinds}
        try:
            background = {kind: BackgroundWriter(writers[kind], kind) for kind in kinds}

            def write(chunk: bytes) -> None:
                for each in background.values():
                    each.write(chunk)

            _stream(source, write)
            for kind in kinds:  # FanOut.commit: finish, then commit, one destination at a time
                background[kind].finish()
                stored = writers[kind].commit()
                done[kind] = time.perf_counter() - started
                if stored.size != spec["size"]:
                    raise StorageBenchError(f"{kind}: committed {stored.size} of {spec['size']} bytes")
        except BaseException:
            for writer in writers.values():
                with contextlib.suppress(Exception):
                    writer.abort()
            raise
        seconds = time.perf_counter() - started
    hwm_upload = _status_kib("VmHWM")
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=len(kinds)) as pool:  # copies.confirm_all: in parallel
        list(pool.map(lambda kind: storages[kind].confirm(spec["name"], spec["size"], spec["sha256"]), kinds))
    confirm = time.perf_counter() - started
    hwm = _status_kib("VmHWM")
    for storage in storages.values():
        storage.delete(spec["name"])
        storage.close()
    return {
        "seconds": seconds, "confirm_seconds": confirm, "ready_kib": ready,
        "hwm_kib": hwm, "hwm_upload_kib": hwm_upload, "extra": done,
    }  # fmt: skip


def child(spec_path: str) -> None:
    sys.path.insert(0, str(ROOT))
    spec = json.loads(Path(spec_path).read_text())
    side = spec["side"]
    report = {"raw": _child_raw, "ours": _child_ours, "fanout": _child_fanout}[side](spec)
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "serve":
        serve([k for k in sys.argv[2].split(",") if k], Path(sys.argv[3]))
    elif len(sys.argv) == 3 and sys.argv[1] == "child":
        child(sys.argv[2])
    else:
        sys.exit(f"usage: {sys.argv[0]} serve KINDS WORKDIR | child SPEC.json (run bench/run.py instead)")
