//! The heap in use, as glibc's allocator counts it (`mallinfo2`): the bytes handed out by
//! `malloc` and not yet freed, mmapped blocks included. RSS also holds what the allocator
//! keeps for reuse (it climbs to a plateau as camera threads come and go), so a slow leak
//! shows here long before it shows in RSS.
//!
//! `mallinfo2` came with glibc 2.33; JetPack 5's glibc is 2.31. It is looked up when first
//! asked for, not linked, so the binary still runs there (without the figure).

/// Bytes of heap in use now; `None` where the C library has no `mallinfo2` (not glibc, or a
/// glibc older than 2.33).
#[cfg(target_env = "gnu")]
pub fn in_use_bytes() -> Option<u64> {
    use std::sync::OnceLock;

    type Mallinfo2 = unsafe extern "C" fn() -> libc::mallinfo2;
    static MALLINFO2: OnceLock<Option<Mallinfo2>> = OnceLock::new();
    let mallinfo2 = MALLINFO2.get_or_init(|| {
        // SAFETY: a NUL-terminated name; RTLD_DEFAULT searches the objects already loaded.
        let f = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"mallinfo2".as_ptr()) };
        // SAFETY: glibc's `struct mallinfo2 mallinfo2(void)` (malloc.h), which `libc` mirrors.
        (!f.is_null()).then(|| unsafe { std::mem::transmute::<*mut libc::c_void, Mallinfo2>(f) })
    });
    let mallinfo2 = (*mallinfo2)?;
    // SAFETY: takes no argument; it walks the arenas under their locks.
    let m = unsafe { mallinfo2() };
    u64::try_from(m.uordblks.saturating_add(m.hblkhd)).ok()
}

/// Not glibc: no figure.
#[cfg(not(target_env = "gnu"))]
pub fn in_use_bytes() -> Option<u64> {
    None
}

#[cfg(all(test, target_env = "gnu"))]
mod tests {
    use super::in_use_bytes;

    /// A block of 64 MiB is mmapped by glibc: it counts while held (`hblkhd`, not only
    /// `uordblks`, which would say a few MB). (Other tests allocate and free beside this
    /// one, so what freeing it gives back is not asserted.)
    #[test]
    fn a_block_held_counts_in_the_heap_in_use() {
        const BLOCK: usize = 64 << 20;
        let block = std::hint::black_box(vec![7u8; BLOCK]);
        let held = in_use_bytes().expect("Debian's glibc has mallinfo2");
        assert!(held >= BLOCK as u64, "{held} bytes in use while {BLOCK} are held");
        drop(block);
    }
}
