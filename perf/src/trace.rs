//! Trace readers: untrusted bytes in, accesses or errors naming the file and line or record out.
//!
//! Every reader is bounded ([`Limits`]): the bytes it reads (after
//! decompression), the length of a text line, and the accesses a trace
//! expands to. Going past a bound is an error, never a panic, and no reader
//! holds more than one line (or 96 KiB of records) besides the accesses.

use crate::units::format_size;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

/// Page size of `lis` traces.
pub const LIS_PAGE: u32 = 512;

/// One access: an object id and its size in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    /// Object (page, block) number.
    pub id: u64,
    /// Size in bytes.
    pub size: u32,
}

/// Trace file formats (the variants' docs are `--help` text). Files ending
/// in `.zst`, `.gz` or `.xz` are decompressed on the fly; no reader panics,
/// and every one is bounded by [`Limits`].
///
/// * `lis`: the ARC paper's traces. Text lines `start nblocks ignored reqno`;
///   each line expands to `nblocks` accesses of the 512-byte pages
///   `start .. start+nblocks`.
/// * `oracle`: libCacheSim's oracleGeneral binary; packed little-endian
///   24-byte records `u32 clock, u64 obj_id, u32 obj_size, i64 next_vtime`.
/// * `csv`: one access per line, the key and (optionally) the size in
///   configurable columns;
/// * `keys`: one key per line;
/// * `bin-keys`: plain binary, one little-endian u64 key per access.
///
/// libCacheSim's CSV traces (`time,obj_id,obj_size,…` with a header) read
/// as `csv` with `--csv-header --csv-key-column 1 --csv-size-column 2`.
///
/// Text keys that are decimal numbers are used as they are; other keys are
/// hashed (xxh3) to a 64-bit id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum Format {
    /// The ARC paper's text format (512-byte pages).
    Lis,
    /// libCacheSim's oracleGeneral binary format.
    Oracle,
    /// Delimited text: key and size columns (see [`CsvOptions`]).
    Csv,
    /// One key per line.
    Keys,
    /// Plain binary: one little-endian u64 key per access, 8 bytes each
    /// (the size is `--value-size`).
    BinKeys,
}

/// How to read `csv` traces (and the size of `keys` traces).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CsvOptions {
    /// 0-based column of the key.
    pub key_column: usize,
    /// 0-based column of the size in bytes; `None`: every access is
    /// `default_size` bytes.
    pub size_column: Option<usize>,
    /// The field separator.
    pub delimiter: char,
    /// Skip the first line.
    pub header: bool,
    /// Size of accesses without a size column, and of `keys` traces.
    pub default_size: u32,
}

impl Default for CsvOptions {
    fn default() -> Self {
        CsvOptions {
            key_column: 0,
            size_column: None,
            delimiter: ',',
            header: false,
            default_size: 4096,
        }
    }
}

/// Longest line of a text trace, in bytes, its `\n` not counted.
pub const MAX_LINE: usize = 64 << 10;

/// Default of `--trace-max-bytes`: the most bytes of trace a replay reads,
/// after decompression.
pub const DEFAULT_MAX_BYTES: u64 = 8 << 30;

/// Default of `--trace-max-accesses`: 2^29 accesses, 8 GiB in memory.
pub const DEFAULT_MAX_ACCESSES: u64 = 1 << 29;

/// Memory the `.xz` decoder may take: `xz -9` needs 65 MiB; a file that
/// asks for more is refused.
pub const XZ_MEMLIMIT: u64 = 256 << 20;

/// Largest window of a `.zst` trace, as a power of two (zstd's default
/// decoder limit, 128 MiB): a file that asks for more is refused.
pub const ZSTD_WINDOW_LOG_MAX: u32 = 27;

/// Bounds on what reading a trace may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest line of a text trace, in bytes, its `\n` not counted.
    pub max_line: usize,
    /// Most bytes read, after decompression (`--trace-max-bytes`).
    pub max_bytes: u64,
    /// Most accesses the whole trace may give (`--trace-max-accesses`).
    pub max_accesses: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_line: MAX_LINE,
            max_bytes: DEFAULT_MAX_BYTES,
            max_accesses: DEFAULT_MAX_ACCESSES,
        }
    }
}

impl Limits {
    /// The message of a trace with more than `max_accesses` accesses.
    fn too_many_accesses(&self) -> String {
        format!(
            "more than {} accesses (raise the limit with --trace-max-accesses N)",
            self.max_accesses
        )
    }

