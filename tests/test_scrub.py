"""crucible.scrub: which values are secret, and how they are replaced."""

from __future__ import annotations

import base64
import traceback

import pytest
from pydantic import BaseModel, SecretStr

from crucible import scrub
from crucible.scrub import Scrubber, env_scrubber, secret_values


class Options(BaseModel):
    conn: SecretStr
    region: str = "eu"


def test_secret_values_by_key_in_any_style_and_by_type() -> None:
    found = secret_values({
        "API_KEY": "k-123456", "nested": [{"apiKey": "k-abcdef"}], "max_tokens": 512,
        "token_count": "not-a-secret", "headers": {"X-Api-Key": {"v": ["deep-secret"]}},
        "short": {"password": "abc"},  # too short to scrub safely
        "model": Options(conn=SecretStr("conn-string-1")), "plain": SecretStr("typed-secret"),
    })  # fmt: skip
    assert found == {"k-123456", "k-abcdef", "deep-secret", "conn-string-1", "typed-secret"}


def test_text_value_and_exception_scrubbing() -> None:
    s = Scrubber(["abcd", "abcdef", "zz"])
    assert s.text("x abcdef y abcd") == "x [REDACTED] y [REDACTED]"  # longest first
    assert s.text("zz stays") == "zz stays"  # shorter than MIN_SECRET_LEN
    assert s.value({"k": ["abcd", 1, ("abcd",)], "n": None}) == {
        "k": ["[REDACTED]", 1, ("[REDACTED]",)], "n": None
    }  # fmt: skip
    try:
        try:
            raise KeyError("inner abcd")
        except KeyError as inner:
            raise RuntimeError("outer abcdef", 3) from inner
    except RuntimeError as err:
        s.exception(err)
        assert err.args == ("outer [REDACTED]", 3)
        assert str(err.__cause__) == "'inner [REDACTED]'"
    assert not Scrubber() and Scrubber().text("abcd") == "abcd"
    assert s.encoded().text('{"v": "a\\"bcd"}') == '{"v": "a\\"bcd"}'
    quoted = Scrubber(['p"ss<word>']).encoded()
    assert quoted.text('"p\\"ss<word>"  p&quot;ss&lt;word&gt;') == '"[REDACTED]"  [REDACTED]'


def test_environment_secrets_follow_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", "ghp-env-value-1")
    monkeypatch.setenv("PWD", "/work/some/folder")  # "pwd" reads as password: a folder, kept
    assert "ghp-env-value-1" in env_scrubber().values
    assert "/work/some/folder" not in env_scrubber().values
    monkeypatch.setenv("GITHUB_TOKEN", "ghp-env-value-2")
    assert env_scrubber().values >= {"ghp-env-value-2"}
    monkeypatch.setenv("DB_PASSWORD", "db-pass-value")
    assert {"ghp-env-value-2", "db-pass-value"} <= env_scrubber().values
    assert scrub.scrub_text("token ghp-env-value-2") == "token [REDACTED]"


def test_passwords_in_environment_urls_are_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://app:url-pass-1@db.internal:5432/app")
    monkeypatch.setenv("CACHE_URL", "redis://cache.internal:6379/0")  # no password: nothing
    assert "url-pass-1" in env_scrubber().values
    assert scrub.scrub_text("could not connect: app:url-pass-1@db") == (
        "could not connect: app:[REDACTED]@db"
    )
    monkeypatch.setenv("DATABASE_URL", "postgresql://app:url-pass-2@db.internal:5432/app")
    assert "url-pass-2" in env_scrubber().values  # a changed URL is read again
    assert "url-pass-1" not in env_scrubber().values


def test_conventional_secret_env_names_are_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_KEY", "DB_PASS", "SMTP_PW", "SSH_KEY"):
        monkeypatch.setenv(name, f"value-of-{name.lower()}-1")
    monkeypatch.setenv("SORT_KEY", "name")  # short: a setting, not a secret
    monkeypatch.setenv("BATCH_KEY", "20261204")  # digits: an id
    values = env_scrubber().values
    assert {
        f"value-of-{n.lower()}-1" for n in ("OPENAI_KEY", "DB_PASS", "SMTP_PW", "SSH_KEY")
    } <= values
    assert "name" not in values and "20261204" not in values


