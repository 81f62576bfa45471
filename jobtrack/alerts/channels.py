"""Where alert messages go: a generic webhook (signed JSON), a Slack-compatible incoming
webhook, email over SMTP. Each ``send`` raises :class:`DeliveryFailed` with a reason
that holds no secret; the runner retries with backoff."""

from __future__ import annotations

import hashlib
import hmac
import json
import smtplib
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any, Protocol
from urllib.parse import urlsplit

from ..errors import JobtrackError

__all__ = [
    "SIGNATURE_HEADER",
    "Channel",
    "DeliveryFailed",
    "Email",
    "Message",
    "Slack",
    "Webhook",
]

#: The webhook's signature: ``sha256=`` and the hex HMAC-SHA256 of the body with the
#: channel's secret.
SIGNATURE_HEADER = "X-Jobtrack-Signature"
#: The delivery's id: the same on every retry of one delivery (receivers can dedupe).
DELIVERY_HEADER = "X-Jobtrack-Delivery"


class DeliveryFailed(JobtrackError):
    """A channel could not deliver a message (the reason holds no secret)."""


@dataclass(frozen=True)
class Message:
    """One alert as a channel sends it."""

    delivery_id: int
    alert_id: int
    rule: str
    kind: str
    title: str
    body: dict[str, Any]
    created_at: str
    #: Links to the dashboard's pages, when ``web_public_url`` is set.
    base_url: str = ""

    def job_url(self, job_id: str) -> str | None:
        from urllib.parse import quote

        return (
            f"{self.base_url.rstrip('/')}/jobs/{quote(job_id, safe='')}" if self.base_url else None
        )

    def payload(self) -> dict[str, Any]:
        """The webhook's JSON body."""
        jobs = [{**job, "url": self.job_url(job["id"])} for job in self.body.get("jobs", [])]
        return {
            "delivery": self.delivery_id,
            "alert": self.alert_id,
            "rule": self.rule,
            "kind": self.kind,
            "title": self.title,
            "created_at": self.created_at,
            **{k: v for k, v in self.body.items() if k != "jobs"},
            "jobs": jobs,
        }

    def lines(self, link: Any, escape: Any = str) -> list[str]:
        """The message as text lines: ``link(url, label)`` formats a link, ``escape``
        each piece of text the jobs and the rule supply."""
        out = [escape(self.title)]
        for job in self.body.get("jobs", [])[:10]:
            label = escape(job.get("name") or job.get("task_name") or job["id"])
            url = self.job_url(job["id"])
            text = link(url, label) if url else f"{label} ({escape(job['id'])})"
            if job.get("error"):
                text += f": {escape(job['error'])}"
            out.append(f"• {text}")
        more = self.body.get("count", 0) - min(len(self.body.get("jobs", [])), 10)
        if more > 0:
            out.append(f"… and {more:,} more")
        return out


class Channel(Protocol):
    """What the runner needs of a channel."""

    @property
    def name(self) -> str: ...

    @property
    def max_attempts(self) -> int: ...

    @property
    def retry_base_s(self) -> float: ...

    def send(self, message: Message) -> None: ...

    def secrets(self) -> list[str]: ...

    def describe(self) -> str: ...


def _post(url: str, body: bytes, headers: dict[str, str], timeout_s: float, name: str) -> None:
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"User-Agent": "jobtrack", **headers}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as answer:
            answer.read(1024)
    except urllib.error.HTTPError as exc:
        exc.close()  # it holds the response (and its socket)
        raise DeliveryFailed(f"{name}: the receiver answered {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DeliveryFailed(f"{name}: {type(exc).__name__}: {reason}") from None


def _host(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}"


@dataclass(frozen=True)
class Webhook:
    """POSTs the alert as JSON, signed with HMAC-SHA256 (``X-Jobtrack-Signature``)."""

    name: str
    url: str
    secret: str = field(repr=False)
    timeout_s: float = 10.0
    max_attempts: int = 8
    retry_base_s: float = 30.0

    def send(self, message: Message) -> None:
        body = json.dumps(message.payload(), separators=(",", ":"), default=str).encode()
        signature = hmac.new(self.secret.encode(), body, hashlib.sha256).hexdigest()
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: f"sha256={signature}",
            DELIVERY_HEADER: str(message.delivery_id),
        }
        _post(self.url, body, headers, self.timeout_s, f"webhook {self.name}")

    def secrets(self) -> list[str]:
        return [self.secret, self.url]

    def describe(self) -> str:
        return f"webhook to {_host(self.url)}"


@dataclass(frozen=True)
class Slack:
    """A Slack-compatible incoming webhook: a readable message, linked to the job pages."""

    name: str
    url: str = field(repr=False)
    timeout_s: float = 10.0
    max_attempts: int = 8
    retry_base_s: float = 30.0

    def send(self, message: Message) -> None:
        lines = message.lines(lambda url, label: f"<{url}|{label}>", _slack_escape)
        icon = {"firing": ":rotating_light:", "resolved": ":white_check_mark:"}.get(
            message.kind, ":bell:"
        )
        text = f"{icon} *{lines[0]}*\n" + "\n".join(lines[1:])
        body = json.dumps({"text": text}).encode()
        _post(
            self.url,
            body,
            {"Content-Type": "application/json", DELIVERY_HEADER: str(message.delivery_id)},
            self.timeout_s,
            f"slack {self.name}",
        )

    def secrets(self) -> list[str]:
        return [self.url]

    def describe(self) -> str:
        return f"Slack webhook at {_host(self.url)}"


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


@dataclass(frozen=True)
class Email:
    """A plain-text email over SMTP (``starttls`` before signing in, by default)."""

    name: str
    host: str
    sender: str
    to: tuple[str, ...]
    port: int = 587
    starttls: bool = True
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout_s: float = 10.0
    max_attempts: int = 8
    retry_base_s: float = 30.0

    def send(self, message: Message) -> None:
        mail = EmailMessage()
        mail["Subject"] = f"[jobtrack] {message.title}"
        mail["From"] = self.sender
        mail["To"] = ", ".join(self.to)
        mail["X-Jobtrack-Delivery"] = str(message.delivery_id)
        mail.set_content("\n".join(message.lines(lambda url, label: f"{label} <{url}>")) + "\n")
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout_s) as smtp:
                if self.starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if self.username:
                    smtp.login(self.username, self.password or "")
                smtp.send_message(mail)
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryFailed(f"email {self.name}: {type(exc).__name__}: {exc}") from None

    def secrets(self) -> list[str]:
        return [self.password or ""]

    def describe(self) -> str:
        return f"email to {', '.join(self.to)} via {self.host}:{self.port}"
