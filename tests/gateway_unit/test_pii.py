"""Personal data never reaches the training set."""

from __future__ import annotations

import pytest

from services.gateway.services.pii import scrub


@pytest.mark.parametrize(("text", "placeholder", "secret"), [
    ("mande para maria.silva+aion@exemplo.com.br hoje", "[EMAIL]", "maria.silva"),
    ("meu CPF é 123.456.789-09", "[CPF]", "123.456.789-09"),
    ("CPF sem pontos 12345678909.", "[CPF]", "12345678909"),
    ("CNPJ 12.345.678/0001-95 da empresa", "[CNPJ]", "12.345.678/0001-95"),
    ("cartão 4111 1111 1111 1111 validade", "[CARTAO]", "4111 1111 1111 1111"),
    ("card 5500-0000-0000-0004", "[CARTAO]", "5500-0000-0000-0004"),
    ("ligue (11) 98765-4321 ou", "[TELEFONE]", "98765-4321"),
    ("whatsapp +55 11 98765 4321", "[TELEFONE]", "98765 4321"),
    ("servidor em 192.168.10.20 caiu", "[IP]", "192.168.10.20"),
    ("ipv6 2001:0db8:85a3:0000:0000:8a2e:0370:7334 ok", "[IP]", "2001:0db8"),
])
def test_every_kind_is_scrubbed(text: str, placeholder: str, secret: str) -> None:
    out = scrub(text)
    assert placeholder in out and secret not in out


def test_ordinary_numbers_survive() -> None:
    text = "O pedido 1234567890123 custa R$ 1.250,00 em 2026, versão 3.11.7, passo 42."
    assert scrub(text) == text


def test_phone_at_the_end_of_a_sentence() -> None:
    assert scrub("ligue (11) 98765-4321.") == "ligue [TELEFONE]."
