//! The deferred-wait scope: slow kernel waits a stage may leave running while the chain
//! goes on, joined before the operation returns.

use crate::spec::error::CniError;

/// Slow kernel waits a stage may leave running while the chain goes on: deleting a link
/// waits 20-30 ms in the kernel (rcu_barrier), and a DEL of a 4-stage chain pays several
/// of those one after another. Inside a `DeferScope` (the engine opens one around DEL),
/// `defer` runs the work on its own thread, which inherits the caller's netns, and the
/// scope joins them all before the operation returns; their errors are reported as the
/// operation's. Outside a scope the work runs inline.
pub fn defer(
    what: impl Into<String>,
    f: impl FnOnce() -> Result<(), CniError> + Send + 'static,
) -> Result<(), CniError> {
    let what = what.into();
    let active = DEFERRED.with(|d| d.borrow().is_some());
    if !active {
        return f();
    }
    let handle = std::thread::Builder::new()
        .name("cnichain-defer".into())
        .spawn(f)
        .map_err(|e| CniError::internal(format!("{what}: cannot start a thread: {e}")))?;
    DEFERRED.with(|d| {
        if let Some(v) = d.borrow_mut().as_mut() {
            v.push((what, handle));
        }
    });
    Ok(())
}

type DeferredWork = Vec<(String, std::thread::JoinHandle<Result<(), CniError>>)>;

thread_local! {
    static DEFERRED: std::cell::RefCell<Option<DeferredWork>> = const { std::cell::RefCell::new(None) };
}

/// Collects deferred work on this thread until `join`.
pub struct DeferScope(());

impl DeferScope {
    /// Open the scope on this thread (nested opens share the outer one).
    pub fn begin() -> DeferScope {
        DEFERRED.with(|d| {
            let mut d = d.borrow_mut();
            if d.is_none() {
                *d = Some(Vec::new());
            }
        });
        DeferScope(())
    }

    /// Wait for every deferred piece of work; their errors, in the order they were
    /// deferred.
    pub fn join(self) -> Vec<CniError> {
        let work = DEFERRED.with(|d| d.borrow_mut().take()).unwrap_or_default();
        work.into_iter()
            .filter_map(|(what, h)| match h.join() {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e.context(what)),
                Err(_) => Some(CniError::internal(format!("{what}: the thread panicked"))),
            })
            .collect()
    }
}

impl Drop for DeferScope {
    fn drop(&mut self) {
        // Never leave work unjoined (and never leave the scope open) on an early return.
        let work = DEFERRED.with(|d| d.borrow_mut().take()).unwrap_or_default();
        for (_, h) in work {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod defer_tests {
    use super::*;

    #[test]
    fn deferred_work_overlaps_and_reports_errors() {
        let scope = DeferScope::begin();
        let t = std::time::Instant::now();
        for i in 0..3 {
            defer(format!("job {i}"), move || {
                std::thread::sleep(std::time::Duration::from_millis(100));
                if i == 1 {
                    Err(CniError::internal("boom"))
                } else {
                    Ok(())
                }
            })
            .unwrap();
        }
        let errs = scope.join();
        assert!(t.elapsed() < std::time::Duration::from_millis(250), "ran concurrently");
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].msg, "job 1: boom");
        // outside a scope: inline
        let ran = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let r2 = ran.clone();
        defer("inline", move || {
            r2.store(true, std::sync::atomic::Ordering::SeqCst);
            Ok(())
        })
        .unwrap();
        assert!(ran.load(std::sync::atomic::Ordering::SeqCst));
    }
}