    /// The error of a trace with more than `max_bytes` bytes.
    fn too_large(&self, path: &Path) -> TraceError {
        TraceError::TooLarge {
            path: path.into(),
            limit: self.max_bytes,
        }
    }
}

/// A trace that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The file could not be opened or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A line of a text trace is malformed.
    #[error("{path}:{line}: {msg}")]
    Line {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: u64,
        /// What is wrong.
        msg: String,
    },
    /// A record of a binary trace is malformed.
    #[error("{path}: record {record}: {msg}")]
    Record {
        /// The file.
        path: PathBuf,
        /// 0-based record number.
        record: u64,
        /// What is wrong.
        msg: String,
    },
    /// The trace holds more bytes than [`Limits::max_bytes`].
    #[error(
        "{path}: more than {} of trace data after decompression \
         (raise the limit with --trace-max-bytes SIZE)",
        format_size(*limit)
    )]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The limit, in bytes.
        limit: u64,
    },
}

/// Opens `path`, decompressing `.zst`, `.gz` and `.xz` transparently, with
/// the decoders' memory bounded ([`ZSTD_WINDOW_LOG_MAX`], [`XZ_MEMLIMIT`];
/// gzip needs 32 KiB). The bytes read are bounded by the parsers.
pub fn open(path: &Path) -> Result<Box<dyn Read + Send>, TraceError> {
    let io = |source| TraceError::Io {
        path: path.into(),
        source,
    };
    let f = File::open(path).map_err(io)?;
    match path.extension().and_then(|e| e.to_str()) {
        Some("zst") => {
            let mut d = zstd::stream::read::Decoder::new(f).map_err(io)?;
            d.window_log_max(ZSTD_WINDOW_LOG_MAX).map_err(io)?;
            Ok(Box::new(d))
        }
        Some("gz") => Ok(Box::new(flate2::read::MultiGzDecoder::new(f))),
        Some("xz") => {
            let s = xz2::stream::Stream::new_auto_decoder(XZ_MEMLIMIT, xz2::stream::CONCATENATED)
                .map_err(|e| io(e.into()))?;
            Ok(Box::new(xz2::read::XzDecoder::new_stream(f, s)))
        }
        _ => Ok(Box::new(f)),
    }
}

/// Reads a whole trace into memory, within the default [`Limits`].
pub fn read_all(path: &Path, format: Format) -> Result<Vec<Access>, TraceError> {
    read_all_with(path, format, &CsvOptions::default(), &Limits::default())
}

/// Reads a whole trace into memory, with options for text formats, within
/// `limits`.
pub fn read_all_with(
    path: &Path,
    format: Format,
    csv: &CsvOptions,
    limits: &Limits,
) -> Result<Vec<Access>, TraceError> {
    let r = open(path)?;
    let mut out = Vec::new();
    let push = |a| out.push(a);
    match format {
        Format::Lis => parse_lis(BufReader::new(r), path, limits, push)?,
        Format::Oracle => parse_oracle(r, path, limits, push)?,
        Format::Csv => parse_csv(BufReader::new(r), path, csv, limits, push)?,
        Format::Keys => parse_keys(BufReader::new(r), path, csv.default_size, limits, push)?,
        Format::BinKeys => parse_bin_keys(r, path, csv.default_size, limits, push)?,
    }
    Ok(out)
}

/// The id of a text key: the number itself, or its xxh3 hash.
pub fn text_id(key: &str) -> u64 {
    key.parse()
        .unwrap_or_else(|_| xxhash_rust::xxh3::xxh3_64(key.as_bytes()))
}

/// Parses a `keys` trace (one key per line, each access `default_size`
/// bytes), calling `f` for every key.
pub fn parse_keys(
    r: impl BufRead,
    path: &Path,
    default_size: u32,
    limits: &Limits,
    f: impl FnMut(Access),
) -> Result<(), TraceError> {
    let o = CsvOptions {
        key_column: 0,
        size_column: None,
        delimiter: '\n',
        header: false,
        default_size,
    };
    parse_csv(r, path, &o, limits, f)
}

