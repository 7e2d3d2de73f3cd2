"""audit-log: an append-only audit trail per entity, written in Python, relying on order.

``audit.record`` carries ``{"actor": "ana", "action": "refund"}`` (and an optional
``note``, kept to its first 200 characters) and is published with its entity as ordering
key (``wharf publish --key order-7``). The plugin asks for order, so wharf hands it one
entity's records one at a time, in the order they were published, through retries and
across the fleet: it never sees a gap to wait for. Each entity's entries are numbered 1,
2, 3... in state (``seq:<entity>``, and the entry at ``entry:<entity>:<n>``), and every
entry is published to the ``audit-feed`` queue with the entity as its key, so the feed
keeps the order too. A record without a key, an actor or an action is rejected: retrying
would not complete it.

``audit.entries`` is a request (``wharf request --kind audit.entries --json
'{"entity": "order-7"}'``): it answers how many entries the entity has and its last one.
"""

from wharf_sdk import Manifest, Message, Plugin, Reject, export, log, publish, state


class AuditLog(Plugin):
    def manifest(self) -> Manifest:
        return (
            Manifest("audit-log", "2.1.0")
            .subscribe("audit.record")
            .subscribe("audit.entries")
            .ordered()
        )

    def handle(self, message: Message) -> None:
        if message.kind == "audit.entries":
            entity = message.json().get("entity")
            if not isinstance(entity, str) or not entity:
                raise Reject('audit.entries asks for {"entity": "<ordering key>"}')
            count = state.get_json(f"seq:{entity}", 0)
            last = state.get_json(f"entry:{entity}:{count}") if count else None
            message.reply({"entity": entity, "entries": count, "last": last})
            return
        entity = message.key
        if not entity:
            raise Reject(
                f"audit record {message.id} has no ordering key; "
                "publish it with its entity as key (wharf publish --key order-7)"
            )
        record = message.json()
        if not isinstance(record, dict):
            raise Reject(f"an audit record is a JSON object, not {type(record).__name__}")
        missing = [k for k in ("actor", "action") if not record.get(k)]
        if missing:
            raise Reject(f"audit record {message.id} has no {', '.join(missing)}")
        seq = state.get_json(f"seq:{entity}", 0) + 1
        entry = {"seq": seq, "actor": record["actor"], "action": record["action"], "message": message.id}
        if "note" in record:
            entry["note"] = record["note"][:200]
        state.set_json(f"seq:{entity}", seq)
        state.set_json(f"entry:{entity}:{seq}", entry)
        publish("audit-feed", "audit.recorded", {"entity": entity, **entry}, key=entity)
        log.info(f"{entity} entry {seq}: {record['actor']} {record['action']}", entity=entity)


WitWorld = export(AuditLog)
