"""Fingerprints: stable SHA-256 of artefacts, absent values distinct, verification."""

from __future__ import annotations

import hashlib

from connectors.actuators.fingerprint import ABSENT, fingerprint, fingerprint_files, verify


def test_string_fingerprint_is_sha256_of_utf8() -> None:
    assert fingerprint("héllo") == "sha256:" + hashlib.sha256("héllo".encode()).hexdigest()
    assert fingerprint(b"x") == fingerprint("x")


def test_structured_values_are_canonical() -> None:
    assert fingerprint({"a": 1, "b": 2}) == fingerprint({"b": 2, "a": 1})
    assert fingerprint([1, 2]) != fingerprint([2, 1])
    assert fingerprint(None) == ABSENT != fingerprint("")


def test_verify_and_file_sets() -> None:
    fp = fingerprint("v1")
    assert verify("v1", fp) and not verify("v2", fp) and not verify(None, fp)
    assert fingerprint_files({"a": "1", "b": "2"}) == fingerprint_files({"b": "2", "a": "1"})
    assert fingerprint_files({"a": "1"}) != fingerprint_files({"a": "2"})
