//! Line framing: a bounded line reader that resyncs after bad lines, and a writer.

use std::io::{self, BufRead, BufReader, Read, Write};

use serde::Serialize;

use crate::error::ProtocolError;

/// Default maximum frame size: 64 MiB (a 16 MiB file fits as base64 with room to spare).
pub const DEFAULT_MAX_FRAME_BYTES: usize = 64 * 1024 * 1024;

/// Reads `\n`-terminated UTF-8 lines with a size cap.
///
/// A line longer than the cap is skipped up to its newline without being held in
/// memory, then reported as [`ProtocolError::FrameTooLarge`]; a line that is not
/// UTF-8 is reported as [`ProtocolError::NotUtf8`]. In both cases the next call
/// reads the following line, so the connection keeps working. Only
/// [`ProtocolError::Io`] leaves the reader in an unknown state (drop the connection).
#[derive(Debug)]
pub struct LineReader<R> {
    pub(crate) inner: BufReader<R>,
    max_frame_bytes: usize,
    line: Vec<u8>,
}

impl<R: Read> LineReader<R> {
    /// A reader with the [`DEFAULT_MAX_FRAME_BYTES`] cap.
    pub fn new(inner: R) -> Self {
        Self::with_max_frame_bytes(inner, DEFAULT_MAX_FRAME_BYTES)
    }

    /// A reader whose lines may hold at most `max_frame_bytes` bytes (newline excluded).
    pub fn with_max_frame_bytes(inner: R, max_frame_bytes: usize) -> Self {
        Self {
            inner: BufReader::with_capacity(64 * 1024, inner),
            max_frame_bytes,
            line: Vec::new(),
        }
    }

    /// The frame size cap in bytes.
    #[must_use]
    pub fn max_frame_bytes(&self) -> usize {
        self.max_frame_bytes
    }

    /// The wrapped reader.
    pub fn get_ref(&self) -> &R {
        self.inner.get_ref()
    }

    /// The wrapped reader, mutably (reading from it directly skips buffered bytes).
    pub fn get_mut(&mut self) -> &mut R {
        self.inner.get_mut()
    }

    /// Bytes already read from the transport and not yet returned as lines.
    #[must_use]
    pub fn buffered(&self) -> usize {
        self.inner.buffer().len()
    }

    /// The next line without its `\n` (a trailing `\r` is kept; [`crate::parse_request`] trims).
    ///
    /// `Ok(None)` at end of input. A final line without a newline is returned as a line.
    ///
    /// # Errors
    /// [`ProtocolError::FrameTooLarge`] and [`ProtocolError::NotUtf8`] after the bad line
    /// was consumed (recoverable); [`ProtocolError::Io`] when the transport fails.
    pub fn read_line(&mut self) -> Result<Option<String>, ProtocolError> {
        let bytes = self.read_raw_line()?;
        match bytes {
            None => Ok(None),
            Some(bytes) => match String::from_utf8(bytes) {
                Ok(line) => Ok(Some(line)),
                Err(err) => {
                    let valid_up_to = err.utf8_error().valid_up_to();
                    // Keep the allocation for the next line.
                    self.line = err.into_bytes();
                    Err(ProtocolError::NotUtf8 { valid_up_to })
                }
            },
        }
    }

    fn read_raw_line(&mut self) -> Result<Option<Vec<u8>>, ProtocolError> {
        self.line.clear();
        let mut seen = 0usize;
        let mut overflow = false;
        let mut any = false;
        loop {
            let available = match self.inner.fill_buf() {
                Ok(buf) => buf,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(ProtocolError::Io {
                        context: "reading a frame",
                        source,
                    });
                }
            };
            if available.is_empty() {
                if !any {
                    return Ok(None);
                }
                break;
            }
            any = true;
            let newline = available.iter().position(|&b| b == b'\n');
            let chunk = &available[..newline.unwrap_or(available.len())];
            seen = seen.saturating_add(chunk.len());
            if !overflow {
                if seen > self.max_frame_bytes {
                    overflow = true;
                    self.line = Vec::new();
                } else {
                    self.line.extend_from_slice(chunk);
                }
            }
            let used = chunk.len() + usize::from(newline.is_some());
            self.inner.consume(used);
            if newline.is_some() {
                break;
            }
        }
        if overflow {
            return Err(ProtocolError::FrameTooLarge {
                limit: self.max_frame_bytes,
                len: seen,
            });
        }
        Ok(Some(std::mem::take(&mut self.line)))
    }
}

