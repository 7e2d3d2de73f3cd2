//! What a bench run costs in CPU, this process (the client: wharf or a baseline loop) and
//! each server apart, from `/proc`; and what that CPU allows on this machine's cores and
//! with every process on a machine of its own.

/// CPU seconds used so far by this process and by the processes of each name in
/// `servers` (for PostgreSQL, the server's backends and background workers), from `/proc`
/// (USER_HZ = 100 on Linux).
fn cpu_seconds(servers: &[&str]) -> (f64, Vec<f64>) {
    fn ticks(stat: &str) -> Option<u64> {
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
    }
    let own = ticks(&std::fs::read_to_string("/proc/self/stat").unwrap()).unwrap();
    let mut server = vec![0; servers.len()];
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let dir = entry.path();
        let Ok(comm) = std::fs::read_to_string(dir.join("comm")) else {
            continue;
        };
        let named = servers.iter().position(|s| *s == comm.trim());
        if let (Some(i), Ok(stat)) = (named, std::fs::read_to_string(dir.join("stat"))) {
            server[i] += ticks(&stat).unwrap_or(0);
        }
    }
    let seconds = |t: u64| t as f64 / 100.0;
    (seconds(own), server.into_iter().map(seconds).collect())
}

/// Server processes of PostgreSQL and of RabbitMQ (the Erlang VM).
pub const POSTGRES: &[&str] = &["postgres"];
pub const RABBITMQ: &[&str] = &["beam.smp"];
pub const BOTH: &[&str] = &["postgres", "beam.smp"];

/// Cores of one machine here; the three-machine estimate gives each process as many.
const CORES: f64 = 2.0;

/// CPU used by some work, client (this process) and each server, in ms per 1,000
/// messages (= us per message).
pub struct CpuCost {
    pub client: f64,
    pub servers: Vec<f64>,
}

impl CpuCost {
    /// The CPU `work` (handling `messages` messages) costs this process and `servers`.
    pub async fn of<T>(
        servers: &[&str],
        messages: usize,
        work: impl std::future::Future<Output = T>,
    ) -> (T, CpuCost) {
        let (client, server) = cpu_seconds(servers);
        let done = work.await;
        let (client_after, server_after) = cpu_seconds(servers);
        let per_1000 = 1e6 / messages as f64;
        let cost = CpuCost {
            client: (client_after - client) * per_1000,
            servers: server_after
                .iter()
                .zip(&server)
                .map(|(after, before)| (after - before) * per_1000)
                .collect(),
        };
        (done, cost)
    }

    fn server(&self) -> f64 {
        self.servers.iter().sum()
    }

    fn total(&self) -> f64 {
        self.client + self.server()
    }

    /// Messages/s if this work had the machine's cores to itself.
    fn ceiling(&self) -> f64 {
        CORES * 1e6 / self.total()
    }

    /// Messages/s if the client and each server had a machine of their own (as many
    /// cores as this one) and were kept busy: the busiest machine's limit.
    fn apart(&self) -> f64 {
        let busiest = self.servers.iter().fold(self.client, |a, b| a.max(*b));
        CORES * 1e6 / busiest
    }
}

impl std::fmt::Display for CpuCost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.0} ms CPU per 1,000 (server {:.0} + client {:.0}; 2-core ceiling {:.0}/s)",
            self.total(),
            self.server(),
            self.client,
            self.ceiling()
        )
    }
}

/// Print what wharf (`wharf`) and its baseline (`base`) would do with each process on a
/// machine of its own, from the CPU they used here.
pub fn print_apart(what: &str, wharf: &CpuCost, base: &CpuCost, target: f64) {
    println!(
        "{what} with host and servers on machines of their own ({CORES} cores each, CPU-bound, from this run's CPU): wharf {:.0}/s, baseline {:.0}/s = {:.2}x (target >= {target:.2}x)",
        wharf.apart(),
        base.apart(),
        wharf.apart() / base.apart()
    );
}
