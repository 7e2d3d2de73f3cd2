//! The effect limits of one call, as one table: each limit's setting (its field in
//! `[plugin.<name>]`, and in the section named beside it, whose value is the most a
//! plugin may be given), its type and what it counts. [`EffectLimits`] (what a call runs
//! with), [`EffectOverrides`] (a plugin's own values), how one applies to the other and
//! the lists of their settings are all made from it.

/// Makes the effect limits' types from the table below.
macro_rules! effect_limits {
    ($( $(#[$doc:meta])* $name:ident ($section:ident): $ty:ty, )*) => {
        /// What one call of a plugin may do.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct EffectLimits {
            $( $(#[$doc])* pub $name: $ty, )*
        }

        /// A plugin's own values of some [`EffectLimits`] (its `[plugin.<name>]`
        /// section); `None` keeps the host's.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct EffectOverrides {
            $(
                #[doc = concat!("See [`EffectLimits::", stringify!($name), "`].")]
                pub $name: Option<$ty>,
            )*
        }

        impl EffectLimits {
            /// These limits with a plugin's own values applied (config validation keeps
            /// them within these).
            pub fn overridden_by(&self, o: &EffectOverrides) -> Self {
                Self { $( $name: o.$name.unwrap_or(self.$name), )* }
            }

            /// Each limit's setting and value, in the table's order.
            pub fn settings(&self) -> Vec<(&'static str, u64)> {
                vec![ $( (stringify!($name), self.$name as u64), )* ]
            }
        }

        impl EffectOverrides {
            /// Each limit's setting and the plugin's value, in the table's order.
            pub fn settings(&self) -> Vec<(&'static str, Option<u64>)> {
                vec![ $( (stringify!($name), self.$name.map(|v| v as u64)), )* ]
            }
        }

        /// The section whose `setting` is the most a plugin may be given: `runtime` or
        /// `inbox`.
        pub fn ceiling(setting: &str) -> &'static str {
            match setting {
                $( stringify!($name) => stringify!($section), )*
                _ => "runtime",
            }
        }
    };
}

effect_limits! {
    /// Messages published.
    max_publishes (runtime): u32,
    /// Bytes of one published payload.
    max_payload_bytes (inbox): usize,
    /// Bytes of everything buffered: published messages (kind, destination, headers,
    /// payload) and state writes (key, value).
    max_effect_bytes (runtime): usize,
    /// State keys read from the store.
    max_state_reads (runtime): u32,
    /// State writes and deletes.
    max_state_writes (runtime): u32,
    /// Bytes of one state value.
    max_state_value_bytes (runtime): usize,
    /// Log lines; the excess is dropped and counted.
    max_log_lines (runtime): u32,
    /// Bytes of log lines (message and fields); the excess is dropped and counted.
    max_log_bytes (runtime): usize,
    /// Bytes of stdout and of stderr kept; the excess is dropped and counted.
    max_stdio_bytes (runtime): usize,
    /// Bytes of the reason a call ends with; a longer one is cut with a marker.
    max_reason_bytes (runtime): usize,
    /// Outgoing HTTP requests (to hosts its `allowed_hosts` grant).
    max_http_requests (runtime): u32,
    /// Bytes of one outgoing request's body.
    max_http_request_bytes (runtime): usize,
    /// Bytes of one response's body; reading past them is an error the guest sees.
    max_http_response_bytes (runtime): usize,
    /// Milliseconds to connect (TCP and TLS), within what is left of the deadline.
    http_connect_timeout_ms (runtime): u64,
    /// Milliseconds from a request sent to its response's first byte, and between two
    /// of its bytes, within what is left of the deadline.
    http_first_byte_timeout_ms (runtime): u64,
    /// The plugin's requests in flight at once on one host (over all its calls); more
    /// wait for one to end.
    max_http_concurrency (runtime): u32,
}
