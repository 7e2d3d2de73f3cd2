//! Which plugins run their messages inside the settle, and which state keys they are
//! expected to touch.
//!
//! A batch's handlers run concurrently and each reads the committed state. When they
//! read-modify-write the same keys (a hot SKU, a counter per customer), every message
//! after the first on a key reads a value that is about to change, and has to run again
//! inside the settle: two runs per message. And when several batches (lanes, hosts) work
//! on the same keys, each settles after another one changed them. So a plugin whose
//! messages mostly depend on each other is not run by dispatch at all: its messages run
//! once, inside the settle, in order, with the keys locked
//! ([`crate::outcome::Verdict::RunAtSettle`]). The keys its recent messages shared are
//! locked up front, so another host's settle on them is waited for rather than
//! collided with. A plugin whose messages touch distinct keys keeps running them
//! concurrently, which overlaps their state reads and holds no lock while they run.
//!
//! The measure: the share of a batch's handled messages of the plugin that read a key an
//! earlier message of the batch wrote, smoothed over batches. It reads the same whichever
//! way the batch ran, so it is taken from dispatch's results as well as the settle's.
//!
//! A plugin no batch has shown yet gets a first look: dispatch runs the first few messages
//! of the batch, measures them, and only then the rest ([`Contention::first_look`]).
//! Without it every batch already under way when the first one settles (the next batch of
//! each pipelined consumer or worker, every consumer's) ran ahead on the same hot key and
//! ran again in the settle: 300 orders of one SKU from a queue with two consumers in
//! batches of 50 cost 1.61 runs per message.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Mutex;

use crate::outcome::Verdict;
use crate::store::{PluginResult, Settlement};

/// Above this smoothed share of dependent messages a plugin runs them inside the settle.
const AT_SETTLE_ABOVE: f64 = 0.2;
/// Weight of the newest batch in the smoothed share.
const NEWEST_WEIGHT: f64 = 0.3;
/// Batches with fewer handled messages of a plugin say too little to count.
const SMALLEST_SAMPLE: usize = 4;
/// A batch with a plugin not seen yet runs this many of its messages first.
pub const FIRST_LOOK: usize = 8;
/// At most this many expected keys per plugin are locked up front.
const MOST_EXPECTED_KEYS: usize = 256;

/// What the recent batches of one plugin showed.
#[derive(Debug, Default)]
struct Seen {
    /// Smoothed share of dependent messages.
    share: f64,
    /// Keys two or more messages of the last batch touched.
    shared_keys: Vec<String>,
}

/// The contention of each plugin.
#[derive(Debug, Default)]
pub struct Contention {
    plugins: Mutex<HashMap<String, Seen>>,
}

impl Contention {
    /// Whether `plugin`'s messages run inside the settle.
    pub fn at_settle(&self, plugin: &str) -> bool {
        let plugins = self.plugins.lock().expect("no panic under this lock");
        plugins
            .get(plugin)
            .is_some_and(|s| s.share > AT_SETTLE_ABOVE)
    }

    /// The keys `plugin`'s recent messages shared.
    pub fn expected_keys(&self, plugin: &str) -> Vec<String> {
        let plugins = self.plugins.lock().expect("no panic under this lock");
        plugins
            .get(plugin)
            .map(|s| s.shared_keys.clone())
            .unwrap_or_default()
    }

    /// Whether a batch with `plugin` has been measured.
    pub fn seen(&self, plugin: &str) -> bool {
        let plugins = self.plugins.lock().expect("no panic under this lock");
        plugins.contains_key(plugin)
    }

    /// Learn from `plugin`'s results of the first messages dispatch ran of a plugin not
    /// [`Contention::seen`] yet, in the batch's order: however few they are, they are the
    /// plugin's first measure (the settles' measures then smooth it). Nothing changes when
    /// another batch got there first.
    pub fn first_look<'r>(
        &self,
        plugin: &str,
        results: impl IntoIterator<Item = &'r PluginResult>,
    ) {
        let measure = measure(results);
        let mut plugins = self.plugins.lock().expect("no panic under this lock");
        plugins.entry(plugin.to_owned()).or_insert(Seen {
            share: measure.share(),
            shared_keys: measure.shared_keys,
        });
    }

    /// Learn from `plugin`'s results of one settled batch, in the batch's order.
    pub fn observe<'r>(&self, plugin: &str, results: impl IntoIterator<Item = &'r PluginResult>) {
        let measure = measure(results);
        if measure.handled < SMALLEST_SAMPLE {
            return;
        }
        let share = measure.share();
        let mut plugins = self.plugins.lock().expect("no panic under this lock");
        let seen = plugins.entry(plugin.to_owned()).or_insert_with(|| Seen {
            share,
            ..Seen::default()
        });
        seen.share += NEWEST_WEIGHT * (share - seen.share);
        seen.shared_keys = measure.shared_keys;
    }
}

