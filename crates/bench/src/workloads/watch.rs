//! The watch workloads. `watch-latency` gives every client a watcher on one
//! key and measures, for each put, the time from sending the put until each
//! watcher sees its event. `watch` creates many watchers over few streams,
//! then puts to the watched keys and measures creation and delivery.
//!
//! Each put's value starts with the put's number, so a watcher can tell which
//! put an event belongs to without any shared ordering.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use clap::Args;
use futures::channel::mpsc;
use proto::etcdserverpb::watch_client::WatchClient;
use proto::etcdserverpb::{
    PutRequest, WatchCreateRequest, WatchRequest, WatchResponse, watch_request,
};
use tokio::sync::watch as signal;
use tokio::time::Instant;
use tonic::Status;
use tonic::codec::Streaming;
use tonic::transport::Channel;

use crate::connect::{Connections, call_error};
use crate::keys::{self, KeySpace};
use crate::progress;
use crate::report::{Recorder, Section, Summary};
use crate::runner::{self, Plan, status_text};

/// How long delivery may stall after the last put before missing events are
/// counted as errors.
const DELIVERY_GRACE: Duration = Duration::from_secs(5);

#[derive(Args, Debug, Clone)]
pub struct WatchLatencyArgs {
    /// Total number of put requests.
    #[arg(long, default_value_t = 1000)]
    pub put_total: u64,
    /// Number of puts per second.
    #[arg(long, default_value_t = 100)]
    pub put_rate: u64,
    /// Size of the watched key.
    #[arg(long, default_value_t = 32)]
    pub key_size: usize,
    /// Size of each put's value (at least 8: it carries the put's number).
    #[arg(long, default_value_t = 32)]
    pub val_size: usize,
}

#[derive(Args, Debug, Clone)]
pub struct WatchArgs {
    /// Number of watch streams.
    #[arg(long, default_value_t = 10)]
    pub streams: usize,
    /// Number of watchers on each stream.
    #[arg(long, default_value_t = 100)]
    pub watch_per_stream: usize,
    /// Total number of put requests, issued by `--clients` clients.
    #[arg(long, default_value_t = 1000)]
    pub put_total: u64,
    /// Maximum puts per second (0 is no limit).
    #[arg(long, default_value_t = 0)]
    pub put_rate: u64,
    /// Key size of the watched keys.
    #[arg(long, default_value_t = 32)]
    pub key_size: usize,
    /// Size of each put's value (at least 8: it carries the put's number).
    #[arg(long, default_value_t = 32)]
    pub val_size: usize,
    /// Number of distinct keys watched and put.
    #[arg(long, default_value_t = 1)]
    pub key_space_size: u64,
    /// Assign keys to watchers in order instead of at random.
    #[arg(long)]
    pub sequential_keys: bool,
}

pub async fn watch_latency(
    connections: &Connections,
    args: &WatchLatencyArgs,
) -> anyhow::Result<Summary> {
    anyhow::ensure!(args.val_size >= 8, "--val-size must be at least 8");
    anyhow::ensure!(args.put_rate >= 1, "--put-rate must be at least 1");
    let key = keys::random_value(args.key_size.max(1));
    // Every client's watcher, created concurrently.
    let mut openings = Vec::with_capacity(connections.n_clients);
    for client_idx in 0..connections.n_clients {
        let client = connections.watch_client(client_idx);
        let create = WatchCreateRequest {
            key: key.clone(),
            ..Default::default()
        };
        openings.push(tokio::spawn(async move {
            let started = Instant::now();
            open_stream(client, create)
                .await
                .map(|stream| (stream, started.elapsed()))
        }));
    }
    let mut streams = Vec::with_capacity(openings.len());
    let mut creation = Recorder::new();
    for opening in openings {
        match opening.await? {
            Ok((stream, latency)) => {
                creation.record(latency);
                streams.push(stream);
            }
            Err(status) => {
                // Stop the streams already open before reporting.
                drop(streams);
                return Err(call_error("watch", status));
            }
        }
    }
    let clock = Arc::new(PutClock::new(args.put_total));
    let n_watchers = streams.len() as u64;
    let delivery = Delivery::start(streams, Arc::clone(&clock));

    let mut kv = connections.kv[0].clone();
    let mut puts = Recorder::new();
    let bar = progress::bar("watch-latency", args.put_total);
    let puts_started = Instant::now();
    for put_idx in 0..args.put_total {
        let slot = Duration::from_secs_f64(put_idx as f64 / args.put_rate as f64);
        tokio::time::sleep_until(puts_started + slot).await;
        let request = PutRequest {
            key: key.clone(),
            value: clock.value(put_idx, args.val_size),
            ..Default::default()
        };
        let started = Instant::now();
        clock.mark(put_idx);
        match kv.put(request).await {
            Ok(_) => {
                puts.record(started.elapsed());
                delivery.counts.expect(n_watchers);
            }
            Err(status) => puts.record_error(status_text(&status)),
        }
        bar.inc(1);
    }
    let put_duration = puts_started.elapsed();
    bar.finish_and_clear();
    let (events, missing) = delivery.finish().await;
    let events_duration = puts_started.elapsed();
    let mut events = events;
    if missing > 0 {
        for _ in 0..missing {
            events.record_error("event not delivered");
        }
    }
    Ok(Summary::new("watch-latency")
        .section(Section::new("watch-latency", events, events_duration))
        .section(Section::new("put", puts, put_duration))
        .section(Section::new("watch creation", creation, put_duration))
        .detail("watchers", connections.n_clients as u64))
}

