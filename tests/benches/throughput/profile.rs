//! Where the host's CPU goes, by a sampling profiler: `perf record` samples this process
//! (every thread, user and kernel, call stacks unwound from DWARF) while one phase runs,
//! and each sample is charged to the part of the host its stack is in: walking from the
//! sampled frame towards the thread's root, the first frame a part claims decides (a
//! `malloc` called by `serde_json` called by the store is JSON's; a futex wait called by
//! tokio's scheduler is the scheduler's). The shares, times the phase's CPU per message
//! measured from `/proc`, give microseconds per message.
//!
//! Without a usable `perf` (not installed, not permitted) the bench says so and prints no
//! breakdown.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The parts of the host, each with the frame names it claims, in the order they are tried
/// on a frame. The runtime and the unclaimed rest are tried only when no frame of the
/// stack belongs to a part above them.
const PARTS: &[(&str, &[&str])] = &[
    (
        "sandbox (wasmtime: instantiate, call, drop; host functions)",
        &["wasmtime", "cranelift", "wasm[", "wharf_host::runtime"],
    ),
    ("SQL driver (sqlx: encode, decode, protocol)", &["sqlx"]),
    (
        "AMQP client (lapin: frames, deliveries, acks)",
        &["lapin", "amq_protocol"],
    ),
    (
        "Kafka client (rdkafka, librdkafka: fetch, decode, commit)",
        &["rdkafka", "rd_kafka"],
    ),
    ("logging/tracing", &["tracing", "opentelemetry"]),
    ("metrics", &["metrics"]),
    ("JSON (serde_json)", &["serde_json"]),
    ("envelopes", &["wharf_host::envelope"]),
    (
        "dispatch/routing (breakers, permits, verdicts)",
        &[
            "wharf_host::dispatch",
            "wharf_host::plugins",
            "wharf_host::outcome",
            "wharf_host::retry",
            "wharf_host::trace",
        ],
    ),
    ("store logic (claim, settle plan)", &["wharf_host::store"]),
    (
        "transport (inbox worker, AMQP and Kafka consumers)",
        &["wharf_host::transport"],
    ),
];

/// Tried in order after [`PARTS`] found nothing on the whole stack.
const FALLBACK: &[(&str, &[&str])] = &[
    (
        "tokio runtime (scheduling, parking, I/O readiness)",
        &["tokio", "mio"],
    ),
    ("bench harness", &["throughput::", "wharf_tests"]),
];

/// What a stack no part and no fallback claims is charged to.
const REST: &str = "rest (allocator, std, kernel, unresolved)";

/// Frames shown under each part: those that claimed the most of its samples.
const TOP_FRAMES: usize = 3;

/// A frame's function without its hash, cut to a line.
fn shorten(frame: &str) -> String {
    let frame = frame.split("::h").next().unwrap_or(frame);
    frame.chars().take(110).collect()
}

/// A `perf record` attached to this process.
pub struct Profile {
    perf: Child,
    data: PathBuf,
    _dir: tempfile::TempDir,
}

/// Samples per part of the host, and per frame that claimed them.
pub struct Breakdown {
    samples: BTreeMap<&'static str, BTreeMap<String, u64>>,
}

