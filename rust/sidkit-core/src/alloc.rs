//! Large output buffers backed by transparent huge pages where the OS offers them.
//!
//! A fresh multi-megabyte `Vec` is faulted in one 4 KiB page at a time on first touch; on
//! virtual machines each fault can cost microseconds, which for a 100 MB result rivals the
//! computation itself. Asking for huge pages (`madvise(MADV_HUGEPAGE)`, as numpy does for its
//! large arrays) cuts the faults 512-fold. Elsewhere this is a plain allocation.

use crate::error::{Error, Result};

/// Buffers smaller than this are left alone.
const HUGE: usize = 4 << 20;

/// `vec![value; len]`, with huge pages requested before the first touch when it is large.
pub fn filled<T: Copy>(len: usize, value: T) -> Vec<T> {
    let mut v: Vec<T> = Vec::with_capacity(len);
    advise_huge(v.as_mut_ptr() as *mut u8, len * std::mem::size_of::<T>());
    v.resize(len, value);
    v
}

/// The product of `dims` (an output's element count), or a `ValueError`-kind error naming
/// `arg` when it overflows or the elements of `T` would exceed `isize::MAX` bytes.
pub fn elements<T>(arg: &'static str, dims: &[usize]) -> Result<usize> {
    dims.iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .filter(|&n| {
            n.checked_mul(std::mem::size_of::<T>().max(1))
                .is_some_and(|b| b <= isize::MAX as usize)
        })
        .ok_or_else(|| {
            let shape: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
            Error::value(
                arg,
                "an output that fits in memory",
                format!("shape ({})", shape.join(", ")),
            )
        })
}

/// [`filled`] for sizes that come from a caller: a failed allocation is an error naming `arg`
/// (a Python `MemoryError`) instead of an abort of the process.
pub fn try_filled<T: Copy>(arg: &'static str, len: usize, value: T) -> Result<Vec<T>> {
    let mut v: Vec<T> = Vec::new();
    v.try_reserve_exact(len).map_err(|_| {
        Error::memory(
            arg,
            format!("{len} elements of {} bytes", std::mem::size_of::<T>()),
        )
    })?;
    advise_huge(v.as_mut_ptr() as *mut u8, len * std::mem::size_of::<T>());
    v.resize(len, value);
    Ok(v)
}

/// An empty vector with room for `len` items, huge pages requested when it is large.
pub fn with_capacity<T>(len: usize) -> Vec<T> {
    let mut v: Vec<T> = Vec::with_capacity(len);
    advise_huge(v.as_mut_ptr() as *mut u8, len * std::mem::size_of::<T>());
    v
}

#[cfg(target_os = "linux")]
fn advise_huge(ptr: *mut u8, bytes: usize) {
    const PAGE: usize = 2 << 20;
    if bytes < HUGE {
        return;
    }
    // Only whole 2 MiB pages inside the allocation can be advised.
    let start = (ptr as usize).div_ceil(PAGE) * PAGE;
    let end = (ptr as usize + bytes) / PAGE * PAGE;
    if end > start {
        // SAFETY: the range lies inside a live allocation we own; MADV_HUGEPAGE only changes
        // how the kernel backs it, never its contents. A failure is harmless and ignored.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn advise_huge(_ptr: *mut u8, _bytes: usize) {}

/// Sorts plain u64 keys ascending with voracious' parallel radix sort, on as many threads as
/// the current rayon pool has. `voracious_mt_sort` builds a thread pool of its own and unwraps
/// the build: where no thread can be spawned it panics before it moves anything, so a
/// single-threaded sort of the same integers takes over (the same order: plain integers).
pub(crate) fn sort_u64(v: &mut [u64]) {
    use voracious_radix_sort::RadixSort;
    let threads = rayon::current_num_threads().max(1);
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        v.voracious_mt_sort(threads)
    }))
    .is_err()
    {
        v.sort_unstable();
    }
}
