"""Alerts that reach people: rules on failed, lost, stuck, slow and queued jobs, failure
rates and item failure rates, sent to webhooks, Slack and email (see docs/alerts.md).

* :mod:`.rules` reads and checks the TOML rules and channels.
* :mod:`.channels` sends a message: signed webhook, Slack-compatible webhook, SMTP.
* :mod:`.runner` evaluates the rules, records what it sends, delivers with retries.
"""

from __future__ import annotations

from ..settings import Settings
from .channels import DeliveryFailed, Email, Message, Slack, Webhook
from .rules import KINDS, AlertConfig, Rule, RuleFileError, load, parse_duration
from .runner import ALERT_LEASE, AlertRunner, PassReport

__all__ = [
    "ALERT_LEASE",
    "KINDS",
    "AlertConfig",
    "AlertRunner",
    "DeliveryFailed",
    "Email",
    "Message",
    "PassReport",
    "Rule",
    "RuleFileError",
    "Slack",
    "Webhook",
    "config_from",
    "load",
    "parse_duration",
]


def config_from(settings: Settings) -> AlertConfig | None:
    """The rules the settings name (``alerts_file``, else ``alerts_rules``), or None."""
    if settings.alerts_file:
        return load(settings.alerts_file)
    if settings.alerts_rules:
        return load(text=settings.alerts_rules)
    return None