impl Profile {
    /// Start sampling this process, or say why it cannot be.
    pub fn start() -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("perf.data");
        let started = Command::new("perf")
            .args([
                "record",
                "--quiet",
                "-F",
                "4999",
                "--call-graph",
                "dwarf,16384",
                "-p",
            ])
            .arg(std::process::id().to_string())
            .arg("-o")
            .arg(&data)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn();
        let mut perf = match started {
            Ok(perf) => perf,
            Err(e) => {
                println!(
                    "profile: cannot run perf ({e}); install linux-perf for the CPU breakdown"
                );
                return None;
            }
        };
        // perf writes its header once it is attached.
        for _ in 0..100 {
            if std::fs::metadata(&data).is_ok_and(|m| m.len() > 0) {
                std::thread::sleep(Duration::from_millis(100));
                return Some(Self {
                    perf,
                    data,
                    _dir: dir,
                });
            }
            if let Ok(Some(status)) = perf.try_wait() {
                let out = perf.wait_with_output().unwrap();
                println!(
                    "profile: perf record exited ({status}): {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        perf.kill().ok();
        println!("profile: perf record did not attach within 5 s; no CPU breakdown");
        None
    }

    /// Stop sampling and charge every sample to its part.
    pub fn stop(mut self) -> Breakdown {
        let interrupted = Command::new("kill")
            .args(["-INT", &self.perf.id().to_string()])
            .status()
            .unwrap();
        assert!(interrupted.success(), "could not stop perf record");
        let status = self.perf.wait().unwrap();
        // perf record ends an interrupted recording by raising the signal again.
        assert!(
            status.success() || status.signal() == Some(2),
            "perf record failed: {status}"
        );
        let script = Command::new("perf")
            .args(["script", "--no-inline", "-F", "comm,ip,sym,dso", "-i"])
            .arg(&self.data)
            .output()
            .unwrap();
        assert!(
            script.status.success(),
            "perf script: {}",
            String::from_utf8_lossy(&script.stderr)
        );
        let mut samples = BTreeMap::new();
        let text = String::from_utf8_lossy(&script.stdout);
        for stack in text.split("\n\n").filter(|s| !s.trim().is_empty()) {
            // The first line names the thread; the frames follow, the sampled one first.
            let frames: Vec<&str> = stack.lines().skip(1).map(symbol).collect();
            let (part, frame) = part_of(&frames);
            *samples
                .entry(part)
                .or_insert_with(BTreeMap::new)
                .entry(frame.to_owned())
                .or_insert(0) += 1;
        }
        Breakdown { samples }
    }
}

/// The function of a `perf script` frame line (`<address> <function> (<object>)`).
fn symbol(line: &str) -> &str {
    let line = line.trim();
    let function = line.split_once(' ').map_or(line, |(_, rest)| rest);
    function.rsplit_once(" (").map_or(function, |(f, _)| f)
}

/// The part of the host a stack (sampled frame first) is charged to, and the frame that
/// decided it (the sampled one when none did).
fn part_of<'f>(frames: &[&'f str]) -> (&'static str, &'f str) {
    let claims = |names: &[&str], frame: &str| names.iter().any(|n| frame.contains(n));
    for frame in frames {
        if let Some((part, _)) = PARTS.iter().find(|(_, names)| claims(names, frame)) {
            return (part, frame);
        }
    }
    for (part, names) in FALLBACK {
        if let Some(frame) = frames.iter().find(|frame| claims(names, frame)) {
            return (part, frame);
        }
    }
    (REST, frames.first().copied().unwrap_or("[no frames]"))
}

impl Breakdown {
    /// Print each part's share and its microseconds of the `host_us` CPU per message, and
    /// the host's own time outside the sandbox beside `sandbox_alone_us`, the sandbox
    /// bench's figure (the machine's phase).
    pub fn print(&self, what: &str, host_us: f64, sandbox_alone_us: f64) {
        let of_part = |frames: &BTreeMap<String, u64>| frames.values().sum::<u64>();
        let total: u64 = self.samples.values().map(of_part).sum();
        if total == 0 {
            println!("{what}: perf took no samples; no CPU breakdown");
            return;
        }
        let us = |n: u64| host_us * n as f64 / total as f64;
        println!(
            "{what}: host CPU {host_us:.1} us/message, by part (perf, {total} samples, call stacks from DWARF):"
        );
        let mut parts: Vec<_> = self
            .samples
            .iter()
            .map(|(p, f)| (p, of_part(f), f))
            .collect();
        parts.sort_by_key(|p| std::cmp::Reverse(p.1));
        for (part, n, frames) in parts {
            println!(
                "  {:>6.2} us  {:>5.1}%  {part}",
                us(n),
                100.0 * n as f64 / total as f64
            );
            let mut frames: Vec<_> = frames.iter().collect();
            frames.sort_by(|a, b| b.1.cmp(a.1));
            for (frame, n) in frames.into_iter().take(TOP_FRAMES) {
                println!("  {:>17.2} us  {}", us(*n), shorten(frame));
            }
        }
        let sandbox = self.samples.get(PARTS[0].0).map_or(0, of_part);
        println!(
            "  host CPU outside the sandbox: {:.1} us/message (target <= 10 us); sandbox {:.1} us/message here, {sandbox_alone_us:.1} us alone (the machine's phase)",
            host_us - us(sandbox),
            us(sandbox)
        );
    }
}
