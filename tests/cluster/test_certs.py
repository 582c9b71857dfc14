"""The control plane's generated certificates chain to their CA and carry the right identities."""

from __future__ import annotations

import ipaddress

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from e2e.cluster import certs


def load(pair: certs.KeyPair) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pair.cert_pem)


def test_serving_certificate_is_signed_by_the_ca_and_names_loopback() -> None:
    ca = certs.new_ca()
    serving = load(
        certs.issue(ca, "kube-apiserver", dns_names=["localhost"], ip_addresses=["127.0.0.1"])
    )
    serving.verify_directly_issued_by(load(ca))
    names = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    usages = serving.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [ExtendedKeyUsageOID.SERVER_AUTH]


def test_admin_client_certificate_is_in_system_masters() -> None:
    ca = certs.new_ca()
    admin = load(certs.issue(ca, "admin", organizations=["system:masters"]))
    admin.verify_directly_issued_by(load(ca))
    subject = admin.subject
    assert subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "admin"
    assert subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "system:masters"
    usages = admin.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [ExtendedKeyUsageOID.CLIENT_AUTH]


def test_signing_key_public_half_matches_private_half() -> None:
    private_pem, public_pem = certs.signing_key()
    private = serialization.load_pem_private_key(private_pem, password=None)
    public = serialization.load_pem_public_key(public_pem)
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert private.public_key().public_numbers() == public.public_numbers()
