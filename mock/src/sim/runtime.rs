//! A deterministic runtime: one thread, virtual time, FIFO scheduling.
//!
//! Tasks run one at a time in the order they were woken; when no task can run, time jumps to
//! the earliest timer. Nothing depends on the wall clock or on thread scheduling, so the same
//! program (and seed) always runs the same way, and hours of retries and timeouts take
//! milliseconds. Implements the driver's [`Runtime`], so the real client runs on it.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use tikv_driver::runtime::{BoxFuture, Runtime};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Single-threaded: a poisoned lock means a task panicked, and the panic is re-raised by
    // the runner anyway.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

struct Task {
    future: Mutex<Option<BoxFuture<'static, ()>>>,
    queued: AtomicBool,
}

struct TaskWaker {
    id: u64,
    exec: Arc<Executor>,
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if let Some(task) = lock(&self.exec.tasks).get(&self.id) {
            if !task.queued.swap(true, Ordering::AcqRel) {
                lock(&self.exec.ready).push_back(self.id);
            }
        }
    }
}

#[derive(Default)]
struct Executor {
    tasks: Mutex<BTreeMap<u64, Arc<Task>>>,
    ready: Mutex<VecDeque<u64>>,
    timers: Mutex<BTreeMap<(Duration, u64), Waker>>,
    now: Mutex<Duration>,
    next_id: AtomicU64,
    polls: AtomicU64,
}

/// The simulation runtime. Clones share the executor.
#[derive(Clone, Default)]
pub struct SimRuntime {
    exec: Arc<Executor>,
}

impl fmt::Debug for SimRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimRuntime")
            .field("now", &*lock(&self.exec.now))
            .finish()
    }
}

/// Why a simulation stopped before its main task finished.
#[derive(Debug, PartialEq, Eq)]
pub enum SimStop {
    /// Every task waits and no timer is set: the program can never progress.
    Deadlock,
    /// Virtual time passed the limit.
    TimeLimit,
}

impl SimRuntime {
    /// A fresh runtime at virtual time zero.
    pub fn new() -> Self {
        SimRuntime::default()
    }

    /// Virtual time elapsed.
    pub fn elapsed(&self) -> Duration {
        *lock(&self.exec.now)
    }

    /// Task polls so far (a measure of work, and part of a run's fingerprint).
    pub fn polls(&self) -> u64 {
        self.exec.polls.load(Ordering::Relaxed)
    }

    fn spawn_boxed(&self, future: BoxFuture<'static, ()>) {
        let id = self.exec.next_id.fetch_add(1, Ordering::Relaxed);
        let task = Arc::new(Task {
            future: Mutex::new(Some(future)),
            queued: AtomicBool::new(true),
        });
        lock(&self.exec.tasks).insert(id, task);
        lock(&self.exec.ready).push_back(id);
    }

    /// Runs `main` (and everything it spawns) until `main` finishes; background tasks still
    /// pending then are dropped. Stops early on a deadlock or once virtual time passes
    /// `limit`.
    pub fn block_on<T: Send + 'static>(
        &self,
        main: impl Future<Output = T> + Send + 'static,
        limit: Duration,
    ) -> Result<T, SimStop> {
        let result: Arc<Mutex<Option<T>>> = Arc::new(Mutex::new(None));
        let slot = result.clone();
        self.spawn_boxed(Box::pin(async move {
            let value = main.await;
            *lock(&slot) = Some(value);
        }));
        loop {
            while let Some(id) = { lock(&self.exec.ready).pop_front() } {
                let Some(task) = lock(&self.exec.tasks).get(&id).cloned() else {
                    continue;
                };
                task.queued.store(false, Ordering::Release);
                let waker = Waker::from(Arc::new(TaskWaker {
                    id,
                    exec: self.exec.clone(),
                }));
                let mut cx = Context::from_waker(&waker);
                let mut slot = lock(&task.future);
                let done = match slot.as_mut() {
                    Some(f) => f.as_mut().poll(&mut cx).is_ready(),
                    None => true,
                };
                self.exec.polls.fetch_add(1, Ordering::Relaxed);
                if done {
                    *slot = None;
                    drop(slot);
                    lock(&self.exec.tasks).remove(&id);
                }
                if let Some(value) = lock(&result).take() {
                    self.shutdown();
                    return Ok(value);
                }
            }
            // Nothing runnable: jump to the next timer and wake everything due then.
            let next = lock(&self.exec.timers).keys().next().copied();
            let Some((deadline, _)) = next else {
                self.shutdown();
                return Err(SimStop::Deadlock);
            };
            if deadline > limit {
                self.shutdown();
                return Err(SimStop::TimeLimit);
            }
            *lock(&self.exec.now) = deadline;
            let due: Vec<Waker> = {
                let mut timers = lock(&self.exec.timers);
                let later = timers.split_off(&(deadline, u64::MAX));
                std::mem::replace(&mut *timers, later)
                    .into_values()
                    .collect()
            };
            for waker in due {
                waker.wake();
            }
        }
    }

    /// Drops every task (ending their futures) and timer.
    fn shutdown(&self) {
        let tasks = std::mem::take(&mut *lock(&self.exec.tasks));
        lock(&self.exec.ready).clear();
        lock(&self.exec.timers).clear();
        drop(tasks);
    }
}