def test_mapping_keys_are_scrubbed_too() -> None:
    hide = Scrubber(["key-secret-7070"])
    assert hide.value({"attr_key-secret-7070": 1, "n": ["key-secret-7070"]}) == {
        "attr_[REDACTED]": 1, "n": ["[REDACTED]"]
    }  # fmt: skip


def test_an_unencoded_at_sign_stays_in_a_url_password() -> None:
    from crucible.scrub import url_passwords

    assert url_passwords("postgresql://admin:p@ssw0rd_CCCC3@db/app") == {"p@ssw0rd_CCCC3"}


def test_a_token_only_url_in_the_environment_is_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    token = "glpat-" + "Zx9" * 8
    monkeypatch.setenv("REPO_REMOTE", f"https://{token}@git.example/team/repo.git")
    assert scrub.scrub_text(f"fatal: could not read from https://{token}@git.example") == (
        "fatal: could not read from https://[REDACTED]@git.example"
    )


def test_active_scrubber_is_per_context() -> None:
    token = scrub.activate(Scrubber(["run-secret-1"]))
    try:
        assert scrub.scrub_text("a run-secret-1") == "a [REDACTED]"
    finally:
        scrub.deactivate(token)
    assert scrub.scrub_text("a run-secret-1") == "a run-secret-1"


async def test_a_secret_with_quotes_is_scrubbed_from_stored_json(tmp_path: object) -> None:
    from pathlib import Path

    import crucible
    from crucible.store import RunStore

    secret = 'pa"ss\\word-1'

    @crucible.stage("quoted_secret", description="d", register=False)
    async def quoted(ctx: crucible.Context) -> crucible.Context:
        return ctx.put_metric("echo", f"used {secret}")

    db = Path(str(tmp_path)) / "runs.db"
    async with RunStore(db) as store:
        ctx = await crucible.run({"id": "q", "pipeline": [{"name": "quoted_secret"}]},
                                 registry=crucible.Registry([quoted]), store=store,
                                 assigns={"password": secret})  # fmt: skip
        info = await store.get_run(ctx.run_id)
    assert info is not None and info.metrics == {"echo": "used [REDACTED]"}
    raw = db.read_bytes() + (db.with_name("runs.db-wal").read_bytes()
                             if db.with_name("runs.db-wal").exists() else b"")  # fmt: skip
    assert b"ss\\\\word-1" not in raw and b"ss\\word-1" not in raw


def test_log_lines_scrub_secret_values_in_messages_and_tracebacks() -> None:
    import io
    import json

    import structlog

    from crucible import logging as crucible_logging

    out = io.StringIO()
    crucible_logging.configure(json=True, stream=out)
    token = scrub.activate(Scrubber(["tb-secret-777"]))
    try:
        log = structlog.get_logger("t")
        try:
            raise RuntimeError("refused with tb-secret-777")
        except RuntimeError:
            log.exception("call failed using tb-secret-777", api_key="tb-secret-777", n=3)
    finally:
        scrub.deactivate(token)
        structlog.reset_defaults()
    line = json.loads(out.getvalue().strip().splitlines()[-1])
    assert "tb-secret-777" not in out.getvalue()
    assert line["event"] == "call failed using [REDACTED]" and line["api_key"] == "[REDACTED]"
    assert "RuntimeError: refused with [REDACTED]" in line["exception"] and line["n"] == 3


