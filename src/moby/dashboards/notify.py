"""Who MOBY's alerts notify: a contact point and a notification policy, as Grafana provisioning files.

Grafana's unified alerting sends a firing alert along its *notification policy* tree to a
*contact point*; rules alone notify no one. The export writes (``alerting/notifications.yaml``,
Grafana's file provisioning format, ``apiVersion: 1``):

* ``contactPoints``: the contact point ``MOBY`` with a ``webhook`` receiver (JSON POSTed to a
  URL: a chat bridge, an incident tool) and/or an ``email`` receiver (Grafana's SMTP settings
  must be configured for it);
* ``policies``: the policy tree of the organisation, routing every alert labelled
  ``team=moby`` (:data:`moby.dashboards.alerts.ROUTE_LABEL`, which every MOBY rule carries) to
  ``MOBY``, grouped per rule and factory. Grafana provisions the tree as a whole: its root
  (alerts without the label) goes to ``MOBY`` too, so the file also works in a Grafana with no
  contact point of its own.

Addresses come from ``moby grafana export --alert-webhook-url / --alert-email`` or
``MOBY_ALERT_WEBHOOK_URL`` / ``MOBY_ALERT_EMAIL``. A value written as ``$VAR`` (or ``${VAR}``) is
left for Grafana to expand from its own environment, so a webhook URL holding a token need not
be in the file. With neither, no contact point can be written; the CLI says so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

from moby.dashboards.alerts import ROUTE_LABEL

CONTACT_POINT: Final = "MOBY"
WEBHOOK_UID: Final = "moby-webhook"
EMAIL_UID: Final = "moby-email"
# Grafana expands $VAR / ${VAR} in provisioning files from its own environment.
_GRAFANA_ENV: Final = re.compile(r"^\$(?:[A-Za-z_][A-Za-z0-9_]*|\{[A-Za-z_][A-Za-z0-9_]*\})$")
_EMAIL: Final = re.compile(r"^[^@\s;,<>\"'()]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)*$")
_MAX_EMAILS: Final = 50


def webhook_url(text: str) -> str:
    """``text`` checked as a webhook URL (http(s), a host) or a ``$VAR`` for Grafana; else ValueError."""
    value = text.strip()
    if _GRAFANA_ENV.match(value):
        return value
    if not value or any(c.isspace() for c in value):
        raise ValueError("a webhook URL is one http:// or https:// URL without spaces")
    try:
        parts = urlsplit(value)
        host = parts.hostname
        parts.port  # noqa: B018 - a bad port raises here
    except ValueError as exc:
        raise ValueError(f"not a URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not host:
        raise ValueError("a webhook URL must start with http:// or https:// and name a host")
    return value


def email_addresses(values: list[str]) -> tuple[str, ...]:
    """Addresses from options or a variable (each may list several, separated by ``,`` or ``;``)."""
    found: list[str] = []
    for value in values:
        for part in re.split(r"[,;\s]+", value.strip()):
            if not part:
                continue
            if not (_GRAFANA_ENV.match(part) or _EMAIL.match(part)):
                raise ValueError(f"{part!r} is not an e-mail address (name@host)")
            if part not in found:
                found.append(part)
    if len(found) > _MAX_EMAILS:
        raise ValueError(f"{len(found)} addresses: at most {_MAX_EMAILS} (use a mailing list)")
    return tuple(found)


@dataclass(frozen=True)
class Contacts:
    """Where alerts go: a webhook URL and/or e-mail addresses (already checked)."""

    webhook_url: str | None = None
    emails: tuple[str, ...] = ()

    @property
    def configured(self) -> bool:
        return bool(self.webhook_url or self.emails)

    def describe(self) -> str:
        """What the contact point does, in words, without the URL (it may hold a token)."""
        parts = []
        if self.webhook_url:
            parts.append("a webhook")
        if self.emails:
            parts.append(f"e-mail to {len(self.emails)} address{'es' if len(self.emails) > 1 else ''}")
        return " and ".join(parts) or "nothing"


def notifications(contacts: Contacts, *, org_id: int = 1) -> dict[str, Any]:
    """The provisioning document: the contact point and the policy tree routing MOBY's rules to it."""
    if not contacts.configured:
        raise ValueError("no contact configured: a contact point needs a webhook URL or an e-mail address")
    receivers: list[dict[str, Any]] = []
    if contacts.webhook_url:
        receivers.append(
            {
                "uid": WEBHOOK_UID,
                "type": "webhook",
                "settings": {"url": contacts.webhook_url, "httpMethod": "POST"},
                "disableResolveMessage": False,
            }
        )
    if contacts.emails:
        receivers.append(
            {
                "uid": EMAIL_UID,
                "type": "email",
                "settings": {"addresses": ";".join(contacts.emails), "singleEmail": True},
                "disableResolveMessage": False,
            }
        )
    label, value = ROUTE_LABEL
    return {
        "apiVersion": 1,
        "contactPoints": [{"orgId": org_id, "name": CONTACT_POINT, "receivers": receivers}],
        "policies": [
            {
                "orgId": org_id,
                "receiver": CONTACT_POINT,
                "group_by": ["grafana_folder", "alertname"],
                "routes": [
                    {
                        "receiver": CONTACT_POINT,
                        "object_matchers": [[label, "=", value]],
                        # One notification per rule and factory, listing its sensors.
                        "group_by": ["alertname", "factory_id"],
                        "group_wait": "30s",
                        "group_interval": "5m",
                        "repeat_interval": "4h",
                    }
                ],
            }
        ],
    }
