//! The raft loop's inbox: a queue with many senders and one receiver that
//! sleeps on a condition variable as soon as the queue is empty.
//!
//! crossbeam's channel, used before, spins and then calls `sched_yield` up to
//! a few times before it sleeps; on a member whose raft thread wakes for every
//! batch of requests that was thousands of system calls a second, and on this
//! project's 2-core VMs a measurable share of a member's CPU (BENCHMARKS.md).
//! The receiver here takes everything queued with one lock.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

struct State<T> {
    queue: VecDeque<T>,
    senders: usize,
    receiver_alive: bool,
    receiver_sleeping: bool,
}

struct Shared<T> {
    state: Mutex<State<T>>,
    wake: Condvar,
}

/// A new, empty inbox.
pub fn channel<T>() -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            queue: VecDeque::new(),
            senders: 1,
            receiver_alive: true,
            receiver_sleeping: false,
        }),
        wake: Condvar::new(),
    });
    (
        Sender {
            shared: shared.clone(),
        },
        Receiver { shared },
    )
}

/// The receiver is gone; the value comes back.
#[derive(Debug)]
pub struct SendError<T>(pub T);

#[derive(Debug, PartialEq, Eq)]
pub enum RecvTimeoutError {
    Timeout,
    /// Every sender is gone and the queue is empty.
    Disconnected,
}

pub struct Sender<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Sender<T> {
    /// Queues `value`, waking the receiver if it sleeps.
    pub fn send(&self, value: T) -> Result<(), SendError<T>> {
        let mut state = self.shared.state.lock();
        if !state.receiver_alive {
            return Err(SendError(value));
        }
        state.queue.push_back(value);
        let sleeping = state.receiver_sleeping;
        drop(state);
        if sleeping {
            self.shared.wake.notify_one();
        }
        Ok(())
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Sender<T> {
        self.shared.state.lock().senders += 1;
        Sender {
            shared: self.shared.clone(),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let mut state = self.shared.state.lock();
        state.senders -= 1;
        if state.senders == 0 {
            drop(state);
            self.shared.wake.notify_one();
        }
    }
}

pub struct Receiver<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Receiver<T> {
    /// Moves up to `max` queued values to `out` without waiting; returns how many.
    pub fn take(&self, out: &mut VecDeque<T>, max: usize) -> usize {
        let mut state = self.shared.state.lock();
        let n = state.queue.len().min(max);
        if n == state.queue.len() {
            // Swap whole queues: no copying, and both keep their capacity.
            if out.is_empty() {
                std::mem::swap(out, &mut state.queue);
            } else {
                out.append(&mut state.queue);
            }
        } else {
            out.extend(state.queue.drain(..n));
        }
        n
    }

    /// Waits until something is queued or `timeout` passes, then moves up to
    /// `max` queued values to `out`.
    pub fn wait_take(
        &self,
        out: &mut VecDeque<T>,
        max: usize,
        timeout: Duration,
    ) -> Result<usize, RecvTimeoutError> {
        let deadline = Instant::now() + timeout;
        {
            let mut state = self.shared.state.lock();
            while state.queue.is_empty() {
                if state.senders == 0 {
                    return Err(RecvTimeoutError::Disconnected);
                }
                state.receiver_sleeping = true;
                let timed_out = self
                    .shared
                    .wake
                    .wait_until(&mut state, deadline)
                    .timed_out();
                state.receiver_sleeping = false;
                if timed_out && state.queue.is_empty() {
                    return Err(RecvTimeoutError::Timeout);
                }
            }
        }
        Ok(self.take(out, max))
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let mut state = self.shared.state.lock();
        state.receiver_alive = false;
        state.queue.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_arrive_in_order_and_in_bounded_batches() {
        let (sender, receiver) = channel();
        for value in 0..10 {
            sender.send(value).unwrap();
        }
        let mut out = VecDeque::new();
        assert_eq!(receiver.take(&mut out, 4), 4);
        assert_eq!(receiver.take(&mut out, 100), 6);
        assert_eq!(out, (0..10).collect::<VecDeque<_>>());
        assert_eq!(receiver.take(&mut out, 100), 0);
    }

    #[test]
    fn a_sleeping_receiver_wakes_for_a_value_from_another_thread() {
        let (sender, receiver) = channel();
        let started = Instant::now();
        let thread = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            sender.send(7).unwrap();
        });
        let mut out = VecDeque::new();
        assert_eq!(
            receiver.wait_take(&mut out, 10, Duration::from_secs(10)),
            Ok(1)
        );
        assert_eq!(out, [7]);
        assert!(started.elapsed() < Duration::from_secs(5));
        thread.join().unwrap();
    }

    #[test]
    fn timeouts_and_disconnection_are_reported() {
        let (sender, receiver) = channel::<u8>();
        let mut out = VecDeque::new();
        assert_eq!(
            receiver.wait_take(&mut out, 10, Duration::from_millis(20)),
            Err(RecvTimeoutError::Timeout)
        );
        let second = sender.clone();
        drop(sender);
        second.send(1).unwrap();
        drop(second);
        // What was queued before the last sender left is still delivered.
        assert_eq!(
            receiver.wait_take(&mut out, 10, Duration::from_secs(1)),
            Ok(1)
        );
        assert_eq!(
            receiver.wait_take(&mut out, 10, Duration::from_secs(1)),
            Err(RecvTimeoutError::Disconnected)
        );
        let (sender, receiver) = channel();
        drop(receiver);
        assert!(sender.send(3).is_err(), "no receiver, no send");
    }
}