/// Parses a `csv` trace, calling `f` for every line.
pub fn parse_csv(
    r: impl BufRead,
    path: &Path,
    o: &CsvOptions,
    limits: &Limits,
    mut f: impl FnMut(Access),
) -> Result<(), TraceError> {
    let mut first = true;
    let mut accesses = 0u64;
    for_each_line(r, path, limits, |bad, text| {
        if std::mem::take(&mut first) && o.header {
            return Ok(());
        }
        if text.trim().is_empty() {
            return Ok(());
        }
        let fields: Vec<&str> = text.split(o.delimiter).collect();
        let key = fields
            .get(o.key_column)
            .map(|k| k.trim())
            .filter(|k| !k.is_empty())
            .ok_or_else(|| bad(format!("no key in column {}", o.key_column)))?;
        let size = match o.size_column {
            None => o.default_size,
            Some(c) => {
                let v = fields
                    .get(c)
                    .ok_or_else(|| bad(format!("no size in column {c}")))?
                    .trim();
                v.parse::<u32>()
                    .ok()
                    .filter(|&s| s > 0)
                    .ok_or_else(|| bad(format!("size {v:?} is not a positive number")))?
            }
        };
        if accesses >= limits.max_accesses {
            return Err(bad(limits.too_many_accesses()));
        }
        accesses += 1;
        f(Access {
            id: text_id(key),
            size,
        });
        Ok(())
    })
}

/// Most pages one `lis` line may expand to: far above any real request
/// (the OLTP trace's largest is 256), low enough that a corrupt line
/// cannot make a reader spin for hours.
pub const LIS_MAX_PAGES_PER_LINE: u64 = 1 << 20;

/// Parses a `lis` trace, calling `f` for every page access.
pub fn parse_lis(
    r: impl BufRead,
    path: &Path,
    limits: &Limits,
    mut f: impl FnMut(Access),
) -> Result<(), TraceError> {
    let mut accesses = 0u64;
    for_each_line(r, path, limits, |bad, text| {
        let mut fields = text.split_ascii_whitespace();
        let Some(first) = fields.next() else {
            return Ok(()); // blank line
        };
        let start: u64 = first
            .parse()
            .map_err(|_| bad(format!("start {first:?} is not a number")))?;
        let count = fields
            .next()
            .ok_or_else(|| bad("missing the block count (2nd field)".into()))?;
        let count: u64 = count
            .parse()
            .map_err(|_| bad(format!("block count {count:?} is not a number")))?;
        if count > LIS_MAX_PAGES_PER_LINE {
            return Err(bad(format!(
                "block count {count} exceeds {LIS_MAX_PAGES_PER_LINE}, the most one line may expand to"
            )));
        }
        let end = start
            .checked_add(count)
            .ok_or_else(|| bad(format!("pages {start}+{count} overflow")))?;
        accesses = accesses
            .checked_add(count)
            .filter(|&n| n <= limits.max_accesses)
            .ok_or_else(|| bad(limits.too_many_accesses()))?;
        for id in start..end {
            f(Access { id, size: LIS_PAGE });
        }
        Ok(())
    })
}

/// Calls `f` with each line of a text trace (without its line end) and a
/// constructor of errors naming the file and the line. Stops at the first
/// error. Reads at most `limits.max_bytes` bytes, and holds at most one
/// line of `limits.max_line` bytes (and one byte more that tells a longer
/// line).
fn for_each_line(
    mut r: impl BufRead,
    path: &Path,
    limits: &Limits,
    mut f: impl FnMut(&dyn Fn(String) -> TraceError, &str) -> Result<(), TraceError>,
) -> Result<(), TraceError> {
    let mut line_no = 0u64;
    let mut total = 0u64; // never above limits.max_bytes
    let mut line = Vec::new();
    loop {
        line.clear();
        // One byte more than a line, or than the bytes left, may hold
        // tells a line or a trace that is too long.
        let cap = (limits.max_line as u64)
            .saturating_add(1)
            .min((limits.max_bytes - total).saturating_add(1));
        let n = (&mut r)
            .take(cap)
            .read_until(b'\n', &mut line)
            .map_err(|source| TraceError::Io {
                path: path.into(),
                source,
            })?;
        if n == 0 {
            return Ok(());
        }
        total = total
            .checked_add(n as u64)
            .filter(|&t| t <= limits.max_bytes)
            .ok_or_else(|| limits.too_large(path))?;
        line_no += 1;
        let bad = |msg: String| TraceError::Line {
            path: path.into(),
            line: line_no,
            msg,
        };
        if line.last() != Some(&b'\n') && line.len() > limits.max_line {
            return Err(bad(format!("line longer than {} bytes", limits.max_line)));
        }
        let text = std::str::from_utf8(&line).map_err(|_| bad("not UTF-8 text".into()))?;
        f(&bad, text.trim_end_matches(['\n', '\r']))?;
    }
}

