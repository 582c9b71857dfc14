"""moto's S3 and KMS answer over real HTTP to boto3 clients bound to the fixture's endpoint."""

from __future__ import annotations

import uuid

import botocore.exceptions
import pytest

from tests.fixtures.moto_server import MotoServer


def test_s3_bucket_round_trip(moto_server: MotoServer) -> None:
    s3 = moto_server.client("s3")
    bucket = f"smoke-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="workspace/notes.txt", Body=b"hello corral")

    fetched = s3.get_object(Bucket=bucket, Key="workspace/notes.txt")["Body"].read()
    listed = s3.list_objects_v2(Bucket=bucket)["Contents"]

    assert fetched == b"hello corral"
    assert [item["Key"] for item in listed] == ["workspace/notes.txt"]


def test_s3_missing_key_is_an_error(moto_server: MotoServer) -> None:
    s3 = moto_server.client("s3")
    bucket = f"smoke-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    with pytest.raises(botocore.exceptions.ClientError, match="NoSuchKey"):
        s3.get_object(Bucket=bucket, Key="absent")


def test_kms_encrypt_decrypt_round_trip(moto_server: MotoServer) -> None:
    kms = moto_server.client("kms")
    key_id = kms.create_key(Description="corral smoke")["KeyMetadata"]["KeyId"]
    context = {"purpose": "smoke"}

    sealed = kms.encrypt(KeyId=key_id, Plaintext=b"secret", EncryptionContext=context)
    opened = kms.decrypt(CiphertextBlob=sealed["CiphertextBlob"], EncryptionContext=context)

    assert sealed["CiphertextBlob"] != b"secret"
    assert opened["Plaintext"] == b"secret"
    assert opened["KeyId"].endswith(key_id)


def test_kms_decrypt_with_wrong_context_fails(moto_server: MotoServer) -> None:
    kms = moto_server.client("kms")
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    sealed = kms.encrypt(KeyId=key_id, Plaintext=b"secret", EncryptionContext={"a": "1"})
    with pytest.raises(botocore.exceptions.ClientError):
        kms.decrypt(CiphertextBlob=sealed["CiphertextBlob"], EncryptionContext={"a": "2"})
