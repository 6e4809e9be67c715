//! sidkit's own rayon pool: sized by `set_num_threads`, else `SIDKIT_NUM_THREADS`, else the
//! number of CPUs. A pool is tied to the process that built it: after a `fork` (torch
//! DataLoader workers) the child's copy has no threads behind it and would deadlock, so a
//! process whose pid differs from the pool's builds a fresh pool of its own.
//!
//! `POOL`'s lock is only ever taken with the GIL held (`run` takes it before detaching), and
//! `os.fork` holds the GIL too, so no other Python thread can hold the lock at the moment of a
//! fork: the child never inherits it locked, and no `pthread_atfork` handler is needed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use rayon::ThreadPool;

static REQUESTED: AtomicUsize = AtomicUsize::new(0);
/// The most threads `set_num_threads` and `SIDKIT_NUM_THREADS` take (as the Python wrapper).
const MAX_THREADS: usize = 4096;
static POOL: Mutex<Option<(u32, Arc<ThreadPool>)>> = Mutex::new(None);

fn configured_threads() -> PyResult<usize> {
    let n = REQUESTED.load(Ordering::Relaxed);
    if n > 0 {
        return Ok(n);
    }
    match std::env::var("SIDKIT_NUM_THREADS") {
        Ok(v) if !v.trim().is_empty() => match v.trim().parse::<usize>() {
            Ok(n) if (1..=MAX_THREADS).contains(&n) => Ok(n),
            _ => Err(PyValueError::new_err(format!(
                "SIDKIT_NUM_THREADS: expected an integer in 1..{MAX_THREADS}, got {v:?}"
            ))),
        },
        _ => Ok(std::thread::available_parallelism().map_or(1, |n| n.get())),
    }
}

/// The pool of this process, built on first use.
pub fn pool() -> PyResult<Arc<ThreadPool>> {
    let mut guard = POOL.lock().unwrap_or_else(|p| p.into_inner());
    let pid = std::process::id();
    if let Some((owner, pool)) = guard.as_ref() {
        if *owner == pid {
            return Ok(pool.clone());
        }
    }
    if let Some((owner, stale)) = guard.take() {
        if owner != pid {
            // Inherited through fork: its worker threads do not exist here, so never touch it.
            std::mem::forget(stale);
        }
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(configured_threads()?)
        .thread_name(|i| format!("sidkit-{i}"))
        .build()
        .map_err(|e| {
            PyRuntimeError::new_err(format!("could not start sidkit's thread pool: {e}"))
        })?;
    let pool = Arc::new(pool);
    *guard = Some((pid, pool.clone()));
    Ok(pool)
}

/// Runs `f` detached from the interpreter (GIL released) on sidkit's pool. A panic in the
/// core (a bug: bad input is an `Err`) comes back as a `RuntimeError` naming it, never as
/// PyO3's `PanicException`, which is a `BaseException` that `except Exception` misses.
pub fn run<T: Send, F: FnOnce() -> T + Send>(py: Python<'_>, f: F) -> PyResult<T> {
    let pool = pool()?;
    py.detach(|| pool.install(|| std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))))
        .map_err(|payload| {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".into());
            PyRuntimeError::new_err(format!(
                "sidkit internal error (a bug; please report it with the call): {what}"
            ))
        })
}

/// Sets the number of threads sidkit uses (results do not depend on it).
#[pyfunction]
pub fn set_num_threads(n: usize) -> PyResult<()> {
    if !(1..=MAX_THREADS).contains(&n) {
        return Err(PyValueError::new_err(format!(
            "n: expected 1..{MAX_THREADS} threads, got {n}"
        )));
    }
    REQUESTED.store(n, Ordering::Relaxed);
    let mut guard = POOL.lock().unwrap_or_else(|p| p.into_inner());
    let pid = std::process::id();
    if guard
        .as_ref()
        .is_some_and(|(owner, p)| *owner != pid || p.current_num_threads() != n)
    {
        if let Some((owner, stale)) = guard.take() {
            if owner == pid {
                drop(stale);
            } else {
                // Inherited through fork: its worker threads do not exist here (see `pool`).
                std::mem::forget(stale);
            }
        }
    }
    Ok(())
}

/// The number of threads sidkit's pool has (or will have).
#[pyfunction]
pub fn get_num_threads() -> PyResult<usize> {
    Ok(pool()?.current_num_threads())
}