/// Size of one oracleGeneral record.
pub const ORACLE_RECORD: usize = 24;

/// Parses an `oracle` trace (libCacheSim's oracleGeneral), calling `f`
/// for every record.
pub fn parse_oracle(
    r: impl Read,
    path: &Path,
    limits: &Limits,
    f: impl FnMut(Access),
) -> Result<(), TraceError> {
    parse_records(r, path, limits, ORACLE_RECORD, f, |rec| Access {
        id: u64::from_le_bytes(rec[4..12].try_into().expect("8 bytes")),
        size: u32::from_le_bytes(rec[12..16].try_into().expect("4 bytes")),
    })
}

/// Bytes of a `bin-keys` record: one little-endian u64 key.
pub const BIN_KEY_RECORD: usize = 8;

/// Parses a `bin-keys` trace (one little-endian u64 key per access, each
/// `size` bytes), calling `f` for every key.
pub fn parse_bin_keys(
    r: impl Read,
    path: &Path,
    size: u32,
    limits: &Limits,
    f: impl FnMut(Access),
) -> Result<(), TraceError> {
    parse_records(r, path, limits, BIN_KEY_RECORD, f, |rec| Access {
        id: u64::from_le_bytes(rec.try_into().expect("8 bytes")),
        size,
    })
}

