"""Who may read the run browser: the token rules, the Host check and the security headers."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from crucible.ui.config import UiError, UiSettings, is_loopback, settings_from
from crucible.ui.guard import COOKIE, SECURITY_HEADERS, cookie_value
from tests.ui.conftest import served

TOKEN = "s3cret-token-value"


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.8.0.1", True), ("localhost", True), ("::1", True),
     ("[::1]", True), ("0.0.0.0", False), ("192.168.1.5", False), ("example.org", False),
     ("", False)],
)  # fmt: skip
def test_loopback_addresses(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_refuses_a_non_loopback_host_without_a_token() -> None:
    with pytest.raises(UiError, match="not a loopback address, without a token"):
        UiSettings(host="0.0.0.0")
    assert UiSettings(host="0.0.0.0", token=TOKEN).token == TOKEN
    assert UiSettings(host="127.0.0.1").token is None


def test_token_and_jaeger_url_come_from_the_environment() -> None:
    env = {"CRUCIBLE_UI_TOKEN": TOKEN, "CRUCIBLE_JAEGER_URL": "https://jaeger.example"}
    settings = settings_from(store_url=None, host="0.0.0.0", port=1, token=None, environ=env)
    assert settings.token == TOKEN and settings.jaeger_url == "https://jaeger.example"
    explicit = settings_from(store_url=None, host="::1", port=1, token="t", environ=env)
    assert explicit.token == "t"
    with pytest.raises(UiError, match="not a loopback"):
        settings_from(store_url=None, host="0.0.0.0", port=1, token=None, environ={})


@pytest.mark.parametrize("url", ["javascript:alert(1)", "ftp://x", "localhost:16686", "http://"])
def test_a_jaeger_url_must_be_http(url: str) -> None:
    with pytest.raises(UiError, match="Jaeger URL"):
        UiSettings(jaeger_url=url)


async def test_every_request_needs_the_token(filled: tuple[Path, object]) -> None:
    db, _ = filled
    with served(UiSettings(store_url=str(db), token=TOKEN)) as url:
        async with httpx.AsyncClient(base_url=url) as http:
            for path in ("/", "/run?id=retried-run", "/static/ui.css", "/batch.csv?id=sweep-1"):
                refused = await http.get(path)
                assert refused.status_code == 401, path
                assert "retried" not in refused.text
            wrong = await http.get("/", headers={"authorization": "Bearer nope"})
            assert wrong.status_code == 401
            ok = await http.get("/", headers={"authorization": f"Bearer {TOKEN}"})
            assert ok.status_code == 200 and "retried-run" in ok.text
            assert (await http.get("/", params={"token": "nope"})).status_code == 401
            assert COOKIE not in http.cookies

            visit = await http.get("/batch", params={"id": "sweep-1", "token": TOKEN})
            assert visit.status_code == 303
            assert visit.headers["location"] == "/batch?id=sweep-1"  # the token leaves the URL
            assert http.cookies[COOKIE] == cookie_value(TOKEN) != TOKEN
            sneaky = await http.get(
                "/%2Fattacker.example/", params={"token": TOKEN}
            )  # "//attacker…"
            assert sneaky.headers["location"] == "/attacker.example/"  # stays on this site
            follow = await http.get(visit.headers["location"])
            assert follow.status_code == 200 and "sweep-1" in follow.text

        async with httpx.AsyncClient(base_url=url, cookies={COOKIE: "forged"}) as forged:
            assert (await forged.get("/")).status_code == 401


async def test_loopback_serving_refuses_other_host_names(client: httpx.AsyncClient) -> None:
    rebound = await client.get("/", headers={"host": "attacker.example:8765"})
    assert rebound.status_code == 403
    for host in ("127.0.0.1:8765", "localhost", "[::1]:8765"):
        assert (await client.get("/", headers={"host": host})).status_code == 200, host


async def test_every_answer_carries_the_security_headers(client: httpx.AsyncClient) -> None:
    for path in ("/", "/run?id=nope", "/static/ui.js"):
        response = await client.get(path)
        for name, value in SECURITY_HEADERS.items():
            assert response.headers[name] == value, (path, name)
    assert "script-src 'self'" in SECURITY_HEADERS["content-security-policy"]
