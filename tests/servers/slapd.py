"""A throwaway OpenLDAP directory (Debian's slapd) on two free loopback ports.

Everything lives in a temp directory: ``slapd.conf`` (mdb backend, ``security tls=1`` so nothing
but StartTLS works before TLS), a throwaway CA and the server certificate it signed (for
127.0.0.1 and localhost, made with ``cryptography``), a second CA that signed nothing (an
untrusted server), the database loaded with ``slapadd`` and the log (``-d stats``: one line per
connection and per operation, so a test can prove that a client never bound).

``ldap://127.0.0.1:port`` takes StartTLS, ``ldaps://127.0.0.1:ldaps_port`` is TLS from the
first byte. Anonymous clients may only bind; bound ones read everything but passwords.

The directory (dc=example,dc=org)::

    ou=people     alice, bob, carol, dave, admin (uid=..., inetOrgPerson)
    ou=services   cn=backupsite (the service account the user search binds as)
    ou=groups     backup-restorers {alice}; team-shop {bob}; all-staff {team-shop, carol};
                  blocked {carol}  (groupOfNames; bob is in all-staff through team-shop)
    ou=posix      operators (posixGroup, memberUid alice)

As root, slapd drops to Debian's ``openldap`` user (``-u``/``-g``); otherwise it runs as the
caller. ``slapd`` is in Debian's ``slapd`` package, ``ldapadd`` & co. in ``ldap-utils``.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import datetime
import hashlib
import ipaddress
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from . import free_port, stop_process, wait_for

SLAPD = "/usr/sbin/slapd"
_LOG_EVENT = re.compile(r" conn=(\d+) (.*)$")
SLAPADD = "/usr/sbin/slapadd"
SCHEMAS = ("core", "cosine", "nis", "inetorgperson")
SUFFIX = "dc=example,dc=org"
PEOPLE = f"ou=people,{SUFFIX}"
GROUPS = f"ou=groups,{SUFFIX}"
POSIX_GROUPS = f"ou=posix,{SUFFIX}"
SERVICE_DN = f"cn=backupsite,ou=services,{SUFFIX}"
USERS = {  # uid -> (given name, surname)
    "alice": ("Alice", "Liddell"),
    "bob": ("Bob", "Builder"),
    "carol": ("Carol", "Danvers"),
    "dave": ("Dave", "Bowman"),
    "admin": ("Directory", "Admin"),  # shares its name with the local break-glass account
}
GROUP_MEMBERS = {  # cn -> member DNs
    "backup-restorers": [f"uid=alice,{PEOPLE}"],
    "team-shop": [f"uid=bob,{PEOPLE}"],
    "all-staff": [f"cn=team-shop,{GROUPS}", f"uid=carol,{PEOPLE}"],
    "blocked": [f"uid=carol,{PEOPLE}"],
}


def user_dn(uid: str) -> str:
    return f"uid={uid},{PEOPLE}"


def group_dn(cn: str) -> str:
    return f"cn={cn},{GROUPS}"


@dataclass
class LDAPServer:
    base: Path
    port: int
    ldaps_port: int
    host: str = "127.0.0.1"
    passwords: dict[str, str] = field(default_factory=dict)  # uid (or "service") -> password
    process: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        """The plain port: StartTLS only (``security tls=1``)."""
        return f"ldap://{self.host}:{self.port}"

    @property
    def ldaps_uri(self) -> str:
        return f"ldaps://{self.host}:{self.ldaps_port}"

    @property
    def ca_file(self) -> Path:
        return self.base / "ca.pem"

    @property
    def other_ca_file(self) -> Path:
        """A CA that did not sign the server's certificate."""
        return self.base / "other-ca.pem"

    @property
    def service_password_file(self) -> Path:
        return self.base / "service-password"

    @property
    def log(self) -> Path:
        return self.base / "slapd.log"

    def log_text(self) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")
        return ""

    def log_mark(self) -> int:
        """Where the log ends now; :meth:`connections_since` reads what follows."""
        return len(self.log_text())

    def connections_since(self, mark: int) -> dict[str, list[str]]:
        """The connections accepted after ``mark``: connection number -> its events in order
        (``fd=12 ACCEPT from ...``, ``fd=12 TLS established ...``, ``op=0 BIND dn="..." ...``).
        Earlier connections are left out: their last lines (UNBIND, closed) come late."""
        connections: dict[str, list[str]] = {}
        for line in self.log_text()[mark:].splitlines():
            match = _LOG_EVENT.search(line)
            if match is None:
                continue
            number, event = match.groups()
            if " ACCEPT from " in event:
                connections[number] = []
            if number in connections:
                connections[number].append(event)
        return connections

    def start(self) -> None:
        make_certificates(self.base)
        self.passwords = {uid: f"{uid}-{secrets.token_urlsafe(9)} pässword 'x'" for uid in USERS}
        self.passwords["service"] = f"svc-{secrets.token_urlsafe(12)}"
        self.service_password_file.write_text(self.passwords["service"] + "\n")
        (self.base / "data").mkdir()
        config = self.base / "slapd.conf"
        config.write_text(self._config())
        ldif = self.base / "directory.ldif"
        ldif.write_text(self._ldif())
        subprocess.run([SLAPADD, "-q", "-f", str(config), "-l", str(ldif)], check=True, capture_output=True)
        argv = [SLAPD, "-d", "stats", "-f", str(config), "-h", f"{self.uri}/ {self.ldaps_uri}/"]
        if os.geteuid() == 0:
            account = pwd.getpwnam("openldap")
            for path in [self.base, *self.base.rglob("*")]:
                os.chown(path, account.pw_uid, account.pw_gid)
            argv += ["-u", "openldap", "-g", "openldap"]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent
            )
        wait_for(self._ready, "slapd to listen", timeout=30)

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"slapd exited with {self.process.returncode}:\n{self.log_text()[-3000:]}")
        for port in (self.port, self.ldaps_port):
            try:
                socket.create_connection((self.host, port), timeout=1).close()
            except OSError:
                return False
        return True

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
        shutil.rmtree(self.base, ignore_errors=True)

    def _config(self) -> str:
        includes = "".join(f"include /etc/ldap/schema/{name}.schema\n" for name in SCHEMAS)
        return f"""\
{includes}modulepath /usr/lib/ldap
moduleload back_mdb
pidfile {self.base}/slapd.pid
argsfile {self.base}/slapd.args
TLSCACertificateFile {self.base}/ca.pem
TLSCertificateFile {self.base}/server.pem
TLSCertificateKeyFile {self.base}/server.key
# Nothing but StartTLS before TLS: a client that skipped it cannot even bind.
security tls=1

database mdb
maxsize 16777216
suffix "{SUFFIX}"
rootdn "cn=root,{SUFFIX}"
rootpw {ssha(secrets.token_urlsafe(16))}
directory {self.base}/data
access to attrs=userPassword by self write by anonymous auth by * none
access to * by users read by * none
"""

    def _ldif(self) -> str:
        entries = [
            f"dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example\n",
            *(
                f"dn: ou={ou},{SUFFIX}\nobjectClass: organizationalUnit\nou: {ou}\n"
                for ou in ("people", "services", "groups", "posix")
            ),
            f"dn: {SERVICE_DN}\nobjectClass: applicationProcess\nobjectClass: simpleSecurityObject\n"
            f"cn: backupsite\nuserPassword: {ssha(self.passwords['service'])}\n",
        ]
        for uid, (given, surname) in USERS.items():
            entries.append(
                f"dn: {user_dn(uid)}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {given} {surname}\n"
                f"givenName: {given}\nsn: {surname}\nmail: {uid}@example.org\n"
                f"userPassword: {ssha(self.passwords[uid])}\n"
            )
        for cn, members in GROUP_MEMBERS.items():
            lines = "".join(f"member: {member}\n" for member in members)
            entries.append(f"dn: {group_dn(cn)}\nobjectClass: groupOfNames\ncn: {cn}\n{lines}")
        entries.append(
            f"dn: cn=operators,{POSIX_GROUPS}\nobjectClass: posixGroup\ncn: operators\n"
            "gidNumber: 5000\nmemberUid: alice\n"
        )
        return "\n".join(entries)


