//! The policy for a panic in a daemon's task (a poisoned lock's `expect` included): the
//! panic is logged with the task's name, the whole daemon stops, and its run fails naming
//! the task, so systemd restarts the process whole instead of leaving it half-working (an
//! agent whose recorder died would silently stop buffering; a controller whose rollout
//! loop died would leave rollouts hanging). What is durable is consistent at every
//! instant (transactions, atomic replaces), so a restart loses nothing.
//!
//! Locks are taken with `.lock().expect("<what it guards>")` everywhere: a poisoned lock
//! means a panic mid-update, and continuing on possibly half-updated state is worse than
//! the restart this policy gives.

use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A daemon's tasks, each named; see the module documentation.
#[derive(Debug)]
pub struct Supervisor {
    tracker: TaskTracker,
    shutdown: CancellationToken,
    panicked: Arc<Mutex<Option<&'static str>>>,
}

impl Supervisor {
    /// Tasks that cancel `shutdown` when one panics.
    pub fn new(shutdown: CancellationToken) -> Self {
        Self {
            tracker: TaskTracker::new(),
            shutdown,
            panicked: Arc::default(),
        }
    }

    /// Runs `task` under the name `name`.
    pub fn spawn(&self, name: &'static str, task: impl Future<Output = ()> + Send + 'static) {
        let handle = tokio::spawn(task);
        let (shutdown, panicked) = (self.shutdown.clone(), Arc::clone(&self.panicked));
        self.tracker.spawn(async move {
            if let Err(e) = handle.await
                && e.is_panic()
            {
                tracing::error!(
                    task = name,
                    "a task panicked; stopping so the service restarts whole"
                );
                panicked.lock().expect("panicked task").get_or_insert(name);
                shutdown.cancel();
            }
        });
    }

    /// No more tasks will be spawned.
    pub fn close(&self) {
        self.tracker.close();
    }

    /// Waits for every task (after [`Supervisor::close`]).
    pub async fn wait(&self) {
        self.tracker.wait().await;
    }

    /// The first task that panicked.
    pub fn panicked(&self) -> Option<&'static str> {
        *self.panicked.lock().expect("panicked task")
    }
}

/// Runs `f`, turning a panic inside it into its message: for storage engines that panic
/// on damaged data (a truncated file, flipped bytes), where the caller reports damage
/// naming the file. The default hook's print is suppressed meanwhile, so the operator
/// reads the caller's error, not a backtrace. Call it before other threads run, or where
/// a panic elsewhere missing its print for that moment is acceptable (the hook is global).
pub fn catch_panic<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    std::panic::set_hook(hook);
    result.map_err(|panic| {
        panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "the storage engine failed on its contents".to_owned())
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_task_that_panics_stops_the_agent_and_is_named() {
        let shutdown = CancellationToken::new();
        let tasks = Supervisor::new(shutdown.clone());
        let stop = shutdown.clone();
        tasks.spawn("uplink", async move { stop.cancelled().await });
        tasks.spawn("recorder", async {
            let lock = std::sync::Mutex::new(0);
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let _guard = lock.lock().unwrap();
                panic!("poisons the lock");
            }));
            // The policy: a poisoned lock is a panic of its own.
            drop(lock.lock().expect("recorder state"));
        });
        tasks.close();
        tokio::time::timeout(Duration::from_secs(5), tasks.wait())
            .await
            .expect("every task ends once one panicked");
        assert!(shutdown.is_cancelled());
        assert_eq!(tasks.panicked(), Some("recorder"));
    }

    #[test]
    fn a_caught_panic_is_its_message() {
        assert_eq!(catch_panic(|| 7), Ok(7));
        assert_eq!(
            catch_panic(|| -> u8 { panic!("page 3 is damaged") }),
            Err("page 3 is damaged".to_owned())
        );
        let n = 3;
        assert_eq!(
            catch_panic(|| -> u8 { panic!("page {n} is damaged") }),
            Err("page 3 is damaged".to_owned())
        );
    }

    #[tokio::test]
    async fn tasks_that_end_normally_stop_nothing() {
        let shutdown = CancellationToken::new();
        let tasks = Supervisor::new(shutdown.clone());
        tasks.spawn("notifier", async {});
        tasks.close();
        tasks.wait().await;
        assert!(!shutdown.is_cancelled());
        assert_eq!(tasks.panicked(), None);
    }
}
