//! Giving memory back to the system after a burst (a backlog drained): the allocator
//! keeps freed pages for reuse, so without this an agent that drained a large backlog
//! stays at its peak for good.

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
