//! Background I/O on the runtime that owns it.
//!
//! The server runs one multi-thread "main" runtime for background work and one
//! current-thread runtime per ingress worker. A connection to JTL or Redis opened by the
//! first request that needs it would otherwise belong to that worker's runtime: its socket
//! registered with that runtime's reactor and its connection task spawned there, so it
//! would tie up one ingress thread and die when that worker stops. Components that keep
//! connections take a [`Handle`] of the main runtime at construction and open and drive
//! them there with these helpers.

use std::future::Future;

use tokio::runtime::Handle;
use tokio_util::task::AbortOnDropHandle;

/// Runs `work` as a task on `runtime` and waits for it from wherever the caller runs.
/// Dropping the returned future (a caller that gave up) aborts the task. `None` when the
/// runtime is shutting down and the task was cancelled.
pub async fn run_on<F>(runtime: &Handle, work: F) -> Option<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    AbortOnDropHandle::new(runtime.spawn(work)).await.ok()
}

/// A hyper executor that spawns connection tasks on a given runtime (hyper-util's
/// `TokioExecutor` spawns on whichever runtime the call happens to run on).
#[derive(Clone, Debug)]
pub struct SpawnOn(pub Handle);

impl<F> hyper::rt::Executor<F> for SpawnOn
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, future: F) {
        self.0.spawn(future);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thread_name() -> Option<String> {
        std::thread::current().name().map(str::to_owned)
    }

    /// The work runs on the given runtime's threads, not on the caller's.
    #[test]
    fn work_runs_on_the_given_runtime() {
        let main = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("main-runtime")
            .build()
            .expect("runtime");
        let caller = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let ran_on = caller.block_on(run_on(main.handle(), async { thread_name() }));
        assert_eq!(ran_on, Some(Some("main-runtime".to_owned())));
        let (sender, receiver) = std::sync::mpsc::channel();
        hyper::rt::Executor::execute(&SpawnOn(main.handle().clone()), async move {
            let _ = sender.send(thread_name());
        });
        assert_eq!(
            receiver.recv_timeout(std::time::Duration::from_secs(5)),
            Ok(Some("main-runtime".to_owned()))
        );
    }

    /// A caller that gives up stops the work.
    #[test]
    fn dropping_the_wait_aborts_the_work() {
        let main = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_time()
            .build()
            .expect("runtime");
        let (dropped, gone) = tokio::sync::oneshot::channel::<()>();
        let caller = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        caller.block_on(async {
            let work = run_on(main.handle(), async move {
                let _held = dropped;
                std::future::pending::<()>().await;
            });
            // Polled once (spawned), then dropped.
            tokio::select! {
                biased;
                _ = work => unreachable!("pending"),
                _ = std::future::ready(()) => {}
            }
        });
        // The task's captures are dropped when it is aborted: the sender closes.
        assert!(main.block_on(gone).is_err());
    }
}
