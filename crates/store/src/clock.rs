//! Where the raft loop and the lessor read the time. A running member uses
//! the system's monotonic clock; the deterministic simulation moves time by
//! hand, so that a seed fixes every deadline the loop and the lessor compute.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Clone, Default)]
pub struct Clock {
    /// `None`: the system clock. Otherwise a fixed origin and the simulated
    /// time since it, in nanoseconds, which only the simulation advances.
    simulated: Option<(Instant, Arc<AtomicU64>)>,
}

impl Clock {
    pub fn system() -> Clock {
        Clock { simulated: None }
    }

    /// A clock that stands still until [`Clock::advance`] moves it.
    pub fn simulated() -> Clock {
        Clock {
            simulated: Some((Instant::now(), Arc::new(AtomicU64::new(0)))),
        }
    }

    pub fn now(&self) -> Instant {
        match &self.simulated {
            None => Instant::now(),
            Some((origin, nanos)) => *origin + Duration::from_nanos(nanos.load(Ordering::Acquire)),
        }
    }

    /// Simulated time since the clock was made (zero for the system clock).
    pub fn elapsed(&self) -> Duration {
        match &self.simulated {
            None => Duration::ZERO,
            Some((_, nanos)) => Duration::from_nanos(nanos.load(Ordering::Acquire)),
        }
    }

    /// Moves a simulated clock forward; the system clock ignores it.
    pub fn advance(&self, by: Duration) {
        if let Some((_, nanos)) = &self.simulated {
            nanos.fetch_add(by.as_nanos() as u64, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_simulated_clock_moves_only_when_advanced_and_clones_share_it() {
        let clock = Clock::simulated();
        let start = clock.now();
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(clock.now(), start);
        let shared = clock.clone();
        shared.advance(Duration::from_secs(3));
        assert_eq!(clock.now() - start, Duration::from_secs(3));
        assert_eq!(clock.elapsed(), Duration::from_secs(3));
    }
}