pub async fn watch(connections: &Connections, args: &WatchArgs) -> anyhow::Result<Summary> {
    anyhow::ensure!(args.val_size >= 8, "--val-size must be at least 8");
    anyhow::ensure!(args.streams >= 1, "--streams must be at least 1");
    anyhow::ensure!(
        args.watch_per_stream >= 1,
        "--watch-per-stream must be at least 1"
    );
    let key_space = KeySpace {
        key_size: args.key_size,
        key_space_size: args.key_space_size,
        sequential: args.sequential_keys,
    };
    key_space.check()?;
    // How many watchers each key has: a put to key k yields that many events.
    let watchers_per_key: Arc<Vec<AtomicU64>> = Arc::new(
        (0..key_space.key_space_size)
            .map(|_| AtomicU64::new(0))
            .collect(),
    );

    let n_watchers = args.streams * args.watch_per_stream;
    let bar = progress::bar("watch create", n_watchers as u64);
    let creation_started = Instant::now();
    let mut openings = Vec::with_capacity(args.streams);
    for stream_idx in 0..args.streams {
        let client = connections.watch_client(stream_idx);
        let watchers_per_key = Arc::clone(&watchers_per_key);
        let watch_per_stream = args.watch_per_stream;
        let bar = bar.clone();
        openings.push(tokio::spawn(async move {
            let mut recorder = Recorder::new();
            let mut stream: Option<WatchStream> = None;
            for watcher_idx in 0..watch_per_stream {
                let key_number =
                    key_space.key_number((stream_idx * watch_per_stream + watcher_idx) as u64);
                let create = WatchCreateRequest {
                    key: keys::key_bytes(key_number, key_space.key_size),
                    ..Default::default()
                };
                let started = Instant::now();
                let created = match stream.as_mut() {
                    None => open_stream(client.clone(), create).await.map(|opened| {
                        stream = Some(opened);
                    }),
                    Some(open) => open.create(create).await,
                };
                created?;
                recorder.record(started.elapsed());
                watchers_per_key[key_number as usize].fetch_add(1, Ordering::Relaxed);
                bar.inc(1);
            }
            Ok::<_, Status>((stream.expect("at least one watcher per stream"), recorder))
        }));
    }
    let mut streams = Vec::with_capacity(args.streams);
    let mut creation = Recorder::new();
    for opening in openings {
        let (stream, recorder) = opening
            .await?
            .map_err(|status| call_error("watch", status))?;
        streams.push(stream);
        creation.merge(&recorder);
    }
    let creation_duration = creation_started.elapsed();
    bar.finish_and_clear();

    let clock = Arc::new(PutClock::new(args.put_total));
    let delivery = Delivery::start(streams, Arc::clone(&clock));
    let counts = Arc::clone(&delivery.counts);
    let plan = Plan {
        label: "watch put".into(),
        total: args.put_total,
        rate: args.put_rate,
        n_classes: 1,
    };
    let val_size = args.val_size;
    let puts_started = Instant::now();
    let (put_recorders, put_duration) =
        runner::run(plan, connections.kv_clients(), move |kv, put_idx| {
            let key_number = key_space.key_number(put_idx);
            let request = PutRequest {
                key: keys::key_bytes(key_number, key_space.key_size),
                value: clock.value(put_idx, val_size),
                ..Default::default()
            };
            clock.mark(put_idx);
            let watchers = watchers_per_key[key_number as usize].load(Ordering::Relaxed);
            let counts = Arc::clone(&counts);
            Box::pin(async move {
                kv.put(request).await?;
                counts.expect(watchers);
                Ok(0)
            })
        })
        .await;
    let (mut events, missing) = delivery.finish().await;
    for _ in 0..missing {
        events.record_error("event not delivered");
    }
    let events_duration = puts_started.elapsed();
    let [puts] = <[_; 1]>::try_from(put_recorders).expect("one class");
    Ok(Summary::new("watch")
        .section(Section::new("watch events", events, events_duration))
        .section(Section::new("watch put", puts, put_duration))
        .section(Section::new("watch creation", creation, creation_duration))
        .detail("watchers", n_watchers as u64)
        .detail("streams", args.streams as u64))
}

