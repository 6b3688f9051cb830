//! Giving memory back to the system after a burst (a backlog drained): the allocator
//! keeps freed pages for reuse, so without this an agent that drained a large backlog
//! stays at its peak for good.

/// Caps glibc's malloc arenas at two (its default is eight per core): the agent's threads
/// are mostly idle, and every arena keeps freed memory of its own. Call once, first.
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    {
        const M_ARENA_MAX: std::ffi::c_int = -8;
        unsafe extern "C" {
            fn mallopt(param: std::ffi::c_int, value: std::ffi::c_int) -> std::ffi::c_int;
        }
        // SAFETY: `mallopt` takes two integers and changes only the allocator's tuning;
        // called from `main` before any other thread exists.
        unsafe {
            mallopt(M_ARENA_MAX, 2);
        }
    }
}

/// Returns freed heap memory to the system (glibc's `malloc_trim`); nothing elsewhere.
pub fn give_back() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    {
        unsafe extern "C" {
            fn malloc_trim(pad: usize) -> std::ffi::c_int;
        }
        // SAFETY: `malloc_trim` takes no pointers and only returns unused pages of the
        // process's own heap to the kernel; it is safe to call from any thread.
        unsafe {
            malloc_trim(0);
        }
    }
}
