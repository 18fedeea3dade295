//! The closed-loop driver: each client task takes the next request number,
//! waits for its slot when `--rate` is set, issues it, records its latency, and
//! repeats until `--total` requests have been issued.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::progress;
use crate::report::Recorder;

/// One request in flight; it resolves to the index of the class of request it
/// was (0 for workloads with one kind of request).
pub type Call<'a> = Pin<Box<dyn Future<Output = Result<usize, tonic::Status>> + Send + 'a>>;

/// What to run and how fast.
pub struct Plan {
    pub label: String,
    pub total: u64,
    /// Requests per second over all clients; 0 means as fast as they go.
    pub rate: u64,
    /// How many kinds of request `call` reports (and recorders returned).
    pub n_classes: usize,
}

/// Runs `plan.total` calls over one task per client state, and returns one
/// merged recorder per class and the wall-clock time from first to last.
pub async fn run<S, F>(plan: Plan, states: Vec<S>, call: F) -> (Vec<Recorder>, Duration)
where
    S: Send + 'static,
    F: for<'a> Fn(&'a mut S, u64) -> Call<'a> + Send + Sync + 'static,
{
    let bar = progress::bar(&plan.label, plan.total);
    let next_request = Arc::new(AtomicU64::new(0));
    let call = Arc::new(call);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(states.len());
    for mut state in states {
        let next_request = Arc::clone(&next_request);
        let call = Arc::clone(&call);
        let bar = bar.clone();
        let (total, rate, n_classes) = (plan.total, plan.rate, plan.n_classes);
        tasks.push(tokio::spawn(async move {
            let mut recorders = vec![Recorder::new(); n_classes];
            loop {
                let request_idx = next_request.fetch_add(1, Ordering::Relaxed);
                if request_idx >= total {
                    break;
                }
                if rate > 0 {
                    let slot = Duration::from_secs_f64(request_idx as f64 / rate as f64);
                    tokio::time::sleep_until(started + slot).await;
                }
                let request_started = Instant::now();
                match call(&mut state, request_idx).await {
                    Ok(class) => recorders[class].record(request_started.elapsed()),
                    // Errors are counted once, under the first class.
                    Err(status) => recorders[0].record_error(status_text(&status)),
                }
                bar.inc(1);
            }
            recorders
        }));
    }
    let mut merged = vec![Recorder::new(); plan.n_classes];
    for task in tasks {
        match task.await {
            Ok(recorders) => {
                for (merged, recorder) in merged.iter_mut().zip(&recorders) {
                    merged.merge(recorder);
                }
            }
            Err(error) => merged[0].record_error(format!("client task failed: {error}")),
        }
    }
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    (merged, elapsed)
}

/// How an error is counted in the error distribution.
pub fn status_text(status: &tonic::Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
}