/// What one batch's results of a plugin showed.
struct Measure {
    handled: usize,
    /// Handled messages that read a key an earlier one wrote.
    dependent: usize,
    /// Keys two or more messages touched, the most touched first, at most
    /// [`MOST_EXPECTED_KEYS`].
    shared_keys: Vec<String>,
}

impl Measure {
    /// The share of dependent messages; none of none.
    fn share(&self) -> f64 {
        self.dependent as f64 / self.handled.max(1) as f64
    }
}

/// Measure `results`, in the batch's order.
fn measure<'r>(results: impl IntoIterator<Item = &'r PluginResult>) -> Measure {
    let mut written = HashSet::new();
    let mut touched: HashMap<&str, usize> = HashMap::new();
    let (mut handled, mut dependent) = (0, 0);
    for result in results {
        let Verdict::Handled(effects) = &result.verdict else {
            continue;
        };
        handled += 1;
        if effects.reads.keys().any(|k| written.contains(k.as_str())) {
            dependent += 1;
        }
        written.extend(effects.writes.keys().map(String::as_str));
        let keys: HashSet<&str> = effects
            .reads
            .keys()
            .chain(effects.writes.keys())
            .map(String::as_str)
            .collect();
        for key in keys {
            *touched.entry(key).or_default() += 1;
        }
    }
    let mut shared: Vec<(&str, usize)> = touched.into_iter().filter(|(_, n)| *n > 1).collect();
    shared.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    Measure {
        handled,
        dependent,
        shared_keys: shared
            .into_iter()
            .take(MOST_EXPECTED_KEYS)
            .map(|(k, _)| k.to_owned())
            .collect(),
    }
}

/// Each plugin of `batch` with its results, in the batch's order.
pub(super) fn by_plugin(
    batch: &[Settlement],
) -> impl Iterator<Item = (&str, impl Iterator<Item = &PluginResult>)> {
    let names: BTreeSet<&str> = batch
        .iter()
        .flat_map(|s| s.results.iter().map(|r| r.plugin.name.as_str()))
        .collect();
    names.into_iter().map(move |name| {
        let results = batch
            .iter()
            .flat_map(move |s| s.results.iter().filter(move |r| r.plugin.name == name));
        (name, results)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::effects::Effects;
    use crate::store::PluginVersion;

    fn increment(key: &str) -> PluginResult {
        PluginResult {
            plugin: PluginVersion {
                name: "p".into(),
                version: "1".into(),
                sha256: "ab".into(),
            },
            attempt: 1,
            verdict: Verdict::Handled(Effects {
                reads: [(key.to_owned(), 1)].into(),
                writes: [(key.to_owned(), Some(b"2".to_vec()))].into(),
                ..Effects::default()
            }),
        }
    }

    #[test]
    fn hot_keys_move_runs_to_the_settle_and_distinct_keys_move_them_back() {
        let contention = Contention::default();
        let hot: Vec<_> = (0..64).map(|i| increment(&format!("k{}", i % 7))).collect();
        let distinct: Vec<_> = (0..64).map(|i| increment(&format!("k{i}"))).collect();
        assert!(!contention.at_settle("p"));
        contention.observe("p", &distinct);
        assert!(!contention.at_settle("p"));
        assert!(contention.expected_keys("p").is_empty());
        contention.observe("p", &hot);
        assert!(
            contention.at_settle("p"),
            "57 of 64 messages depend on an earlier one"
        );
        let mut expected = contention.expected_keys("p");
        expected.sort();
        assert_eq!(expected, ["k0", "k1", "k2", "k3", "k4", "k5", "k6"]);
        for _ in 0..5 {
            contention.observe("p", &distinct);
        }
        assert!(!contention.at_settle("p"));
        contention.observe("p", &hot[..3]);
        assert!(
            !contention.at_settle("p"),
            "3 messages are too few to count"
        );
    }

    #[test]
    fn a_first_look_measures_a_plugin_once_however_few_its_messages() {
        let contention = Contention::default();
        let hot: Vec<_> = (0..3).map(|_| increment("k")).collect();
        assert!(!contention.seen("p"));
        contention.first_look("p", &hot);
        assert!(contention.seen("p"));
        assert!(contention.at_settle("p"), "2 of 3 depend on the first");
        assert_eq!(contention.expected_keys("p"), ["k"]);
        let distinct: Vec<_> = (0..8).map(|i| increment(&format!("k{i}"))).collect();
        contention.first_look("p", &distinct);
        assert!(
            contention.at_settle("p"),
            "a second first look (a batch that started with the first) changes nothing"
        );
        let unhandled = PluginResult {
            verdict: Verdict::RunAtSettle,
            ..increment("k")
        };
        contention.first_look("q", [&unhandled]);
        assert!(contention.seen("q"));
        assert!(
            !contention.at_settle("q"),
            "nothing handled: nothing depends"
        );
    }
}
