//! A reader that hands out its bytes a few at a time, for the binary
//! trace parsers' targets (a parser must not assume whole records per
//! read).

use std::io::Read;

/// A reader that returns at most `step` bytes a read.
pub struct Short<'a> {
    pub data: &'a [u8],
    pub step: usize,
}

impl Read for Short<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.step).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}
