"""Scrub personal data from text before it becomes training data.

Covers e-mail addresses, phone numbers (Brazilian and international), CPF, CNPJ, payment card
numbers (Luhn-checked, so order numbers survive) and IPv4/IPv6 addresses.
"""

from __future__ import annotations

import re

_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
_CNPJ = re.compile(r"\b\d{2}\.?\d{3}\.?\d{3}/?\d{4}-?\d{2}\b")
_CPF = re.compile(r"\b\d{3}\.?\d{3}\.?\d{3}-?\d{2}\b")
_CARD = re.compile(r"\b(?:\d[ -]?){12,18}\d\b")
_IPV4 = re.compile(r"\b(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)\b")
_IPV6 = re.compile(r"\b(?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}\b|\b(?:[0-9A-Fa-f]{1,4}:){1,6}:(?:[0-9A-Fa-f]{1,4}:?){1,6}\b")
_PHONE = re.compile(r"(?<![\w.])(?:\+\d{1,3}[\s.-]?)?(?:\(?\d{2,3}\)?[\s.-]?)?(?:9\s?)?\d{4}[\s.-]?\d{4}(?!\w|\.\d)")

PLACEHOLDERS = {"email": "[EMAIL]", "cpf": "[CPF]", "cnpj": "[CNPJ]", "card": "[CARTAO]", "ip": "[IP]",
                "phone": "[TELEFONE]"}


def _luhn_ok(digits: str) -> bool:
    total, odd = 0, False
    for ch in reversed(digits):
        d = int(ch)
        if odd:
            d = d * 2 - 9 if d * 2 > 9 else d * 2
        total += d
        odd = not odd
    return total % 10 == 0


def _card(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group(0))
    return PLACEHOLDERS["card"] if 13 <= len(digits) <= 19 and _luhn_ok(digits) else match.group(0)


def scrub(text: str) -> str:
    """Replace every kind of personal data found with a placeholder; order matters (longest forms first)."""
    if not text:
        return text
    text = _EMAIL.sub(PLACEHOLDERS["email"], text)
    text = _IPV6.sub(PLACEHOLDERS["ip"], text)
    text = _IPV4.sub(PLACEHOLDERS["ip"], text)
    text = _CARD.sub(_card, text)
    text = _CNPJ.sub(PLACEHOLDERS["cnpj"], text)
    text = _CPF.sub(PLACEHOLDERS["cpf"], text)
    text = _PHONE.sub(PLACEHOLDERS["phone"], text)
    return text
