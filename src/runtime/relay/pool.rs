//! Copy buffers that exist only while bytes are in flight. An idle relayed
//! connection holds none: a buffer is taken after the socket reports data
//! and given back once that data is written. Each thread keeps a few spare
//! buffers so the steady state allocates nothing. Every buffer in
//! existence (lent or spare) counts against the buffer budget.

use std::cell::RefCell;

/// Size of one copy buffer: large enough that a bulk transfer moves a lot
/// per system call.
pub(crate) const BUFFER_SIZE: usize = 32 * 1024;
/// Spare buffers kept per thread; beyond this they are freed.
const SPARES: usize = 16;

thread_local! {
    static SPARE: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
}

/// A buffer on loan from the pool; returns itself when dropped.
pub(crate) struct Buffer(Box<[u8]>);

impl Buffer {
    pub(crate) fn take() -> Self {
        let spare = SPARE.with(|s| s.borrow_mut().pop());
        Buffer(spare.unwrap_or_else(|| {
            // Bytes in flight of a connection already admitted: counted
            // against the budget, never refused.
            crate::model::limits::budget::global().add(BUFFER_SIZE);
            vec![0u8; BUFFER_SIZE].into_boxed_slice()
        }))
    }
}

impl std::ops::Deref for Buffer {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl std::ops::DerefMut for Buffer {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        // An empty box in its place: no allocation.
        let buf = std::mem::take(&mut self.0);
        SPARE.with(|s| {
            let mut spare = s.borrow_mut();
            if spare.len() < SPARES {
                spare.push(buf);
            } else {
                crate::model::limits::budget::global().give_back(BUFFER_SIZE);
            }
        });
    }
}
