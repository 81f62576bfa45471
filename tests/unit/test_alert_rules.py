"""The alert rule file: what a good one gives, and each problem said with its file and
line; secrets from the environment, and masked wherever text is shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobtrack.alerts import Email, RuleFileError, Slack, Webhook, load, parse_duration
from jobtrack.models import Scope

GOOD = """\
[channels.ops]
type = "webhook"
url = "http://127.0.0.1:9/hook"
secret = "env:JT_TEST_HOOK_SECRET"
retry_after = "2s"
max_attempts = 3

[channels.chat]
type = "slack"
url = "https://hooks.example.com/services/T000/B000/XXXXSECRETPATH"

[channels.mail]
type = "email"
host = "127.0.0.1"
port = 2525
starttls = false
from = "jobtrack@example.com"
to = ["ops@example.com"]

[[rules]]
name = "import-failed"
kind = "failed"
job_types = "import*"
channels = ["ops", "chat"]
group_wait = "10s"
cooldown = "5m"

[[rules]]
name = "stuck"
kind = "stuck"
after = "15m"
task_names = ["app.*", "etl.?"]
channels = "mail"

[[rules]]
name = "rate"
kind = "failure_rate"
threshold = 20
window = "15m"
min_jobs = 40
channels = ["ops"]
"""


@pytest.fixture(autouse=True)
def hook_secret(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("JT_TEST_HOOK_SECRET", "s3cret-shared-hmac-key")
    return "s3cret-shared-hmac-key"


def test_a_good_file_gives_its_rules_and_channels(tmp_path: Path, hook_secret: str) -> None:
    path = tmp_path / "alerts.toml"
    path.write_text(GOOD)
    config = load(path)
    failed, stuck, rate = config.rules
    assert (failed.kind, failed.channels, failed.scope) == (
        "failed",
        ("ops", "chat"),
        Scope(job_types=("import*",)),
    )
    assert (failed.group_wait_s, failed.cooldown_s, failed.lookback_s) == (10.0, 300.0, 3600.0)
    assert (stuck.after_s, stuck.channels, stuck.scope.task_names) == (
        900.0,
        ("mail",),
        ("app.*", "etl.?"),
    )
    assert (rate.threshold, rate.window_s, rate.min_jobs) == (20.0, 900.0, 40)
    hook = config.channels["ops"]
    assert isinstance(hook, Webhook) and hook.secret == hook_secret
    assert (hook.retry_base_s, hook.max_attempts) == (2.0, 3)
    assert isinstance(config.channels["chat"], Slack)
    assert isinstance(config.channels["mail"], Email)
    assert config.channels["mail"].port == 2525
    # Nothing shown says a secret: not the HMAC key, not the Slack webhook's path.
    shown = config.mask(
        f"failed posting to https://hooks.example.com/services/T000/B000/XXXXSECRETPATH "
        f"with {hook_secret}"
    )
    assert "SECRETPATH" not in shown and hook_secret not in shown and "[secret]" in shown
    assert "SECRETPATH" not in config.channels["chat"].describe()
    assert hook_secret not in repr(hook)


@pytest.mark.parametrize(
    ("change", "line", "problem"),
    [
        (('kind = "failed"', 'kind = "faild"'), 22, "unknown kind 'faild'"),
        (('after = "15m"', 'after = "soon"'), 31, "after: 'soon' is not a duration"),
        (('channels = "mail"', 'channels = "pager"'), 33, "no channel named 'pager'"),
        (("threshold = 20", "threshold = 120"), 38, "threshold: a percentage"),
        (("min_jobs = 40", "min_jobs = 40\ncolour = 1"), 41, "unknown key 'colour'"),
        (('type = "slack"', 'type = "pager"'), 9, "type: one of webhook, slack, email"),
        (("port = 2525", 'port = "x"'), 15, "port: a port number"),
        (('[[rules]]\nname = "stuck"', '[[rules]]\nname = "import-failed"'), 29, "a second rule"),
        (('after = "15m"\n', ""), 28, "a stuck rule needs after"),
        (('url = "http://127.0.0.1:9/hook"', 'url = "ftp://x"'), 3, "url: an http://"),
        (('name = "rate"', 'name = "rate" = 1'), 36, "Expected newline"),
        (
            ('secret = "env:JT_TEST_HOOK_SECRET"', 'secret = "env:JT_NOT_SET_ANYWHERE"'),
            4,
            "JT_NOT_SET_ANYWHERE is not set",
        ),
    ],
)
def test_each_problem_says_file_line_and_what(
    tmp_path: Path, change: tuple[str, str], line: int, problem: str
) -> None:
    assert change[0] in GOOD
    path = tmp_path / "alerts.toml"
    path.write_text(GOOD.replace(change[0], change[1], 1))
    with pytest.raises(RuleFileError) as raised:
        load(path)
    assert raised.value.line == line, str(raised.value)
    assert problem in raised.value.problem
    assert str(raised.value).startswith(f"{path}:{line}: ")


def test_no_file_no_rules_and_text_from_settings(tmp_path: Path) -> None:
    with pytest.raises(RuleFileError, match="cannot read it"):
        load(tmp_path / "missing.toml")
    with pytest.raises(RuleFileError, match="no rules"):
        load(text='[channels.a]\ntype = "slack"\nurl = "https://x.example"\n')
    config = load(text=GOOD)
    assert config.source == "(the alerts_rules setting)" and len(config.rules) == 3


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("30s", 30.0), ("10m", 600.0), ("2h", 7200.0), ("1d", 86400.0), (45, 45.0), ("250ms", 0.25)],
)
def test_durations(value: object, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["", "soon", "-5s", 0, True, "5 parsecs"])
def test_bad_durations(value: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(value)


def test_every_rendering_of_a_secret_is_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    import html
    import json
    from urllib.parse import quote, quote_plus

    secret = "pw\\with'quotes\" & 50%/ünï"
    monkeypatch.setenv("JT_TEST_HOOK_SECRET", secret)
    config = load(text=GOOD)
    renderings = {
        "as written": secret,
        "repr": repr(secret),
        "repr of bytes": repr(secret.encode()),
        "repr of a repr": repr(repr(secret.encode())),
        "JSON": json.dumps(secret),
        "JSON of JSON": json.dumps(json.dumps(secret)),
        "URL-encoded": quote(secret, safe=""),
        "form-encoded": quote_plus(secret),
        "HTML-escaped": html.escape(secret),
    }
    for how, text in renderings.items():
        shown = config.mask(f"the server said: {text} (refused)")
        assert "quotes" not in shown and "[secret]" in shown, (how, shown)
