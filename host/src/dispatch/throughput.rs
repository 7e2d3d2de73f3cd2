//! Messages handled by this host per queue over the last minute, counted as batches
//! settle, for the host's report (the dashboard's handled/min per queue).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

use crate::envelope::Envelope;
use crate::outcome::Verdict;
use crate::store::Settlement;

/// Seconds in the window.
const WINDOW: usize = 60;

/// One queue's counts, one bucket per second of the window.
#[derive(Debug)]
struct Window {
    buckets: [u64; WINDOW],
    /// The second (since the counter started) of the newest bucket.
    newest: u64,
}

impl Window {
    /// Move the window on to `second`, emptying the buckets it leaves behind.
    fn advance(&mut self, second: u64) {
        if second <= self.newest {
            return;
        }
        let gone = (second - self.newest).min(WINDOW as u64);
        for s in second + 1 - gone..=second {
            self.buckets[s as usize % WINDOW] = 0;
        }
        self.newest = second;
    }

    fn total(&self) -> u64 {
        self.buckets.iter().sum()
    }
}

/// Handled messages per source (`inbox:<queue>`, `amqp:<queue>`) over the last minute.
#[derive(Debug)]
pub struct Throughput {
    started: Instant,
    sources: Mutex<BTreeMap<String, Window>>,
}

impl Default for Throughput {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            sources: Mutex::default(),
        }
    }
}

impl Throughput {
    /// Count the messages of a settled `batch` that every plugin handled, by queue.
    pub fn record_handled(&self, batch: &[Settlement]) {
        let mut handled: Vec<(&Envelope, u64)> = Vec::new();
        let all_handled = |s: &&Settlement| {
            s.refused.is_none()
                && s.results
                    .iter()
                    .all(|r| matches!(r.verdict, Verdict::Handled(_)))
        };
        for s in batch.iter().filter(all_handled) {
            match handled.iter_mut().find(|(m, _)| m.same_queue(&s.message)) {
                Some((_, n)) => *n += 1,
                None => handled.push((&s.message, 1)),
            }
        }
        let second = self.started.elapsed().as_secs();
        for (message, n) in handled {
            self.record_at(second, &message.source(), n);
        }
    }

    /// Messages handled in the last minute, by source; sources with none are forgotten.
    pub fn last_minute(&self) -> Vec<(String, u64)> {
        self.last_minute_at(self.started.elapsed().as_secs())
    }

    fn record_at(&self, second: u64, source: &str, n: u64) {
        let mut sources = self.sources.lock().expect("throughput lock");
        if !sources.contains_key(source) {
            let window = Window {
                buckets: [0; WINDOW],
                newest: second,
            };
            sources.insert(source.to_owned(), window);
        }
        let window = sources.get_mut(source).expect("inserted above");
        window.advance(second);
        window.buckets[second as usize % WINDOW] += n;
    }

    fn last_minute_at(&self, second: u64) -> Vec<(String, u64)> {
        let mut sources = self.sources.lock().expect("throughput lock");
        sources.retain(|_, window| {
            window.advance(second);
            window.total() > 0
        });
        sources
            .iter()
            .map(|(source, window)| (source.clone(), window.total()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_the_last_sixty_seconds_and_forgets_idle_sources() {
        let t = Throughput::default();
        t.record_at(0, "inbox:a", 5);
        t.record_at(30, "inbox:a", 2);
        t.record_at(30, "amqp:b", 1);
        t.record_at(59, "inbox:a", 3);
        assert_eq!(
            t.last_minute_at(59),
            [("amqp:b".to_owned(), 1), ("inbox:a".to_owned(), 10)]
        );
        // Second 60 leaves second 0 behind; 89 leaves 30 behind.
        assert_eq!(
            t.last_minute_at(60),
            [("amqp:b".to_owned(), 1), ("inbox:a".to_owned(), 5)]
        );
        assert_eq!(t.last_minute_at(90), [("inbox:a".to_owned(), 3)]);
        assert_eq!(t.last_minute_at(500), []);
        t.record_at(501, "inbox:a", 4);
        assert_eq!(t.last_minute_at(501), [("inbox:a".to_owned(), 4)]);
    }
}
