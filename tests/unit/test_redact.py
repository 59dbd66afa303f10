from chimera_ops.redact import redact_dsn, redact_text


def test_url_credentials_masked():
    assert redact_dsn("postgresql://bob:s3cr3t@db:5432/app") == "postgresql://bob:***@db:5432/app"
    assert redact_dsn("redis://:pw@localhost:6379/0") == "redis://:***@localhost:6379/0"


def test_url_without_password_unchanged():
    assert redact_dsn("postgresql://bob@db/app") == "postgresql://bob@db/app"


def test_key_value_dsn():
    assert "hunter2" not in redact_dsn("host=db password=hunter2 user=bob")
    assert redact_dsn("host=db password='a b c' user=bob") == "host=db password='***' user=bob"


def test_free_text_secrets():
    text = "Authorization: Bearer abc.def token=xyz api_key: K123 PASSWORD=p1"
    out = redact_text(text)
    for secret in ("abc.def", "xyz", "K123", "p1"):
        assert secret not in out


def test_known_literal_masked():
    assert redact_text("auth failed for s3cretpw", ["s3cretpw"]) == "auth failed for ***"


def test_plain_text_untouched():
    text = 'FATAL: password authentication failed for user "bob" port=5432'
    assert redact_text(text) == text


def test_dsn_password_url_and_key_value_forms() -> None:
    from chimera_ops.redact import dsn_password

    assert dsn_password("postgresql://u:s%40cret@h:5432/db") == "s@cret"
    assert dsn_password("postgresql://u@h/db") is None
    assert dsn_password("host=h user=u password=secret dbname=d") == "secret"
    assert dsn_password("host=h password='a b' dbname=d") == "a b"
    assert dsn_password("host=h dbname=d") is None
