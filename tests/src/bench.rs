//! What the end-to-end bench binaries share: how many runs to make and how to print them.
//! Timing never decides a test; benches print figures for `docs/benchmarks.md`.

/// The number of runs a bench makes: `HERALD_BENCH_RUNS`, 10 by default.
pub fn runs() -> usize {
    std::env::var("HERALD_BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(10)
}

/// The median of `samples` (the upper one of an even count); sorts them.
pub fn median(samples: &mut [f64]) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// Prints `what: median M unit, max X unit over N runs (unit: each run, sorted)`.
pub fn summary(what: &str, unit: &str, mut samples: Vec<f64>) {
    if samples.is_empty() {
        println!("{what}: no run measured");
        return;
    }
    let median = median(&mut samples);
    let all: Vec<String> = samples.iter().map(|v| format!("{v:.0}")).collect();
    println!(
        "{what}: median {median:.0} {unit}, max {:.0} {unit} over {} runs ({unit}: {})",
        samples[samples.len() - 1],
        samples.len(),
        all.join(", ")
    );
}