def test_log_lines_scrub_secrets_inside_objects_and_keys() -> None:
    import io
    import json
    from dataclasses import dataclass
    from pathlib import Path

    import structlog

    from crucible import logging as crucible_logging

    @dataclass
    class Opts:
        endpoint: str

    secret = "obj-secret-4242"
    out = io.StringIO()
    crucible_logging.configure(json=True, stream=out)
    token = scrub.activate(Scrubber([secret]))
    try:
        structlog.get_logger("t").warning(
            "options", opts=Opts(f"https://h/{secret}"), path=Path(f"/tmp/{secret}"),
            tags={secret}, raw=secret.encode(), nested={"k": [Opts(secret)], secret: 1},
            **{f"key_{secret}": 2},
        )  # fmt: skip
    finally:
        scrub.deactivate(token)
        structlog.reset_defaults()
    text = out.getvalue()
    assert secret not in text, text
    line = json.loads(text.strip().splitlines()[-1])
    assert (
        line["opts"] == "test_log_lines_scrub_secrets_inside_objects_and_keys.<locals>.Opts("
        "endpoint='https://h/[REDACTED]')"
    )
    assert line["nested"]["[REDACTED]"] == "[REDACTED]"  # its name looks secret: so is its value
    assert line["key_[REDACTED]"] == "[REDACTED]"


async def test_an_oserror_naming_a_secret_path_is_scrubbed_from_spans_and_failure() -> None:
    import crucible
    from crucible.testing import capture_spans

    secret = "/vault/tok-oserror-5151"

    @crucible.stage("opens_secret", description="d", register=False)
    async def opens(ctx: crucible.Context) -> crucible.Context:
        raise FileNotFoundError(2, "No such file", secret)  # str() comes from its fields

    with capture_spans() as cap:
        try:
            await crucible.run({"id": "o", "pipeline": [{"name": "opens_secret"}]},
                               registry=crucible.Registry([opens]), tracer_provider=cap.provider,
                               assigns={"access_token": secret})  # fmt: skip
        except crucible.StageFailed as err:
            failure = err
    assert secret not in str(failure) and "[REDACTED]" in str(failure)
    assert failure.context is not None
    assert secret not in (failure.context.trace.spans[-1].error_message or "")
    spans = cap.spans()
    assert len(spans) == 2
    for span in spans:
        texts = [span.status.description or ""] + [
            str(v) for e in span.events for v in (e.attributes or {}).values()
        ]
        assert not [t for t in texts if secret in t], span.name


def test_url_passwords_and_secrets_anywhere_in_an_experiment() -> None:
    from crucible import Experiment
    from crucible.scrub import definition_secrets, url_passwords

    assert url_passwords("see https://bob:pa%40ss:1@db.example/x and ftp://u@h/") == {
        "pa%40ss:1", "pa@ss:1"
    }  # fmt: skip
    assert url_passwords("mailto:bob@example.com https://example.com/a:b@c") == set()
    token = "ghp_" + "a1B2" * 9  # a GitHub token as the whole userinfo
    assert url_passwords(f"git clone https://{token}@github.com/o/r.git") == {token}
    assert url_passwords("postgresql://postgres@127.0.0.1/db ssh://git@github.com/o") == set()
    assert url_passwords("postgresql://h/db?sslmode=require&password=q%40pw-1 x?password=no") == {
        "q%40pw-1", "q@pw-1"
    }  # fmt: skip
    exp = Experiment.model_validate({
        "id": "e",
        "backend": {"id": "b", "options": {"api_key": "backend-key-1"},
                    "endpoint_url": "https://u:endpoint-pw-2@h/"},
        "metadata": {"nested": [{"password": "meta-pw-3"}], "plain": "not-a-secret"},
        "outputs": [{"name": "o", "options": {"token": "output-token-4"}}],
        "pipeline": [{"name": "s", "options": {"dsn": "postgres://u:stage-pw-5@h/db"}}],
    })  # fmt: skip
    assert definition_secrets(exp) == {
        "backend-key-1", "endpoint-pw-2", "meta-pw-3", "output-token-4",
        "postgres://u:stage-pw-5@h/db", "stage-pw-5",
    }  # fmt: skip
    assert definition_secrets(exp) is definition_secrets(exp)  # once per (frozen) experiment
    assert secret_values({"notes": ["https://u:assign-pw-6@h/"]}) == {"assign-pw-6"}


