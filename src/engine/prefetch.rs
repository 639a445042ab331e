//! Asking the CPU to bring memory into its caches before it is read.
//!
//! The engine's state is far larger than the caches: an event's account is a
//! random pick among hundreds of thousands, so reading it stalls on main
//! memory, and the stalls, not the arithmetic, were most of the time spent
//! applying an event. On-time events wait in the intake's buffer until the
//! watermark passes them, so the engine knows which accounts the next few
//! events will touch, and asks for their memory while it works on the
//! current one (see `AccountStage::prefetch`). A hint changes nothing but
//! timing: no result depends on it.

/// Asks for the cache line holding `address` (on x86-64; elsewhere, nothing).
#[inline(always)]
pub(crate) fn prefetch_line<T>(address: *const T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: SSE, which the intrinsic needs, is in every x86-64 CPU;
        // and a prefetch only hints: it reads nothing into the program, and
        // an address that is not mapped is ignored, not faulted.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(address.cast::<i8>()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = address;
}

/// Asks for every cache line of `value`.
#[inline(always)]
pub(crate) fn prefetch<T>(value: &T) {
    const LINE: usize = 64;
    let start = value as *const T as *const u8;
    let size = std::mem::size_of::<T>();
    let mut offset = 0;
    while offset < size {
        prefetch_line(start.wrapping_add(offset));
        offset += LINE;
    }
    // A value that does not start on a line may end on one more.
    if size > 0 {
        prefetch_line(start.wrapping_add(size - 1));
    }
}
