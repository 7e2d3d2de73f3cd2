//! What a [`SettlePlan`] sends: a handled result's publishes (inbox messages, and
//! outbox rows for the relay) and a request's answer (a `replies` row for a caller on a
//! host, else a message to its reply queue, sent like a publish).

use std::borrow::Cow;
use std::time::Duration;

use super::{OutboxRow, ReplyRow, SettlePlan};
use crate::effects::{Destination, Publish};
use crate::envelope::{Envelope, NewMessage};
use crate::reply::{self, Answering, ReplyTo};
use crate::store::PluginVersion;

impl<'a> SettlePlan<'a> {
    /// `request`'s answer: a `replies` row for a caller on a host, else a message to its
    /// reply queue; late when its caller stopped waiting before this settle.
    pub(super) fn answer(&mut self, request: &'a Envelope, answer: Answering<'a>) {
        if request
            .expires_at()
            .is_some_and(|at| at < crate::store::now_ms())
        {
            self.summary.late_replies += 1;
        }
        if request.reply_to() == Some(ReplyTo::Caller) {
            self.replies.push(ReplyRow {
                request: request.id,
                answer,
            });
            return;
        }
        let Some(publish) = reply::message(request, &answer) else {
            return;
        };
        match publish.destination {
            Destination::Queue(queue) => self.publishes.push(NewMessage {
                id: publish.id,
                queue,
                kind: publish.kind,
                headers: publish.headers,
                payload: publish.payload,
                key: None,
                attempts: 0,
                delay: Duration::ZERO,
            }),
            Destination::Exchange { .. } | Destination::Topic(_) => self.outbox.push(OutboxRow {
                source: request.id,
                plugin: "",
                publish: Cow::Owned(publish),
            }),
        }
    }

    /// The ledger row of a handled pair and its publishes.
    pub(super) fn record_handled(
        &mut self,
        message: &'a Envelope,
        plugin: &'a PluginVersion,
        publishes: &'a [Publish],
    ) {
        self.handled.push((message.id, plugin));
        for publish in publishes {
            match &publish.destination {
                Destination::Queue(queue) => self.publishes.push(NewMessage {
                    id: publish.id,
                    queue: queue.clone(),
                    kind: publish.kind.clone(),
                    headers: publish.headers.clone(),
                    payload: publish.payload.clone(),
                    key: publish.key.clone(),
                    attempts: 0,
                    delay: Duration::ZERO,
                }),
                Destination::Exchange { .. } | Destination::Topic(_) => {
                    self.outbox.push(OutboxRow {
                        source: message.id,
                        plugin: &plugin.name,
                        publish: Cow::Borrowed(publish),
                    })
                }
            }
        }
    }
}
