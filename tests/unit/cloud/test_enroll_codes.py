"""Enrollment codes: 80 random bits in a typeable form, tolerant of how people type them,
stored as a hash only."""

from __future__ import annotations

import re

import pytest

from homeflex.cloud.enroll.codes import ALPHABET, MalformedCode, code_hash, new_code, normalise


def test_a_code_is_four_groups_of_four_base32_characters() -> None:
    code = new_code()
    assert re.fullmatch(r"[0-9A-HJKMNP-TV-Z]{4}(-[0-9A-HJKMNP-TV-Z]{4}){3}", code), code
    assert len(set(ALPHABET)) == 32 and not set("ILOU") & set(ALPHABET)


def test_codes_do_not_repeat() -> None:
    assert len({new_code() for _ in range(2000)}) == 2000


def test_case_dashes_spaces_and_look_alikes_do_not_matter() -> None:
    code = "7KQ2-M9XC-4TNB-HR0F"
    assert normalise(code) == "7KQ2M9XC4TNBHR0F"
    assert code_hash(" 7kq2 m9xc-4tnb hrOf ") == code_hash(code)
    assert code_hash("1111-2222-3333-4444") == code_hash("iIlL-2222-3333-4444")
    assert code_hash(code) != code_hash("7KQ2-M9XC-4TNB-HR0G")


def test_the_hash_does_not_contain_the_code() -> None:
    code = new_code()
    digest = code_hash(code)
    assert re.fullmatch(r"[0-9a-f]{64}", digest)
    assert normalise(code).lower() not in digest


@pytest.mark.parametrize(
    ("text", "message"),
    [("7KQ2-M9XC-4TNB", "16 characters, this one 12"), ("7KQ2-M9XC-4TNB-HR0U", "'U'"),
     ("", "this one 0"), ("7KQ2-M9XC-4TNB-HR0F-A", "this one 17")],
)  # fmt: skip
def test_what_cannot_be_a_code_is_malformed(text: str, message: str) -> None:
    with pytest.raises(MalformedCode, match=message):
        code_hash(text)