/// A virtual-time sleep.
pub struct SimSleep {
    exec: Arc<Executor>,
    deadline: Duration,
    key: Option<(Duration, u64)>,
}

impl Future for SimSleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if *lock(&self.exec.now) >= self.deadline {
            return Poll::Ready(());
        }
        let key = match self.key {
            Some(key) => key,
            None => {
                let key = (
                    self.deadline,
                    self.exec.next_id.fetch_add(1, Ordering::Relaxed),
                );
                self.key = Some(key);
                key
            }
        };
        lock(&self.exec.timers).insert(key, cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for SimSleep {
    fn drop(&mut self) {
        if let Some(key) = self.key {
            lock(&self.exec.timers).remove(&key);
        }
    }
}

impl Runtime for SimRuntime {
    type Io = tokio::io::DuplexStream;
    type Sleep = SimSleep;

    fn spawn(&self, future: impl Future<Output = ()> + Send + 'static) {
        self.spawn_boxed(Box::pin(future));
    }

    fn sleep(&self, duration: Duration) -> SimSleep {
        let deadline = self.elapsed().saturating_add(duration);
        SimSleep {
            exec: self.exec.clone(),
            deadline,
            key: None,
        }
    }

    fn now(&self) -> tikv_core::Instant {
        tikv_core::Instant::from_origin(self.elapsed())
    }

    fn connect(&self, address: &str) -> BoxFuture<'static, io::Result<Self::Io>> {
        let address = address.to_string();
        Box::pin(async move {
            Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("no sockets in simulation (connect to {address})"),
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_time_jumps_and_tasks_interleave_deterministically() {
        let run = || {
            let rt = SimRuntime::new();
            let log = Arc::new(Mutex::new(Vec::new()));
            let (rt2, log2) = (rt.clone(), log.clone());
            let out = rt.block_on(
                async move {
                    for i in 0..3u64 {
                        let (rt3, log3) = (rt2.clone(), log2.clone());
                        rt2.spawn(async move {
                            rt3.sleep(Duration::from_secs(10 - i)).await;
                            lock(&log3).push((i, rt3.elapsed()));
                        });
                    }
                    rt2.sleep(Duration::from_secs(3600)).await;
                    rt2.elapsed()
                },
                Duration::from_secs(7200),
            );
            (out, lock(&log).clone())
        };
        let (out, log) = run();
        assert_eq!(out, Ok(Duration::from_secs(3600)));
        assert_eq!(
            log,
            vec![
                (2, Duration::from_secs(8)),
                (1, Duration::from_secs(9)),
                (0, Duration::from_secs(10))
            ]
        );
        assert_eq!(run(), (out, log));
    }

    #[test]
    fn deadlock_and_time_limit_are_reported() {
        let rt = SimRuntime::new();
        let (tx, rx) = futures_channel::oneshot::channel::<()>();
        let r = rt.block_on(async move { rx.await.is_ok() }, Duration::from_secs(1));
        drop(tx);
        assert_eq!(r, Err(SimStop::Deadlock));
        let rt2 = SimRuntime::new();
        let rt3 = rt2.clone();
        let r = rt2.block_on(
            async move { rt3.sleep(Duration::from_secs(5)).await },
            Duration::from_secs(1),
        );
        assert_eq!(r, Err(SimStop::TimeLimit));
    }
}