/// One open Watch stream.
struct WatchStream {
    // Kept so the request side stays open: closing it ends the stream.
    requests: mpsc::UnboundedSender<WatchRequest>,
    responses: Streaming<WatchResponse>,
}

/// Opens a Watch stream whose first request is `create`, and waits until the
/// watcher is created.
async fn open_stream(
    mut client: WatchClient<Channel>,
    create: WatchCreateRequest,
) -> Result<WatchStream, Status> {
    let (requests, receiver) = mpsc::unbounded();
    // Queued before the call: the server answers (and so sends its response
    // headers, which the call waits for) only once it has a request.
    requests
        .unbounded_send(create_request(create))
        .map_err(|_| Status::internal("watch request channel closed"))?;
    let responses = client.watch(receiver).await?.into_inner();
    let mut stream = WatchStream {
        requests,
        responses,
    };
    stream.wait_created().await?;
    Ok(stream)
}

impl WatchStream {
    async fn create(&mut self, create: WatchCreateRequest) -> Result<(), Status> {
        self.requests
            .unbounded_send(create_request(create))
            .map_err(|_| Status::internal("watch request channel closed"))?;
        self.wait_created().await
    }

    async fn wait_created(&mut self) -> Result<(), Status> {
        loop {
            let Some(response) = self.responses.message().await? else {
                return Err(Status::unavailable(
                    "watch stream closed before the watcher was created",
                ));
            };
            if response.canceled {
                return Err(Status::failed_precondition(format!(
                    "watch canceled: {}",
                    response.cancel_reason
                )));
            }
            if response.created {
                return Ok(());
            }
        }
    }
}

fn create_request(create: WatchCreateRequest) -> WatchRequest {
    WatchRequest {
        request_union: Some(watch_request::RequestUnion::CreateRequest(create)),
    }
}

/// When each put was sent, so a watcher can time the put's event.
struct PutClock {
    origin: Instant,
    sent_nanos: Vec<AtomicU64>,
}

impl PutClock {
    fn new(n_puts: u64) -> Self {
        Self {
            origin: Instant::now(),
            sent_nanos: (0..n_puts).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// The value put number `put_idx` writes: its number, then random bytes.
    fn value(&self, put_idx: u64, size: usize) -> Bytes {
        let mut value = BytesMut::with_capacity(size);
        value.extend_from_slice(&put_idx.to_be_bytes());
        value.extend_from_slice(&keys::random_value(size - 8));
        value.freeze()
    }

    fn mark(&self, put_idx: u64) {
        let nanos = u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX);
        // Zero means "not sent"; a put at the origin itself counts as 1ns.
        self.sent_nanos[put_idx as usize].store(nanos.max(1), Ordering::Relaxed);
    }

    /// Time since the put whose value this is was sent, if it is one of ours.
    fn latency(&self, value: &[u8]) -> Option<Duration> {
        let put_idx = u64::from_be_bytes(value.get(..8)?.try_into().ok()?);
        let sent = self
            .sent_nanos
            .get(usize::try_from(put_idx).ok()?)?
            .load(Ordering::Relaxed);
        if sent == 0 {
            return None;
        }
        let now = u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX);
        Some(Duration::from_nanos(now.saturating_sub(sent)))
    }
}

/// How many events the successful puts owe the watchers, and how many arrived.
struct DeliveryCounts {
    expected: AtomicU64,
    /// Events received, a counter per receiving task: one shared counter
    /// would move between the CPUs' caches on every event.
    received: Vec<PerTask>,
}

