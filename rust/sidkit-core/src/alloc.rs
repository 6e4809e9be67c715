//! Large output buffers backed by transparent huge pages where the OS offers them.
//!
//! A fresh multi-megabyte `Vec` is faulted in one 4 KiB page at a time on first touch; on
//! virtual machines each fault can cost microseconds, which for a 100 MB result rivals the
//! computation itself. Asking for huge pages (`madvise(MADV_HUGEPAGE)`, as numpy does for its
//! large arrays) cuts the faults 512-fold. Elsewhere this is a plain allocation.

/// Buffers smaller than this are left alone.
const HUGE: usize = 4 << 20;

/// `vec![value; len]`, with huge pages requested before the first touch when it is large.
pub fn filled<T: Copy>(len: usize, value: T) -> Vec<T> {
    let mut v: Vec<T> = Vec::with_capacity(len);
    advise_huge(v.as_mut_ptr() as *mut u8, len * std::mem::size_of::<T>());
    v.resize(len, value);
    v
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
