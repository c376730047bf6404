//! Trace readers: untrusted bytes in, accesses or errors naming the file and line or record out.

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
/// in `.zst`, `.gz` or `.xz` are decompressed on the fly; no reader panics.
///
/// * `lis`: the ARC paper's traces. Text lines `start nblocks ignored reqno`;
///   each line expands to `nblocks` accesses of the 512-byte pages
///   `start .. start+nblocks`.
/// * `oracle`: libCacheSim's oracleGeneral binary; packed little-endian
///   24-byte records `u32 clock, u64 obj_id, u32 obj_size, i64 next_vtime`.
/// * `csv`: one access per line, the key and (optionally) the size in
///   configurable columns;
/// * `keys`: one key per line.
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
}

/// Opens `path`, decompressing `.zst` transparently.
pub fn open(path: &Path) -> Result<Box<dyn Read + Send>, TraceError> {
    let io = |source| TraceError::Io {
        path: path.into(),
        source,
    };
    let f = File::open(path).map_err(io)?;
    match path.extension().and_then(|e| e.to_str()) {
        Some("zst") => Ok(Box::new(zstd::stream::read::Decoder::new(f).map_err(io)?)),
        Some("gz") => Ok(Box::new(flate2::read::MultiGzDecoder::new(f))),
        Some("xz") => Ok(Box::new(xz2::read::XzDecoder::new_multi_decoder(f))),
        _ => Ok(Box::new(f)),
    }
}

/// Reads a whole trace into memory.
pub fn read_all(path: &Path, format: Format) -> Result<Vec<Access>, TraceError> {
    read_all_with(path, format, &CsvOptions::default())
}

/// Reads a whole trace into memory, with options for text formats.
pub fn read_all_with(
    path: &Path,
    format: Format,
    csv: &CsvOptions,
) -> Result<Vec<Access>, TraceError> {
    let r = open(path)?;
    let mut out = Vec::new();
    match format {
        Format::Lis => parse_lis(BufReader::new(r), path, |a| out.push(a))?,
        Format::Oracle => parse_oracle(r, path, |a| out.push(a))?,
        Format::Csv => parse_csv(BufReader::new(r), path, csv, |a| out.push(a))?,
        Format::Keys => {
            let o = CsvOptions {
                key_column: 0,
                size_column: None,
                delimiter: '\n',
                header: false,
                default_size: csv.default_size,
            };
            parse_csv(BufReader::new(r), path, &o, |a| out.push(a))?
        }
    }
    Ok(out)
}

/// The id of a text key: the number itself, or its xxh3 hash.
pub fn text_id(key: &str) -> u64 {
    key.parse()
        .unwrap_or_else(|_| xxhash_rust::xxh3::xxh3_64(key.as_bytes()))
}

/// Parses a `csv` (or `keys`) trace, calling `f` for every line.
pub fn parse_csv(
    r: impl BufRead,
    path: &Path,
    o: &CsvOptions,
    mut f: impl FnMut(Access),
) -> Result<(), TraceError> {
    let mut first = true;
    for_each_line(r, path, |bad, text| {
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
    mut f: impl FnMut(Access),
) -> Result<(), TraceError> {
    for_each_line(r, path, |bad, text| {
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
                "block count {count} exceeds {LIS_MAX_PAGES_PER_LINE}"
            )));
        }
        if start.checked_add(count).is_none() {
            return Err(bad(format!("pages {start}+{count} overflow")));
        }
        for id in start..start + count {
            f(Access { id, size: LIS_PAGE });
        }
        Ok(())
    })
}

