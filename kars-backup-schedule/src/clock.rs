//! Time, as the scheduler sees it: the system clock, or a manual clock for tests.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::watch;

/// A source of wall-clock time that can also wait for an instant.
///
/// # Contract
/// - [`now`](Clock::now) is the current UTC time.
/// - [`sleep_until`](Clock::sleep_until) returns once `now() >= deadline` (at once if that is
///   already true). It is cancel-safe: dropping the future just stops waiting.
#[async_trait]
pub trait Clock: Send + Sync + Debug + 'static {
    /// The current time.
    fn now(&self) -> DateTime<Utc>;

    /// Waits until `now() >= deadline`.
    async fn sleep_until(&self, deadline: DateTime<Utc>);
}

/// A shared clock.
pub type DynClock = Arc<dyn Clock>;

#[async_trait]
impl<T: Clock + ?Sized> Clock for Arc<T> {
    fn now(&self) -> DateTime<Utc> {
        (**self).now()
    }
    async fn sleep_until(&self, deadline: DateTime<Utc>) {
        (**self).sleep_until(deadline).await
    }
}

/// The system's wall clock.
///
/// Sleeps in steps of at most a minute and re-reads the wall clock after each, so a clock that is
/// stepped (NTP, suspend and resume) delays a run by at most a minute.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl SystemClock {
    /// The longest single sleep before the wall clock is read again.
    pub const MAX_STEP: std::time::Duration = std::time::Duration::from_secs(60);
}

#[async_trait]
impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    async fn sleep_until(&self, deadline: DateTime<Utc>) {
        loop {
            let left = deadline - Utc::now();
            let Ok(left) = left.to_std() else { return };
            if left.is_zero() {
                return;
            }
            tokio::time::sleep(left.min(Self::MAX_STEP)).await;
        }
    }
}

/// A clock that only moves when told to: tests set or advance it and never sleep.
///
/// Clones share one time. Tasks blocked in [`sleep_until`](Clock::sleep_until) wake as soon
/// as the clock is set at or past their deadline.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use chrono::{TimeDelta, TimeZone, Utc};
/// use kars_backup_schedule::{Clock, ManualClock};
///
/// let clock = ManualClock::new(Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap());
/// let deadline = clock.now() + TimeDelta::hours(2);
/// let waiter = { let c = clock.clone(); tokio::spawn(async move { c.sleep_until(deadline).await }) };
/// clock.advance(TimeDelta::hours(2));
/// waiter.await.unwrap();
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct ManualClock {
    inner: Arc<ManualInner>,
}

#[derive(Debug)]
struct ManualInner {
    now: watch::Sender<DateTime<Utc>>,
    sleepers: watch::Sender<usize>,
}

impl ManualClock {
    /// A clock that reads `start` until moved.
    pub fn new(start: DateTime<Utc>) -> Self {
        ManualClock {
            inner: Arc::new(ManualInner {
                now: watch::Sender::new(start),
                sleepers: watch::Sender::new(0),
            }),
        }
    }

    /// Sets the time (it may also go backwards, as wall clocks do).
    pub fn set(&self, now: DateTime<Utc>) {
        self.inner.now.send_replace(now);
    }

    /// Moves the time forward by `by`.
    pub fn advance(&self, by: TimeDelta) {
        self.inner.now.send_modify(|t| *t += by);
    }

    /// How many tasks are blocked in `sleep_until` right now.
    pub fn sleepers(&self) -> usize {
        *self.inner.sleepers.borrow()
    }

    /// Waits until at least `count` tasks are blocked in `sleep_until`.
    pub async fn wait_for_sleepers(&self, count: usize) {
        let mut rx = self.inner.sleepers.subscribe();
        // The sender lives in `self`, so the channel never closes while we wait.
        let _ = rx.wait_for(|n| *n >= count).await;
    }
}

struct SleeperGuard<'a>(&'a watch::Sender<usize>);

impl Drop for SleeperGuard<'_> {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

#[async_trait]
impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.inner.now.borrow()
    }

    async fn sleep_until(&self, deadline: DateTime<Utc>) {
        let mut rx = self.inner.now.subscribe();
        if *rx.borrow_and_update() >= deadline {
            return;
        }
        self.inner.sleepers.send_modify(|n| *n += 1);
        let _guard = SleeperGuard(&self.inner.sleepers);
        let _ = rx.wait_for(|t| *t >= deadline).await;
    }
}
