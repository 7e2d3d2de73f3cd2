"""notify-webhook: post each shipped order to a partner's webhook, written in Python.

``order.shipped`` carries ``{"order": "o-7", "carrier": "ups"}``; the plugin posts it as
JSON to the URL in config ``webhook_url`` (the host must grant its host in
``[plugin.notify-webhook] allowed_hosts``; its manifest asks for the partner's), with the message's idempotency key, so a
retried message notifies the partner once. A 429 or 5xx answer is retried, another
non-2xx one rejected; a refusal or a timeout (:class:`wharf_sdk.http.HttpError`) is
retried.
"""

from wharf_sdk import Manifest, Message, Plugin, Reject, Retry, config, export, log
from wharf_sdk.http import Request


class NotifyWebhook(Plugin):
    def manifest(self) -> Manifest:
        return (
            Manifest("notify-webhook", "1.0.0")
            .subscribe("order.shipped")
            .calls("https://hooks.partner.example")
        )

    def handle(self, message: Message) -> None:
        url = config.get("webhook_url")
        if not url:
            raise Reject("config webhook_url is not set: the partner's webhook is unknown")
        shipped = message.json()
        response = Request.post(url).json(shipped).idempotency_key(message, "notify").send()
        if response.status == 429 or response.status >= 500:
            raise Retry(f"the webhook answered {response.status}")
        if not response.ok:
            raise Reject(f"the webhook refused the notification: {response.status}")
        log.info(f"notified {url} of {shipped.get('order')}")


WitWorld = export(NotifyWebhook)