/// Calls `f` with each line of a text trace (without its line end) and a
/// constructor of errors naming the file and the line. Stops at the first
/// error.
fn for_each_line(
    mut r: impl BufRead,
    path: &Path,
    mut f: impl FnMut(&dyn Fn(String) -> TraceError, &str) -> Result<(), TraceError>,
) -> Result<(), TraceError> {
    let mut line_no = 0u64;
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = r
            .read_until(b'\n', &mut line)
            .map_err(|source| TraceError::Io {
                path: path.into(),
                source,
            })?;
        if n == 0 {
            return Ok(());
        }
        line_no += 1;
        let bad = |msg: String| TraceError::Line {
            path: path.into(),
            line: line_no,
            msg,
        };
        let text = std::str::from_utf8(&line).map_err(|_| bad("not UTF-8 text".into()))?;
        f(&bad, text.trim_end_matches(['\n', '\r']))?;
    }
}

/// Size of one oracleGeneral record.
pub const ORACLE_RECORD: usize = 24;

/// Parses an oracleGeneral trace, calling `f` for every record.
pub fn parse_oracle(
    mut r: impl Read,
    path: &Path,
    mut f: impl FnMut(Access),
) -> Result<(), TraceError> {
    let mut buf = vec![0u8; ORACLE_RECORD * 4096];
    let mut filled = 0usize;
    let mut record = 0u64;
    loop {
        let n = r
            .read(&mut buf[filled..])
            .map_err(|source| TraceError::Io {
                path: path.into(),
                source,
            })?;
        filled += n;
        let whole = filled / ORACLE_RECORD * ORACLE_RECORD;
        for rec in buf[..whole].chunks_exact(ORACLE_RECORD) {
            let id = u64::from_le_bytes(rec[4..12].try_into().expect("8 bytes"));
            let size = u32::from_le_bytes(rec[12..16].try_into().expect("4 bytes"));
            f(Access { id, size });
            record += 1;
        }
        buf.copy_within(whole..filled, 0);
        filled -= whole;
        if n == 0 {
            if filled != 0 {
                return Err(TraceError::Record {
                    path: path.into(),
                    record,
                    msg: format!("truncated: {filled} of {ORACLE_RECORD} bytes"),
                });
            }
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lis(s: &str) -> Result<Vec<Access>, TraceError> {
        let mut v = vec![];
        parse_lis(s.as_bytes(), Path::new("t.lis"), |a| v.push(a)).map(|_| v)
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
            |_| (),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "t.csv:2: size \"big\" is not a positive number"
        );
        let e = parse_csv("h\n1\n".as_bytes(), Path::new("t.csv"), &o, |_| ()).unwrap_err();
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
        let v = read_all_with(&p, Format::Keys, &CsvOptions::default()).unwrap();
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
        assert!(lis("18446744073709551615 2 0 0")
            .unwrap_err()
            .to_string()
            .contains("overflow"));
        assert!(lis("1 99999999999 0 0")
            .unwrap_err()
            .to_string()
            .contains("exceeds"));
        let mut n = 0;
        let e = parse_lis(&[0xff, b' ', b'1', b'\n'][..], Path::new("t.lis"), |_| {
            n += 1
        })
        .unwrap_err();
        assert_eq!(e.to_string(), "t.lis:1: not UTF-8 text");
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
        parse_oracle(&bytes[..], Path::new("t.bin"), |a| v.push(a)).unwrap();
        assert_eq!(
            v,
            vec![Access { id: 5, size: 4096 }, Access { id: 6, size: 512 }]
        );
        let e = parse_oracle(&bytes[..30], Path::new("t.bin"), |_| {}).unwrap_err();
        assert_eq!(e.to_string(), "t.bin: record 1: truncated: 6 of 24 bytes");
    }

    proptest::proptest! {
        /// Arbitrary bytes never panic any parser.
        #[test]
        fn parsers_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2000), key in 0usize..4, size in proptest::option::of(0usize..4), header in proptest::prelude::any::<bool>()) {
            let mut n = 0u64;
            let _ = parse_lis(&bytes[..], Path::new("f"), |_| n += 1);
            let _ = parse_oracle(&bytes[..], Path::new("f"), |_| n += 1);
            let o = CsvOptions { key_column: key, size_column: size, header, ..CsvOptions::default() };
            let _ = parse_csv(&bytes[..], Path::new("f"), &o, |_| n += 1);
        }
    }
}
