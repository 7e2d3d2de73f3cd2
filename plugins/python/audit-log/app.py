"""audit-log: an append-only audit trail per entity, written in Python.

``audit.record`` carries ``{"entity": "order-7", "actor": "ana", "action": "refund"}``.
Each entity's entries are numbered 1, 2, 3... in state (``seq:<entity>``, and the entry at
``entry:<entity>:<n>``), and every recorded entry is published to the ``audit-feed``
queue. A record may say it must follow entry ``after`` of its entity: until that entry is
recorded it asks to be retried in ``retry_ms`` (config, default 50 ms). A record without
an entity, actor or action is rejected: retrying would not complete it.
"""

from wharf_sdk import Manifest, Message, Plugin, Reject, Retry, config, export, log, publish, state


class AuditLog(Plugin):
    def manifest(self) -> Manifest:
        return Manifest("audit-log", "1.0.0").subscribe("audit.record")

    def handle(self, message: Message) -> None:
        record = message.json()
        if not isinstance(record, dict):
            raise Reject(f"an audit record is a JSON object, not {type(record).__name__}")
        missing = [k for k in ("entity", "actor", "action") if not record.get(k)]
        if missing:
            raise Reject(f"audit record {message.id} has no {', '.join(missing)}")
        entity = str(record["entity"])
        seq = state.get_json(f"seq:{entity}", 0)
        after = record.get("after")
        if after is not None and seq < after:
            delay_ms = config.get_or("retry_ms", 50)
            raise Retry(f"{entity} is at entry {seq}, this record follows {after}", delay=delay_ms / 1000)
        seq += 1
        entry = {"seq": seq, "actor": record["actor"], "action": record["action"], "message": message.id}
        state.set_json(f"seq:{entity}", seq)
        state.set_json(f"entry:{entity}:{seq}", entry)
        publish("audit-feed", "audit.recorded", {"entity": entity, **entry})
        log.info(f"{entity} entry {seq}: {record['actor']} {record['action']}", entity=entity)


WitWorld = export(AuditLog)
