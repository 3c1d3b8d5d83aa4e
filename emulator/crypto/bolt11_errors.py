"""BOLT 11 typed errors: one class per way a string fails to decode, plus the encode error."""
from __future__ import annotations

from emulator.crypto import bech32
from emulator.errors import DecodeError, LnemuError


class Bolt11Error(DecodeError):
    """A string that is not a valid BOLT 11 invoice."""

    code = "bolt11_invalid"


class InvalidCharacterError(Bolt11Error):
    """A character that bech32 does not allow."""

    code = "bolt11_bad_character"


class MixedCaseError(Bolt11Error):
    """Upper and lower case mixed in one invoice string."""

    code = "bolt11_mixed_case"


class MissingSeparatorError(Bolt11Error):
    """No '1' separating the human-readable part from the data, or nothing before it."""

    code = "bolt11_no_separator"


class InvalidChecksumError(Bolt11Error):
    """The bech32 checksum does not match."""

    code = "bolt11_bad_checksum"


class TooShortError(Bolt11Error):
    """A data part too short for checksum, timestamp and signature."""

    code = "bolt11_too_short"


class InvalidPrefixError(Bolt11Error):
    """A human-readable part that does not start with ``ln``."""

    code = "bolt11_bad_prefix"


class UnknownCurrencyError(Bolt11Error):
    """A currency prefix other than bc, tb, tbs or bcrt."""

    code = "bolt11_unknown_currency"


class InvalidMultiplierError(Bolt11Error):
    """An amount followed by something other than one of the m, u, n, p multipliers."""

    code = "bolt11_bad_multiplier"


class InvalidAmountError(Bolt11Error):
    """An amount that is zero, has leading zeros or has no digits."""

    code = "bolt11_bad_amount"


class SubMillisatoshiAmountError(Bolt11Error):
    """A pico-bitcoin amount not ending in 0 (not a whole number of millisatoshis)."""

    code = "bolt11_sub_msat_amount"


class MalformedFieldError(Bolt11Error):
    """A tagged field that is truncated or whose content cannot be parsed."""

    code = "bolt11_bad_field"


class MissingPaymentHashError(Bolt11Error):
    """No valid ``p`` (payment hash) field."""

    code = "bolt11_no_payment_hash"


class MissingPaymentSecretError(Bolt11Error):
    """No valid ``s`` (payment secret) field."""

    code = "bolt11_no_payment_secret"


class MissingDescriptionError(Bolt11Error):
    """Neither a ``d`` nor a valid ``h`` field."""

    code = "bolt11_no_description"


class UnknownRequiredFeatureError(Bolt11Error):
    """An unknown even feature bit: BOLT 11 says the reader MUST fail the payment."""

    code = "bolt11_unknown_required_feature"

    def __init__(self, bits: list[int]) -> None:
        super().__init__(f"unknown required feature bits {bits}")
        self.bits = bits


class InvalidSignatureError(Bolt11Error):
    """A signature that is malformed or does not authenticate the invoice."""

    code = "bolt11_bad_signature"


class SignatureRecoveryError(InvalidSignatureError):
    """No public key can be recovered from the signature."""

    code = "bolt11_signature_not_recoverable"


class NonCanonicalSignatureError(InvalidSignatureError):
    """A high-S signature where an ``n`` field demands verification (lower-S required)."""

    code = "bolt11_high_s_signature"


class SignatureMismatchError(InvalidSignatureError):
    """A signature that does not verify against the ``n`` field's key."""

    code = "bolt11_signature_mismatch"


class Bolt11EncodeError(LnemuError):
    """An Invoice that cannot be written as a valid BOLT 11 string."""

    code = "bolt11_encode_error"


_FROM_BECH32: dict[type[bech32.Bech32Error], type[Bolt11Error]] = {
    bech32.Bech32CharacterError: InvalidCharacterError,
    bech32.Bech32MixedCaseError: MixedCaseError,
    bech32.Bech32SeparatorError: MissingSeparatorError,
    bech32.Bech32LengthError: TooShortError,
    bech32.Bech32ChecksumError: InvalidChecksumError,
}


def from_bech32_error(exc: bech32.Bech32Error) -> Bolt11Error:
    """The BOLT 11 error for a bech32-level failure (same message)."""
    return _FROM_BECH32.get(type(exc), Bolt11Error)(str(exc))