def ssha(password: str) -> str:
    """``password`` as an OpenLDAP {SSHA} userPassword value."""
    salt = secrets.token_bytes(8)
    digest = hashlib.sha1(password.encode() + salt, usedforsecurity=False).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode()


def make_certificates(directory: Path) -> None:
    """``ca.pem`` and the ``server.pem``/``server.key`` it signed; ``other-ca.pem``, signed nothing."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)

    def name(common_name: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])

    def builder(subject: str, issuer: str, key: ec.EllipticCurvePrivateKey) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(name(subject))
            .issuer_name(name(issuer))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
        )

    def pem(certificate: x509.Certificate) -> bytes:
        return certificate.public_bytes(serialization.Encoding.PEM)

    def certificate_authority(ca_name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_cert = (
            builder(ca_name, ca_name, ca_key)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        return ca_key, ca_cert

    ca_key, ca_cert = certificate_authority("Backupsite test LDAP CA")
    other_ca_cert = certificate_authority("Backupsite other CA")[1]
    key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        builder("127.0.0.1", "Backupsite test LDAP CA", key)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    (directory / "ca.pem").write_bytes(pem(ca_cert))
    (directory / "other-ca.pem").write_bytes(pem(other_ca_cert))
    (directory / "server.pem").write_bytes(pem(server_cert))
    key_file = directory / "server.key"
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    key_file.chmod(0o600)


def _die_with_parent() -> None:
    """slapd -d outlives a killed pytest otherwise: ask Linux to SIGTERM it when we go away."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def installed() -> bool:
    return Path(SLAPD).exists() and Path(SLAPADD).exists()


def install_problem() -> str | None:
    """Why slapd cannot run here (None: it can), after installing it if we are root."""
    if installed():
        return None
    if os.geteuid() != 0:
        return f"{SLAPD} is missing: apt-get install slapd ldap-utils (make setup does)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-qq", "slapd", "ldap-utils"]
    for argv in (install, ["apt-get", "update", "-qq"], install):  # the package lists may be stale
        result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900)
        if installed():
            return None
    return f"slapd cannot be installed (apt-get install slapd ldap-utils: {result.stderr.strip()[-300:]})"


@contextlib.contextmanager
def running_slapd() -> Iterator[LDAPServer]:
    if not installed():
        raise RuntimeError(f"{SLAPD} is missing: apt-get install slapd ldap-utils (make setup does)")
    base = Path(tempfile.mkdtemp(prefix="backupsite-slapd-"))
    server = LDAPServer(base=base, port=free_port(), ldaps_port=free_port())
    try:
        server.start()
        yield server
    finally:
        server.stop()
