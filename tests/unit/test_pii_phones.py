"""Phone numbers in international format from any region, whatever regions are configured; the
+39 regression; national formats still need a configured region."""

from __future__ import annotations

import pytest

from procvault.organization.policy import Scrubber, ScrubSettings


def _phones(s: Scrubber, text: str) -> list[str]:
    return [text[f.start : f.end] for f in s.find(text) if f.kind == "phone"]


@pytest.mark.parametrize("regions", [("US",), ("NL", "US"), ("DE", "GB")])
@pytest.mark.parametrize(
    "number",
    [
        # +39 numbers that survived scrubbing on the start commit
        "+39\u00a0333\u00a01234567",  # no-break spaces
        "+39\u202f06\u202f6982\u202f1234",  # narrow no-break spaces
        "+39 06\u20136982\u20131234",  # en dashes
        "+39 335790483",  # its 9 digits pass the BSN 11-check
        "+39 5123 456789",  # a possible Italian length, not an allocated range
        "0039 06 69821234",  # 00, the international prefix
        # other regions
        "+49 1512 3454469",  # its digits pass a Luhn check (a "card")
        "+34 882839603",  # BSN look-alike
        "+81\u00a03-1234-5678",
        "+91 81234 56789",
        "+44 20 7946 0958",
        "(+33) 1 42 68 53 00",
    ],
)
def test_international_numbers_are_found_whatever_the_regions(
    regions: tuple[str, ...], number: str
) -> None:
    s = Scrubber(ScrubSettings(phone_regions=regions))
    text = f"chiamare {number} domani"
    assert _phones(s, text) == [number]
    assert s.scrub(text)[0] == "chiamare [PHONE] domani"


def test_national_formats_still_need_their_region() -> None:
    us = Scrubber(ScrubSettings(phone_regions=("US",)))
    it = Scrubber(ScrubSettings(phone_regions=("IT",)))
    text = "chiamare 06 6982 1234 o 333 123 4567"
    assert _phones(us, text) == []
    assert _phones(it, text) == ["06 6982 1234", "333 123 4567"]


@pytest.mark.parametrize(
    "text",
    [
        "Price change +25.3% since 2023-01-15",
        "Order 0012345678 shipped",  # 00 and digits, but no valid number
        "Card 4111 1111 1111 1111 on file",
        "BSN 111222333 checked",
        "order 2024-03-31 14:30:00, invoice 4711",
        "2010-11-09 13:33:13.103000+00:00",  # seconds and microseconds of a timestamp
    ],
)
def test_look_alikes_are_not_phones(text: str) -> None:
    assert _phones(Scrubber(ScrubSettings(phone_regions=("NL", "US"))), text) == []