/// Parses fixed-size binary records of `len` bytes, through reads of any
/// size, within `limits`; a partial last record is an error.
fn parse_records(
    mut r: impl Read,
    path: &Path,
    limits: &Limits,
    len: usize,
    mut f: impl FnMut(Access),
    decode: impl Fn(&[u8]) -> Access,
) -> Result<(), TraceError> {
    let mut buf = vec![0u8; len * 4096];
    let mut filled = 0usize;
    let mut record = 0u64;
    let mut total = 0u64; // never above limits.max_bytes
    loop {
        // At least one byte of room (`filled` is below one record here),
        // and one byte more than the bytes left tells a trace too long.
        let left = (limits.max_bytes - total).saturating_add(1);
        let room = (buf.len() - filled).min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = match r.read(&mut buf[filled..filled + room]) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(TraceError::Io {
                    path: path.into(),
                    source,
                })
            }
        };
        total = total
            .checked_add(n as u64)
            .filter(|&t| t <= limits.max_bytes)
            .ok_or_else(|| limits.too_large(path))?;
        filled += n;
        let whole = filled / len * len;
        for rec in buf[..whole].chunks_exact(len) {
            if record >= limits.max_accesses {
                return Err(TraceError::Record {
                    path: path.into(),
                    record,
                    msg: limits.too_many_accesses(),
                });
            }
            f(decode(rec));
            record += 1;
        }
        buf.copy_within(whole..filled, 0);
        filled -= whole;
        if n == 0 {
            if filled != 0 {
                return Err(TraceError::Record {
                    path: path.into(),
                    record,
                    msg: format!("truncated: {filled} of {len} bytes"),
                });
            }
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bin_keys_are_little_endian_u64s_and_a_partial_one_is_an_error() {
        let mut bytes: Vec<u8> = [7u64, 1 << 40, 7]
            .iter()
            .flat_map(|k| k.to_le_bytes())
            .collect();
        let mut got = vec![];
        parse_bin_keys(&bytes[..], Path::new("t.bin"), 4096, &L, |a| got.push(a)).unwrap();
        let ids: Vec<u64> = got.iter().map(|a| a.id).collect();
        assert_eq!(ids, [7, 1 << 40, 7]);
        assert!(got.iter().all(|a| a.size == 4096));
        bytes.push(1);
        let e = parse_bin_keys(&bytes[..], Path::new("t.bin"), 4096, &L, |_| {}).unwrap_err();
        assert!(
            e.to_string().contains("t.bin") && e.to_string().contains("truncated"),
            "{e}"
        );
    }

    const L: Limits = Limits {
        max_line: MAX_LINE,
        max_bytes: DEFAULT_MAX_BYTES,
        max_accesses: DEFAULT_MAX_ACCESSES,
    };

    fn lis(s: &str) -> Result<Vec<Access>, TraceError> {
        lis_with(s.as_bytes(), &L)
    }

    fn lis_with(b: &[u8], l: &Limits) -> Result<Vec<Access>, TraceError> {
        let mut v = vec![];
        parse_lis(b, Path::new("t.lis"), l, |a| v.push(a)).map(|_| v)
    }

    #[test]
    fn csv_and_keys_traces_parse_and_errors_name_the_line() {
        let o = CsvOptions {
            key_column: 1,
            size_column: Some(2),
            header: true,
            ..CsvOptions::default()
        };
        let mut v = vec![];
        parse_csv(
            "t,key,size\n1,42,100\n2,abc,7\n".as_bytes(),
            Path::new("t.csv"),
            &o,
            &L,
            |a| v.push(a),
        )
        .unwrap();
        assert_eq!(v[0], Access { id: 42, size: 100 });
        assert_eq!(
            v[1],
            Access {
                id: text_id("abc"),
                size: 7
            }
        );
        let e = parse_csv(
            "t,key,size\n1,42,big\n".as_bytes(),
            Path::new("t.csv"),
            &o,
            &L,
            |_| (),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "t.csv:2: size \"big\" is not a positive number"
        );
        let e = parse_csv("h\n1\n".as_bytes(), Path::new("t.csv"), &o, &L, |_| ()).unwrap_err();
        assert!(
            e.to_string().starts_with("t.csv:2: no key in column 1"),
            "{e}"
        );
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.keys.gz");
        let mut gz = flate2::write::GzEncoder::new(
            std::fs::File::create(&p).unwrap(),
            flate2::Compression::fast(),
        );
        std::io::Write::write_all(&mut gz, b"a\nb\n\na\n").unwrap();
        gz.finish().unwrap();
        let v = read_all_with(&p, Format::Keys, &CsvOptions::default(), &L).unwrap();
        assert_eq!(v.len(), 3);
        assert_eq!(v[0], v[2]);
        assert_eq!(v[0].size, 4096);
    }

    #[test]
    fn lis_lines_expand_to_pages() {
        let v = lis("10 3 0 1\n\n7 1 0 2\n").unwrap();
        let ids: Vec<u64> = v.iter().map(|a| a.id).collect();
        assert_eq!(ids, vec![10, 11, 12, 7]);
        assert!(v.iter().all(|a| a.size == 512));
    }

    #[test]
    fn lis_errors_name_file_and_line() {
        let e = lis("1 1 0 0\nx 2 0 0\n").unwrap_err().to_string();
        assert_eq!(e, "t.lis:2: start \"x\" is not a number");
        assert!(lis("5\n")
            .unwrap_err()
            .to_string()
            .contains("t.lis:1: missing the block count"));
        assert_eq!(
            lis("1 1 0 0\n18446744073709551615 2 0 0")
                .unwrap_err()
                .to_string(),
            "t.lis:2: pages 18446744073709551615+2 overflow"
        );
        assert_eq!(
            lis("1 1 0 0\n\n1 1048577 0 0").unwrap_err().to_string(),
            "t.lis:3: block count 1048577 exceeds 1048576, the most one line may expand to"
        );
        let mut n = 0;
        let e = parse_lis(
            &[0xff, b' ', b'1', b'\n'][..],
            Path::new("t.lis"),
            &L,
            |_| n += 1,
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "t.lis:1: not UTF-8 text");
    }

    #[test]
    fn long_lines_are_errors_naming_file_and_line() {
        let small = Limits { max_line: 16, ..L };
        // 16 bytes and a line end, or 16 bytes at the end: fine.
        let (ok, long) = (
            format!("1 1{}0", " ".repeat(12)),
            format!("1 1{}0", " ".repeat(13)),
        );
        assert_eq!(ok.len(), 16);
        assert_eq!(
            lis_with(format!("1 1 0 0\n{ok}\n").as_bytes(), &small)
                .unwrap()
                .len(),
            2
        );
        assert_eq!(lis_with(ok.as_bytes(), &small).unwrap().len(), 1);
        for bad in [format!("1 1 0 0\n{long}\n"), format!("1 1 0 0\n{long}")] {
            assert_eq!(
                lis_with(bad.as_bytes(), &small).unwrap_err().to_string(),
                "t.lis:2: line longer than 16 bytes"
            );
        }
        // The default: 64 KiB; a line of 1 MiB is refused after 64 KiB.
        let mut big = b"1 1 0 0\n1 1".to_vec();
        big.resize(1 << 20, b' ');
        struct Counting<'a>(&'a [u8], usize);
        impl Read for Counting<'_> {
            fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
                let n = self.0.read(b)?;
                self.1 += n;
                Ok(n)
            }
        }
        let mut r = Counting(&big, 0);
        let e = parse_lis(BufReader::new(&mut r), Path::new("t.lis"), &L, |_| ()).unwrap_err();
        assert_eq!(e.to_string(), "t.lis:2: line longer than 65536 bytes");
        assert!(r.1 < 128 << 10, "read {} bytes", r.1);
        let e = parse_csv(
            &big[..],
            Path::new("t.csv"),
            &CsvOptions::default(),
            &L,
            |_| (),
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "t.csv:2: line longer than 65536 bytes");
    }

    #[test]
    fn accesses_and_bytes_are_bounded() {
        let few = Limits {
            max_accesses: 5,
            ..L
        };
        assert_eq!(lis_with(b"1 2\n10 3\n", &few).unwrap().len(), 5);
        let mut n = 0;
        let e = parse_lis(&b"1 2\n10 3\n20 1\n"[..], Path::new("t.lis"), &few, |_| {
            n += 1
        })
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "t.lis:3: more than 5 accesses (raise the limit with --trace-max-accesses N)"
        );
        assert_eq!(n, 5);
        // A line that would expand past the limit expands to nothing.
        let mut n = 0;
        let e = parse_lis(&b"1 1\n0 1048576\n"[..], Path::new("t.lis"), &few, |_| {
            n += 1
        })
        .unwrap_err();
        assert!(
            e.to_string().starts_with("t.lis:2: more than 5 accesses"),
            "{e}"
        );
        assert_eq!(n, 1);
        let e = parse_keys(
            &b"a\nb\nc\nd\ne\nf\n"[..],
            Path::new("t.keys"),
            512,
            &few,
            |_| (),
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("t.keys:6: more than 5"), "{e}");
        let e = parse_oracle(&[0u8; 24 * 6][..], Path::new("t.bin"), &few, |_| ()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "t.bin: record 5: more than 5 accesses (raise the limit with --trace-max-accesses N)"
        );

        let tight = Limits { max_bytes: 48, ..L };
        // Exactly the limit: fine; one byte more: an error.
        parse_oracle(&[0u8; 48][..], Path::new("t.bin"), &tight, |_| ()).unwrap();
        let e = parse_oracle(&[0u8; 49][..], Path::new("t.bin"), &tight, |_| ()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "t.bin: more than 48B of trace data after decompression \
             (raise the limit with --trace-max-bytes SIZE)"
        );
        let text = "1 1 0 0\n".repeat(6); // 48 bytes
        assert_eq!(lis_with(text.as_bytes(), &tight).unwrap().len(), 6);
        let e = lis_with(format!("{text}\n").as_bytes(), &tight).unwrap_err();
        assert!(matches!(e, TraceError::TooLarge { limit: 48, .. }), "{e}");
    }

    /// A compressed trace that expands past `--trace-max-bytes` stops at
    /// the limit, with an error naming the file, the limit and the flag.
    #[test]
    fn decompressed_bytes_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let text = "1 1 0 0\n".repeat(1 << 17); // 1 MiB
        let l = Limits {
            max_bytes: 256 << 10,
            ..L
        };
        let zst = dir.path().join("t.lis.zst");
        std::fs::write(&zst, zstd::encode_all(text.as_bytes(), 3).unwrap()).unwrap();
        let gz = dir.path().join("t.lis.gz");
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut e, text.as_bytes()).unwrap();
        std::fs::write(&gz, e.finish().unwrap()).unwrap();
        let xz = dir.path().join("t.lis.xz");
        let mut e = xz2::write::XzEncoder::new(Vec::new(), 1);
        std::io::Write::write_all(&mut e, text.as_bytes()).unwrap();
        std::fs::write(&xz, e.finish().unwrap()).unwrap();
        for p in [&zst, &gz, &xz] {
            assert_eq!(read_all(p, Format::Lis).unwrap().len(), 1 << 17);
            let e = read_all_with(p, Format::Lis, &CsvOptions::default(), &l).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!(
                    "{}: more than 256KiB of trace data after decompression \
                     (raise the limit with --trace-max-bytes SIZE)",
                    p.display()
                )
            );
            let e = read_all_with(p, Format::Oracle, &CsvOptions::default(), &l).unwrap_err();
            assert!(matches!(e, TraceError::TooLarge { .. }), "{e}");
        }
        // Not a zstd, gzip or xz stream: an error naming the file.
        let bogus = dir.path().join("bogus.lis.xz");
        std::fs::write(&bogus, b"not xz at all").unwrap();
        let e = read_all(&bogus, Format::Lis).unwrap_err().to_string();
        assert!(e.starts_with(&bogus.display().to_string()), "{e}");
    }

    #[test]
    fn oracle_records_and_truncation() {
        let mut bytes = vec![];
        for (id, size) in [(5u64, 4096u32), (6, 512)] {
            bytes.extend_from_slice(&1u32.to_le_bytes());
            bytes.extend_from_slice(&id.to_le_bytes());
            bytes.extend_from_slice(&size.to_le_bytes());
            bytes.extend_from_slice(&(-1i64).to_le_bytes());
        }
        let mut v = vec![];
        parse_oracle(&bytes[..], Path::new("t.bin"), &L, |a| v.push(a)).unwrap();
        assert_eq!(
            v,
            vec![Access { id: 5, size: 4096 }, Access { id: 6, size: 512 }]
        );
        let e = parse_oracle(&bytes[..30], Path::new("t.bin"), &L, |_| {}).unwrap_err();
        assert_eq!(e.to_string(), "t.bin: record 1: truncated: 6 of 24 bytes");
    }

    /// Arbitrary bytes through `parser` within small limits: an error or
    /// accesses, never more accesses than the limit, never a panic.
    fn bounded(
        bytes: &[u8],
        l: &Limits,
        parser: impl FnOnce(&[u8], &mut dyn FnMut(Access)) -> Result<(), TraceError>,
    ) {
        let mut n = 0u64;
        let r = parser(bytes, &mut |_| n += 1);
        assert!(n <= l.max_accesses, "{n} accesses over {}", l.max_accesses);
        match r {
            Err(TraceError::TooLarge { limit, .. }) => {
                assert_eq!(limit, l.max_bytes);
                assert!(bytes.len() as u64 > l.max_bytes);
            }
            Err(TraceError::Io { .. }) => panic!("no I/O error from a slice"),
            Err(TraceError::Line { line, .. }) => {
                assert!(line >= 1 && line <= bytes.len() as u64)
            }
            Err(TraceError::Record { record, .. }) => {
                assert!(record <= bytes.len() as u64 / ORACLE_RECORD as u64)
            }
            Ok(()) => assert!(bytes.len() as u64 <= l.max_bytes),
        }
    }

    proptest::proptest! {
        /// Arbitrary bytes never panic any parser.
        #[test]
        fn parsers_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2000), key in 0usize..4, size in proptest::option::of(0usize..4), header in proptest::prelude::any::<bool>()) {
            let mut n = 0u64;
            let _ = parse_lis(&bytes[..], Path::new("f"), &L, |_| n += 1);
            let _ = parse_oracle(&bytes[..], Path::new("f"), &L, |_| n += 1);
            let o = CsvOptions { key_column: key, size_column: size, header, ..CsvOptions::default() };
            let _ = parse_csv(&bytes[..], Path::new("f"), &o, &L, |_| n += 1);
            let _ = parse_keys(&bytes[..], Path::new("f"), 512, &L, |_| n += 1);
        }

        /// Arbitrary bytes, and text made of the parsers' own characters,
        /// within small limits: every parser stays within them.
        #[test]
        fn parsers_stay_within_small_limits(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
            text in "[0-9 ,\n\r]{0,300}",
            max_line in 0usize..40,
            max_bytes in 0u64..400,
            max_accesses in 0u64..50,
        ) {
            let l = Limits { max_line, max_bytes, max_accesses };
            let o = CsvOptions { size_column: Some(1), ..CsvOptions::default() };
            for b in [&bytes[..], text.as_bytes()] {
                bounded(b, &l, |b, f| parse_lis(b, Path::new("f"), &l, f));
                bounded(b, &l, |b, f| parse_oracle(b, Path::new("f"), &l, f));
                bounded(b, &l, |b, f| parse_csv(b, Path::new("f"), &o, &l, f));
                bounded(b, &l, |b, f| parse_keys(b, Path::new("f"), 512, &l, f));
            }
        }
    }
}
