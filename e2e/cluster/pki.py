"""The certificates and keys of one control plane, written to its working directory.

Rule: a fresh CA per control plane; keys are readable by the owner only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from e2e.cluster import certs


@dataclass(frozen=True)
class Pki:
    """Paths of the certificates and keys written for one control plane."""

    ca_cert: Path
    ca_key: Path
    serving_cert: Path
    serving_key: Path
    sa_private: Path
    sa_public: Path
    clients: dict[str, certs.KeyPair]


def write_pki(directory: Path) -> Pki:
    directory.mkdir(mode=0o700)
    ca = certs.new_ca()
    serving = certs.issue(
        ca,
        "kube-apiserver",
        dns_names=[
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ],
        ip_addresses=["127.0.0.1", "10.0.0.1"],
    )
    sa_private, sa_public = certs.signing_key()
    files = {
        "ca.crt": ca.cert_pem,
        "ca.key": ca.key_pem,
        "apiserver.crt": serving.cert_pem,
        "apiserver.key": serving.key_pem,
        "sa.key": sa_private,
        "sa.pub": sa_public,
    }
    for name, content in files.items():
        (directory / name).write_bytes(content)
        (directory / name).chmod(0o600)
    clients = {
        "admin": certs.issue(ca, "admin", organizations=["system:masters"]),
        "kube-controller-manager": certs.issue(ca, "system:kube-controller-manager"),
        "kube-scheduler": certs.issue(ca, "system:kube-scheduler"),
    }
    return Pki(
        ca_cert=directory / "ca.crt",
        ca_key=directory / "ca.key",
        serving_cert=directory / "apiserver.crt",
        serving_key=directory / "apiserver.key",
        sa_private=directory / "sa.key",
        sa_public=directory / "sa.pub",
        clients=clients,
    )