/// Serialises `message` as one JSON line (with `\n`) and flushes.
///
/// # Errors
/// [`ProtocolError::Io`] when the transport fails.
pub fn write_frame<W: Write + ?Sized, T: Serialize + ?Sized>(
    writer: &mut W,
    message: &T,
) -> Result<(), ProtocolError> {
    let mut bytes = serde_json::to_vec(message).map_err(|err| ProtocolError::Io {
        context: "serialising a frame",
        source: io::Error::other(err),
    })?;
    bytes.push(b'\n');
    write_all_flush(writer, &bytes)
}

/// Writes `line` followed by `\n` and flushes (the line must not contain a newline).
///
/// # Errors
/// [`ProtocolError::Io`] when the transport fails.
pub fn write_line<W: Write + ?Sized>(writer: &mut W, line: &str) -> Result<(), ProtocolError> {
    let mut bytes = Vec::with_capacity(line.len() + 1);
    bytes.extend_from_slice(line.as_bytes());
    bytes.push(b'\n');
    write_all_flush(writer, &bytes)
}

fn write_all_flush<W: Write + ?Sized>(writer: &mut W, bytes: &[u8]) -> Result<(), ProtocolError> {
    writer
        .write_all(bytes)
        .and_then(|()| writer.flush())
        .map_err(|source| ProtocolError::Io {
            context: "writing a frame",
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &[u8], max: usize) -> Vec<Result<String, String>> {
        let mut reader = LineReader::with_max_frame_bytes(input, max);
        let mut out = Vec::new();
        loop {
            match reader.read_line() {
                Ok(None) => return out,
                Ok(Some(line)) => out.push(Ok(line)),
                Err(err) => out.push(Err(err.error_code().to_string())),
            }
        }
    }

    #[test]
    fn splits_lines_and_keeps_last_unterminated_line() {
        assert_eq!(
            lines(b"a\nbb\n\nccc", 10),
            [
                Ok("a".into()),
                Ok("bb".into()),
                Ok(String::new()),
                Ok("ccc".into())
            ]
        );
    }

    #[test]
    fn oversized_line_is_skipped_and_next_line_still_reads() {
        let mut input = vec![b'x'; 100];
        input.extend_from_slice(b"\nok\n");
        assert_eq!(
            lines(&input, 10),
            [Err("frame_too_large".into()), Ok("ok".into())]
        );
    }

    #[test]
    fn line_exactly_at_limit_is_accepted() {
        assert_eq!(lines(b"0123456789\n", 10), [Ok("0123456789".into())]);
        assert_eq!(lines(b"0123456789a\n", 10), [Err("frame_too_large".into())]);
    }

    #[test]
    fn non_utf8_line_is_an_error_and_reading_goes_on() {
        assert_eq!(
            lines(b"\xff\xfe\nafter\n", 100),
            [Err("parse".into()), Ok("after".into())]
        );
    }

    #[test]
    fn oversized_line_spanning_many_buffer_fills() {
        // Bigger than the 64 KiB buffer, to cross several fill_buf calls.
        let mut input = vec![b'y'; 300 * 1024];
        input.push(b'\n');
        input.extend_from_slice(b"z\n");
        assert_eq!(
            lines(&input, 1024),
            [Err("frame_too_large".into()), Ok("z".into())]
        );
    }

    #[test]
    fn writer_appends_newline() {
        let mut out = Vec::new();
        write_line(&mut out, "{}").unwrap();
        write_frame(&mut out, &serde_json::json!({"op": "x"})).unwrap();
        assert_eq!(out, b"{}\n{\"op\":\"x\"}\n");
    }
}