/// A counter on a cache line of its own.
#[repr(align(128))]
#[derive(Default)]
struct PerTask(AtomicU64);

impl DeliveryCounts {
    fn new(n_tasks: usize) -> Self {
        Self {
            expected: AtomicU64::new(0),
            received: (0..n_tasks).map(|_| PerTask::default()).collect(),
        }
    }

    /// A put succeeded whose key `n_events` watchers watch.
    fn expect(&self, n_events: u64) {
        self.expected.fetch_add(n_events, Ordering::Relaxed);
    }

    fn received(&self) -> u64 {
        self.received
            .iter()
            .map(|counter| counter.0.load(Ordering::Relaxed))
            .sum()
    }
}

/// Event latencies a receiving task holds before it adds them to the shared
/// histogram: a histogram per task (1,000 of ~180 KiB) missed the CPU caches
/// on nearly every event.
const LATENCY_BATCH: usize = 512;

/// The tasks receiving events.
struct Delivery {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    stop: signal::Sender<bool>,
    counts: Arc<DeliveryCounts>,
    events: Arc<Mutex<Recorder>>,
}

impl Delivery {
    fn start(streams: Vec<WatchStream>, clock: Arc<PutClock>) -> Self {
        let (stop, stop_receiver) = signal::channel(false);
        let counts = Arc::new(DeliveryCounts::new(streams.len()));
        let events = Arc::new(Mutex::new(Recorder::new()));
        let tasks = streams
            .into_iter()
            .enumerate()
            .map(|(task_idx, stream)| {
                tokio::spawn(receive_events(
                    stream,
                    Arc::clone(&clock),
                    stop_receiver.clone(),
                    Arc::clone(&counts),
                    task_idx,
                    Arc::clone(&events),
                ))
            })
            .collect();
        Self {
            tasks,
            stop,
            counts,
            events,
        }
    }

    /// Waits until every owed event arrived, or delivery stalled for
    /// `DELIVERY_GRACE`; returns the event latencies and how many are missing.
    async fn finish(self) -> (Recorder, u64) {
        let expected = self.counts.expected.load(Ordering::Relaxed);
        let mut last_progress = (self.counts.received(), Instant::now());
        loop {
            let received = self.counts.received();
            if received >= expected {
                break;
            }
            if received != last_progress.0 {
                last_progress = (received, Instant::now());
            } else if last_progress.1.elapsed() > DELIVERY_GRACE {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ = self.stop.send(true);
        let mut failed = Vec::new();
        for task in self.tasks {
            if let Err(error) = task.await {
                failed.push(format!("watch task failed: {error}"));
            }
        }
        let mut events = std::mem::take(
            &mut *self
                .events
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for error in failed {
            events.record_error(error);
        }
        let received = self.counts.received();
        (events, expected.saturating_sub(received))
    }
}

async fn receive_events(
    mut stream: WatchStream,
    clock: Arc<PutClock>,
    mut stop: signal::Receiver<bool>,
    counts: Arc<DeliveryCounts>,
    task_idx: usize,
    events: Arc<Mutex<Recorder>>,
) {
    let received = &counts.received[task_idx].0;
    let mut latencies = Vec::with_capacity(LATENCY_BATCH);
    let mut error = None;
    // Stop is only ever set, so any change (or the sender going away) means stop.
    let mut stopped = std::pin::pin!(stop.changed());
    loop {
        tokio::select! {
            message = stream.responses.message() => match message {
                Ok(Some(response)) => {
                    for event in &response.events {
                        let Some(kv) = &event.kv else { continue };
                        if let Some(latency) = clock.latency(&kv.value) {
                            latencies.push(latency);
                            received.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    if latencies.len() >= LATENCY_BATCH {
                        record(&events, &mut latencies, None);
                    }
                }
                Ok(None) => break,
                Err(status) => {
                    error = Some(status_text(&status));
                    break;
                }
            },
            _ = &mut stopped => break,
        }
    }
    record(&events, &mut latencies, error);
    drop(stream.requests);
}

/// Adds a task's latencies (and its error) to the shared histogram.
fn record(events: &Mutex<Recorder>, latencies: &mut Vec<Duration>, error: Option<String>) {
    let mut events = events
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for latency in latencies.drain(..) {
        events.record(latency);
    }
    if let Some(error) = error {
        events.record_error(error);
    }
}
