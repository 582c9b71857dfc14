"""Envelope encryption providers: local key file, GCP KMS, AWS KMS."""