def test_found_in_checks_the_encoded_forms_of_a_value_that_has_them() -> None:
    from crucible.scrub import found_in

    assert found_in(["plain-value"], "x plain-value y")
    assert not found_in(["plain-value", "other"], '{"k": "plain-valu"}')
    assert found_in(['q"uote-1'], '{"k": "q\\"uote-1"}')  # as JSON writes it
    assert found_in(["caf\u00e9-pass"], '{"k": "caf\\u00e9-pass"}')
    assert found_in(["a<b&c-1"], "<td>a&lt;b&amp;c-1</td>")


def test_stdlib_log_lines_go_through_the_same_chain_scrubbed() -> None:
    import io
    import json
    import logging

    import structlog

    from crucible import logging as crucible_logging

    secret = "std-secret-9191"
    out = io.StringIO()
    root = logging.getLogger()
    kept = root.handlers[:]
    root.handlers.clear()  # as in a program that configured no logging of its own
    try:
        crucible_logging.configure(json=True, stream=out)
        token = scrub.activate(Scrubber([secret]))
        try:
            logging.getLogger("lib").warning("connecting with %s", secret)
            try:
                raise RuntimeError(f"refused {secret}")
            except RuntimeError:
                logging.getLogger("lib").exception("call failed")
        finally:
            scrub.deactivate(token)
    finally:
        root.handlers[:] = kept
        structlog.reset_defaults()
    text = out.getvalue()
    assert secret not in text, text
    first, second = (json.loads(line) for line in text.strip().splitlines())
    assert first["event"] == "connecting with [REDACTED]" and first["level"] == "warning"
    assert "RuntimeError: refused [REDACTED]" in second["exception"]


def test_bytes_secrets_are_found_as_text_and_as_the_base64_the_store_writes() -> None:
    from pydantic import SecretBytes

    from crucible.serialize import to_jsonable

    found = secret_values({"api_key": b"raw-bytes-secret", "token": SecretBytes(b"typed-bytes-1")})
    assert {"raw-bytes-secret", "typed-bytes-1"} <= found
    hide = Scrubber(found).encoded()
    copied = to_jsonable({"blob": b"raw-bytes-secret", "other": bytearray(b"typed-bytes-1")})
    assert hide.value(copied) == {"blob": {"base64": "[REDACTED]"},
                                  "other": {"base64": "[REDACTED]"}}  # fmt: skip


def test_a_binary_secret_is_found_in_its_repr_and_inside_larger_bytes() -> None:
    from crucible.serialize import to_jsonable

    key = bytes(range(0xC8, 0xE8))  # not UTF-8, as most binary keys
    hide = Scrubber(secret_values({"signing_key": key}))
    assert hide.text(f"loaded {key!r}") == "loaded b'[REDACTED]'"  # an event or a log line
    assert hide.binary(b"Bearer " + key + b"\n") == b"Bearer [REDACTED]\n"
    token = scrub.activate(hide)
    try:
        blob = to_jsonable({"line": key + b"\n"})["line"]["base64"]
    finally:
        scrub.deactivate(token)
    assert base64.b64decode(blob) == b"[REDACTED]\n"


def test_an_exception_is_scrubbed_in_its_file_names_notes_groups_and_long_chains() -> None:
    s = Scrubber(["sk-chain-secret-42"])
    os_err = FileNotFoundError(2, "No such file", "/keys/sk-chain-secret-42")
    noted = ValueError("bad request")
    noted.add_note("with token sk-chain-secret-42")
    member = KeyError("member saw sk-chain-secret-42")
    group = ExceptionGroup("several", [member])
    deep: BaseException = RuntimeError("layer 0 sk-chain-secret-42")
    for i in range(1, 20):
        outer = RuntimeError(f"layer {i}")
        outer.__cause__ = deep
        deep = outer
    top = RuntimeError("top")
    top.__cause__ = os_err
    os_err.__context__ = noted
    noted.__context__ = group
    group.__context__ = deep
    s.exception(top)
    text = "".join(traceback.format_exception(top))
    assert "sk-chain-secret-42" not in text and "[REDACTED]" in text
    assert os_err.filename == "/keys/[REDACTED]" and "sk-chain" not in str(os_err)
