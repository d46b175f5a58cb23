//! What a soak prints: steps by kind, violations, the worst convergence time per step kind,
//! and the recovery figures measured on the way (docs/reliability.md quotes them).

use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Debug, Default)]
pub struct Report {
    pub mode: String,
    pub seed: u64,
    pub elapsed: Duration,
    /// Steps done, by kind.
    pub steps: BTreeMap<&'static str, u64>,
    /// Worst time from the end of a step until every invariant held, by kind.
    pub worst: BTreeMap<&'static str, Duration>,
    /// Recovery figures, by name: (count, worst, sum) to print worst and mean.
    pub figures: BTreeMap<String, (u64, Duration, Duration)>,
    /// Counted outcomes (e.g. connections re-created after a monitor restart), by name.
    pub counts: BTreeMap<String, u64>,
    pub violations: Vec<String>,
    /// What helps to understand a violation (ends of logs).
    pub notes: Vec<String>,
    /// The most tunnels a restarted IKE daemon got back in one go.
    pub most_tunnels_restored: usize,
    pub max_fds: usize,
    pub max_rss_kb: u64,
    pub file_reads: u64,
}

impl Report {
    pub fn step(&mut self, kind: &'static str, took: Duration) {
        *self.steps.entry(kind).or_default() += 1;
        let w = self.worst.entry(kind).or_default();
        *w = (*w).max(took);
    }

    pub fn figure(&mut self, name: &str, took: Duration) {
        let f = self.figures.entry(name.to_owned()).or_default();
        f.0 += 1;
        f.1 = f.1.max(took);
        f.2 += took;
    }

    pub fn count(&mut self, name: &str, n: u64) {
        *self.counts.entry(name.to_owned()).or_default() += n;
    }

    pub fn print(&self) {
        let total: u64 = self.steps.values().sum();
        println!(
            "chaos[{}]: seed {}, {total} steps in {:.0?}, {} violations",
            self.mode,
            self.seed,
            self.elapsed,
            self.violations.len()
        );
        for (k, n) in &self.steps {
            println!(
                "  step {k:<14} {n:>5}  worst convergence {:>8.2?}",
                self.worst[k]
            );
        }
        for (k, (n, worst, sum)) in &self.figures {
            println!(
                "  figure {k:<40} n={n:<4} mean {:>8.2?} worst {worst:>8.2?}",
                *sum / (*n).max(1) as u32
            );
        }
        if self.most_tunnels_restored > 0 {
            println!(
                "  (IKE daemon restores with up to {} tunnels)",
                self.most_tunnels_restored
            );
        }
        for (k, n) in &self.counts {
            println!("  count  {k:<40} {n}");
        }
        println!(
            "  monitor: at most {} open fds, {} KiB RSS; saved-versions files read {} times",
            self.max_fds, self.max_rss_kb, self.file_reads
        );
        for v in &self.violations {
            println!("  VIOLATION {v}");
        }
        for n in &self.notes {
            println!("  {n}");
        }
    }
}
