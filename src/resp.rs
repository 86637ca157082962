//! RESP2, the Redis serialization protocol: the codec of the client port.
//!
//! Pure: bytes in, values out; no I/O, no runtime. The server's client port parses
//! with [`parse_command`] and answers with [`Value::encode`]; the `ryu` CLI sends
//! with [`encode_command`] (after [`split_inline`] on what the operator typed) and
//! reads with [`parse_value`]; `fuzz/fuzz_targets/resp_parse.rs` drives both
//! parsers with arbitrary bytes.
//!
//! ```
//! use ryu_server::resp::{encode_command, parse_command, Limits, Value};
//!
//! let mut wire = Vec::new();
//! encode_command(&["SET", "k", "v"], &mut wire);
//! assert_eq!(wire, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n");
//! let (args, consumed) = parse_command(&wire, &Limits::default()).unwrap().unwrap();
//! assert_eq!((args, consumed), (vec![b"SET".to_vec(), b"k".to_vec(), b"v".to_vec()], 27));
//!
//! let mut reply = Vec::new();
//! Value::ok().encode(&mut reply);
//! assert_eq!(reply, b"+OK\r\n");
//! ```
//!
//! # Wire format, byte by byte
//!
//! Every element starts with one type byte; every line ends with CR LF (`0x0d 0x0a`).
//! A length or an integer is ASCII decimal in canonical form: an optional `-`, then
//! `0` or a digit 1-9 followed by digits (no `+`, no leading zero, no `-0`), within
//! `i64`.
//!
//! | type byte   | element       | bytes                                                   |
//! |-------------|---------------|---------------------------------------------------------|
//! | `+` (0x2b)  | simple string | `+`, text, CR LF (the text holds no CR or LF)           |
//! | `-` (0x2d)  | error         | `-`, text, CR LF (text starts with a code: `ERR ...`)   |
//! | `:` (0x3a)  | integer       | `:`, decimal, CR LF                                     |
//! | `$` (0x24)  | bulk string   | `$`, decimal n >= 0, CR LF, n bytes of data, CR LF      |
//! | `$` (0x24)  | null bulk     | `$-1` CR LF (no data, no second CR LF)                  |
//! | `*` (0x2a)  | array         | `*`, decimal n >= 0, CR LF, then n elements of any type |
//! | `*` (0x2a)  | null array    | `*-1` CR LF                                             |
//!
//! Bulk data is length-prefixed, so it may hold any byte, CR LF included; simple
//! strings and errors cannot, so [`Value::encode`] turns CR and LF in them into spaces
//! (a reply can never inject a second reply). Replies nest arrays up to
//! [`MAX_REPLY_DEPTH`] deep.
//!
//! # Commands
//!
//! A command, client to server, is one of:
//!
//! 1. **An array of bulk strings** (first byte `*`), as redis-cli and every client
//!    library send. `*0` and `*-1` are empty commands. Every element must start with
//!    `$`.
//! 2. **An inline command** (any other first byte), for telnet and `nc` users: bytes
//!    up to the first LF, minus a CR just before it, split into arguments by Redis's
//!    rules (`sdssplitargs`):
//!    - blanks (space, tab, CR, LF, VT, FF) separate arguments; a run counts as one;
//!    - `"..."` is double-quoted, with the escapes `\n` `\r` `\t` `\b` `\a` `\xHH`
//!      (two hex digits), and a backslash before any other byte standing for that
//!      byte (`\\`, `\"`);
//!    - `'...'` is single-quoted, with `\'` its only escape;
//!    - a quote may open inside an argument (`a"b c"` is `ab c`), but a closing quote
//!      must be followed by a blank or the end of the line; a quote left open, or
//!      closed against another byte, is "unbalanced quotes";
//!    - an empty or all-blank line is an empty command, which the caller skips.
//!
//! Deliberate differences from Redis: NUL is an ordinary byte in an inline line
//! (Redis ends the line there), and one set of blanks both separates and is skipped
//! (Redis keeps VT and FF inside unquoted arguments). Stricter than Redis: bulk data
//! must be followed by CR LF (Redis skips two bytes unchecked), a count below -1 is
//! an invalid length (Redis takes any count <= 0 as empty), and a length line ends at
//! CR LF, not at a bare CR.
//!
//! # Incremental parsing
//!
//! Parsers take the connection's whole unconsumed buffer and answer `Ok(None)` while
//! its first element is incomplete, `Ok(Some((element, consumed)))` once it is
//! complete (`1 <= consumed <= buf.len()`; the caller drops those bytes and parses
//! again, which is how pipelined commands come out one by one), and
//! `Err(ProtocolError)` as soon as no more bytes could make it valid: the server then
//! replies [`ProtocolError::to_reply`] (`-ERR Protocol error: ...`) and closes the
//! connection, as Redis does. A prefix never contradicts the whole buffer: if a
//! buffer gives anything but `Ok(None)`, every extension of it gives the same answer,
//! so how TCP splits the stream cannot change what is parsed.
//!
//! # Limits
//!
//! [`Limits`] bounds each element, and is checked from headers alone, as soon as the
//! header's CR LF arrives and before any data is buffered:
//!
//! - `max_bulk_bytes` (default 512 KiB): a larger `$n` is an invalid bulk length;
//! - `max_array_len` (default 1 Mi elements): a larger `*n` is an invalid multibulk
//!   length;
//! - `max_inline_bytes` (default 64 KiB): the longest inline command line, and the
//!   longest header or simple line, so a client cannot grow a line without end.
//!
//! Memory follows the bytes received, never a declared length: data is copied only
//! once all of it is present, and arrays reserve at most [`PREALLOC_ITEMS_MAX`]
//! slots up front. An incomplete command is scanned without copying. The limits
//! bound elements, not a whole command (a maximal array of maximal bulks is 512 GiB):
//! the connection caps its buffer, as Redis's `client-query-buffer-limit` does.

use std::fmt;

/// The line terminator.
const CRLF: &[u8; 2] = b"\r\n";

/// Arrays nested deeper than this in a reply are rejected (the top-level array is at
/// depth 1), so a reply cannot exhaust the parser's stack.
pub const MAX_REPLY_DEPTH: usize = 32;

/// Slots an array reserves before its elements arrive, whatever count it declares.
pub const PREALLOC_ITEMS_MAX: usize = 1024;

/// One RESP2 element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// `+text`: a short status, such as `OK`. CR and LF are sent as spaces.
    Simple(String),
    /// `-CODE message`: an error reply. CR and LF are sent as spaces.
    Error(String),
    /// `:n`.
    Integer(i64),
    /// `$n` and n bytes: binary-safe data.
    Bulk(Vec<u8>),
    /// `$-1`: the null bulk string (a missing key).
    Nil,
    /// `*-1`: the null array (an aborted `EXEC`, a timed-out blocking pop).
    NilArray,
    /// `*n` and n elements.
    Array(Vec<Value>),
}

impl Value {
    /// `+OK`.
    pub fn ok() -> Value {
        Value::Simple("OK".to_owned())
    }

    /// `+text`.
    pub fn simple(text: impl Into<String>) -> Value {
        Value::Simple(text.into())
    }

    /// `-ERR message`: the generic error code, prepended here.
    pub fn error(message: impl fmt::Display) -> Value {
        Value::Error(format!("ERR {message}"))
    }

    /// `-CODE message`, for errors with their own code (`WRONGTYPE`, `MOVED`, ...).
    pub fn error_with_code(code: &str, message: impl fmt::Display) -> Value {
        Value::Error(format!("{code} {message}"))
    }

    /// `$n` and the bytes.
    pub fn bulk(data: impl Into<Vec<u8>>) -> Value {
        Value::Bulk(data.into())
    }

    /// Appends the encoding of `self` to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Value::Simple(text) => push_text_line(out, b'+', text),
            Value::Error(text) => push_text_line(out, b'-', text),
            Value::Integer(n) => {
                out.push(b':');
                push_decimal(out, *n < 0, n.unsigned_abs());
                out.extend_from_slice(CRLF);
            }
            Value::Bulk(data) => push_bulk(out, data),
            Value::Nil => out.extend_from_slice(b"$-1\r\n"),
            Value::NilArray => out.extend_from_slice(b"*-1\r\n"),
            Value::Array(items) => {
                push_header(out, b'*', items.len());
                for item in items {
                    item.encode(out);
                }
            }
        }
    }

    /// The encoding of `self`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }
}

/// Appends `args` as an array of bulk strings: the form a client sends a command in.
pub fn encode_command<A: AsRef<[u8]>>(args: &[A], out: &mut Vec<u8>) {
    push_header(out, b'*', args.len());
    for arg in args {
        push_bulk(out, arg.as_ref());
    }
}

/// `type_byte`, `text` with CR and LF replaced by spaces, CR LF.
fn push_text_line(out: &mut Vec<u8>, type_byte: u8, text: &str) {
    out.push(type_byte);
    let text_start = out.len();
    out.extend(
        text.bytes()
            .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
    debug_assert!(!out[text_start..].contains(&b'\r') && !out[text_start..].contains(&b'\n'));
    out.extend_from_slice(CRLF);
}

fn push_bulk(out: &mut Vec<u8>, data: &[u8]) {
    push_header(out, b'$', data.len());
    out.extend_from_slice(data);
    out.extend_from_slice(CRLF);
}

/// `type_byte`, `len` in decimal, CR LF.
fn push_header(out: &mut Vec<u8>, type_byte: u8, len: usize) {
    out.push(type_byte);
    // usize is at most 64 bits on every target Rust supports.
    push_decimal(out, false, len as u64);
    out.extend_from_slice(CRLF);
}

/// Canonical decimal: `-` if `negative`, then `magnitude` without leading zeros.
fn push_decimal(out: &mut Vec<u8>, negative: bool, magnitude: u64) {
    const DIGITS_MAX: usize = 20; // u64::MAX = 18446744073709551615
    let mut digits = [0u8; DIGITS_MAX];
    let mut start = DIGITS_MAX;
    let mut rest = magnitude;
    loop {
        start -= 1;
        digits[start] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    if negative {
        out.push(b'-');
    }
    out.extend_from_slice(&digits[start..]);
}

/// A command's arguments, the command name first, as [`parse_command`] yields them.
pub type Args = Vec<Vec<u8>>;

/// Bounds on what a peer can make a parser buffer or build. See the module doc.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted bulk string (`$n`), in bytes.
    pub max_bulk_bytes: usize,
    /// Largest accepted array (`*n`), in elements.
    pub max_array_len: usize,
    /// Longest inline command line, and longest header or simple line, in bytes
    /// (without the line terminator).
    pub max_inline_bytes: usize,
}

impl Default for Limits {
    /// Redis's own defaults, except bulk strings: 512 KiB instead of 512 MiB, since no
    /// Ryu key or value comes near that.
    fn default() -> Limits {
        Limits {
            max_bulk_bytes: 512 * 1024,
            max_array_len: 1024 * 1024,
            max_inline_bytes: 64 * 1024,
        }
    }
}

/// Bytes that can never become valid RESP. The `Display` text is what Redis says in
/// the same case; send it with [`ProtocolError::to_reply`] and close the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProtocolError {
    /// `*n` with n not canonical decimal, below -1, or above `max_array_len`.
    InvalidMultibulkLength,
    /// `$n` with n not canonical decimal, negative (`$-1` in a reply is the null
    /// bulk), or above `max_bulk_bytes`.
    InvalidBulkLength,
    /// An element of a command array did not start with `$`.
    ExpectedBulk { got: u8 },
    /// No CR LF within `max_inline_bytes` after a command's `*`.
    TooBigMultibulkCount,
    /// No CR LF within `max_inline_bytes` after a command element's `$`.
    TooBigBulkCount,
    /// An inline command line longer than `max_inline_bytes`.
    TooBigInlineRequest,
    /// An inline quote left open, or closed against a byte other than a blank.
    UnbalancedQuotes,
    /// The n data bytes of a bulk string were not followed by CR LF.
    BulkNotTerminated,
    /// A reply element did not start with `+`, `-`, `:`, `$` or `*`.
    InvalidReplyType { got: u8 },
    /// `:n` with n not canonical decimal within `i64`.
    InvalidInteger,
    /// No CR LF within `max_inline_bytes` after a reply element's type byte.
    TooBigReplyLine,
    /// Reply arrays nested more than [`MAX_REPLY_DEPTH`] deep.
    NestedTooDeep,
}

impl ProtocolError {
    /// `-ERR Protocol error: ...`, the reply before closing the connection.
    pub fn to_reply(&self) -> Value {
        Value::error(self)
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Protocol error: ")?;
        match self {
            ProtocolError::InvalidMultibulkLength => f.write_str("invalid multibulk length"),
            ProtocolError::InvalidBulkLength => f.write_str("invalid bulk length"),
            ProtocolError::ExpectedBulk { got } => {
                write!(f, "expected '$', got '{}'", ByteRepr(*got))
            }
            ProtocolError::TooBigMultibulkCount => f.write_str("too big mbulk count string"),
            ProtocolError::TooBigBulkCount => f.write_str("too big bulk count string"),
            ProtocolError::TooBigInlineRequest => f.write_str("too big inline request"),
            ProtocolError::UnbalancedQuotes => f.write_str("unbalanced quotes in request"),
            ProtocolError::BulkNotTerminated => f.write_str("bulk data not followed by CRLF"),
            ProtocolError::InvalidReplyType { got } => {
                write!(f, "invalid reply type '{}'", ByteRepr(*got))
            }
            ProtocolError::InvalidInteger => f.write_str("invalid integer"),
            ProtocolError::TooBigReplyLine => f.write_str("too big reply line"),
            ProtocolError::NestedTooDeep => {
                write!(f, "arrays nested deeper than {MAX_REPLY_DEPTH}")
            }
        }
    }
}

impl std::error::Error for ProtocolError {}

/// A byte as printable ASCII, or `\xHH`: Redis prints the raw byte, which could be a
/// CR or invalid UTF-8.
struct ByteRepr(u8);

impl fmt::Display for ByteRepr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == b' ' || self.0.is_ascii_graphic() {
            write!(f, "{}", char::from(self.0))
        } else {
            write!(f, "\\x{:02x}", self.0)
        }
    }
}

/// Parses the first command in `buf`: an array of bulk strings or an inline line.
///
/// `Ok(None)`: incomplete, read more. `Ok(Some((args, consumed)))`: one command made
/// of the first `consumed` bytes; `args` is empty for an empty command (a blank
/// inline line, `*0`, `*-1`), which the caller skips. `Err`: reply
/// [`ProtocolError::to_reply`] and close.
pub fn parse_command(buf: &[u8], limits: &Limits) -> Result<Option<(Args, usize)>, ProtocolError> {
    let parsed = match buf.first() {
        None => None,
        Some(b'*') => parse_multibulk_command(buf, limits)?,
        Some(_) => parse_inline_command(buf, limits)?,
    };
    if let Some((_, consumed)) = &parsed {
        assert!(1 <= *consumed && *consumed <= buf.len());
    }
    Ok(parsed)
}

fn parse_multibulk_command(
    buf: &[u8],
    limits: &Limits,
) -> Result<Option<(Args, usize)>, ProtocolError> {
    // Scan first, copy second: an incomplete command (a large one arrives over many
    // reads) costs no allocation.
    let Some((count, consumed)) = walk_multibulk_command(buf, limits, &mut |_| {})? else {
        return Ok(None);
    };
    let mut args = Vec::with_capacity(count.min(PREALLOC_ITEMS_MAX));
    let walked = walk_multibulk_command(&buf[..consumed], limits, &mut |arg| {
        args.push(arg.to_vec());
    });
    assert_eq!(walked, Ok(Some((count, consumed))));
    assert_eq!(args.len(), count);
    Ok(Some((args, consumed)))
}

/// Walks the `*n` command at the start of `buf`, calling `on_arg` with each argument
/// in order. Returns the argument count and the bytes consumed, or `None` when
/// incomplete.
fn walk_multibulk_command(
    buf: &[u8],
    limits: &Limits,
    on_arg: &mut dyn FnMut(&[u8]),
) -> Result<Option<(usize, usize)>, ProtocolError> {
    assert_eq!(buf.first(), Some(&b'*'));
    let (header, mut pos) = match crlf_line(buf, 1, limits.max_inline_bytes) {
        Line::Complete { content, next } => (content, next),
        Line::Partial => return Ok(None),
        Line::TooLong => return Err(ProtocolError::TooBigMultibulkCount),
    };
    let count = match parse_decimal(header) {
        Some(-1) => 0,
        Some(n) => usize::try_from(n)
            .ok()
            .filter(|&n| n <= limits.max_array_len)
            .ok_or(ProtocolError::InvalidMultibulkLength)?,
        None => return Err(ProtocolError::InvalidMultibulkLength),
    };
    for _ in 0..count {
        match buf.get(pos) {
            None => return Ok(None),
            Some(b'$') => {}
            Some(&got) => return Err(ProtocolError::ExpectedBulk { got }),
        }
        let (header, data_start) = match crlf_line(buf, pos + 1, limits.max_inline_bytes) {
            Line::Complete { content, next } => (content, next),
            Line::Partial => return Ok(None),
            Line::TooLong => return Err(ProtocolError::TooBigBulkCount),
        };
        let len = parse_decimal(header)
            .and_then(|n| usize::try_from(n).ok())
            .filter(|&n| n <= limits.max_bulk_bytes)
            .ok_or(ProtocolError::InvalidBulkLength)?;
        let Some((data, next)) = bulk_data(buf, data_start, len)? else {
            return Ok(None);
        };
        on_arg(data);
        pos = next;
    }
    Ok(Some((count, pos)))
}

/// The `len` data bytes at `data_start` and the position after their CR LF, or `None`
/// when not all of them have arrived.
fn bulk_data(
    buf: &[u8],
    data_start: usize,
    len: usize,
) -> Result<Option<(&[u8], usize)>, ProtocolError> {
    // Saturating: a sum past usize::MAX is past the buffer too.
    let data_end = data_start.saturating_add(len);
    let next = data_end.saturating_add(CRLF.len());
    if next > buf.len() {
        return Ok(None);
    }
    if &buf[data_end..next] != CRLF {
        return Err(ProtocolError::BulkNotTerminated);
    }
    Ok(Some((&buf[data_start..data_end], next)))
}

fn parse_inline_command(
    buf: &[u8],
    limits: &Limits,
) -> Result<Option<(Args, usize)>, ProtocolError> {
    // A line within the limit has its LF at most at index max + 1 (after a CR), so
    // searching further would only find lines that are too long anyway.
    let window = &buf[..buf.len().min(limits.max_inline_bytes.saturating_add(2))];
    let Some(lf_index) = window.iter().position(|&b| b == b'\n') else {
        // The line is at least this long, its last byte being a CR that may yet be
        // followed by the LF.
        let len_min = window.len() - usize::from(window.last() == Some(&b'\r'));
        if len_min > limits.max_inline_bytes {
            return Err(ProtocolError::TooBigInlineRequest);
        }
        return Ok(None);
    };
    let line = &buf[..lf_index];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.len() > limits.max_inline_bytes {
        return Err(ProtocolError::TooBigInlineRequest);
    }
    Ok(Some((split_inline(line)?, lf_index + 1)))
}

/// Splits one inline command line (without its line terminator) into arguments by
/// the quoting rules in the module doc. The CLI uses it on what the operator types.
pub fn split_inline(line: &[u8]) -> Result<Vec<Vec<u8>>, ProtocolError> {
    let mut args = Vec::new();
    let mut pos = 0;
    loop {
        while line.get(pos).is_some_and(|&b| is_blank(b)) {
            pos += 1;
        }
        if pos == line.len() {
            return Ok(args);
        }
        let mut arg = Vec::new();
        loop {
            match line.get(pos) {
                None => break,
                Some(&b) if is_blank(b) => break,
                Some(&quote @ (b'"' | b'\'')) => {
                    pos = if quote == b'"' {
                        double_quoted(line, pos + 1, &mut arg)?
                    } else {
                        single_quoted(line, pos + 1, &mut arg)?
                    };
                    // A closing quote ends the argument: `"a"b` is not `ab`.
                    if line.get(pos).is_some_and(|&b| !is_blank(b)) {
                        return Err(ProtocolError::UnbalancedQuotes);
                    }
                    break;
                }
                Some(&b) => {
                    arg.push(b);
                    pos += 1;
                }
            }
        }
        args.push(arg);
    }
}

/// C's `isspace`, which Redis uses to separate inline arguments.
fn is_blank(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n' | 0x0b | 0x0c)
}

/// Appends the double-quoted text starting at `pos` (after the opening quote) to
/// `arg`; returns the position after the closing quote.
fn double_quoted(line: &[u8], mut pos: usize, arg: &mut Vec<u8>) -> Result<usize, ProtocolError> {
    loop {
        match line.get(pos) {
            None => return Err(ProtocolError::UnbalancedQuotes),
            Some(b'"') => return Ok(pos + 1),
            Some(b'\\') => {
                let Some(&escaped) = line.get(pos + 1) else {
                    return Err(ProtocolError::UnbalancedQuotes);
                };
                let hex_pair = line
                    .get(pos + 2)
                    .and_then(|&b| hex_value(b))
                    .zip(line.get(pos + 3).and_then(|&b| hex_value(b)));
                match (escaped, hex_pair) {
                    (b'x', Some((high, low))) => {
                        arg.push(high << 4 | low);
                        pos += 4;
                    }
                    _ => {
                        arg.push(match escaped {
                            b'n' => b'\n',
                            b'r' => b'\r',
                            b't' => b'\t',
                            b'b' => 0x08,
                            b'a' => 0x07,
                            other => other,
                        });
                        pos += 2;
                    }
                }
            }
            Some(&b) => {
                arg.push(b);
                pos += 1;
            }
        }
    }
}

/// Appends the single-quoted text starting at `pos` (after the opening quote) to
/// `arg`; returns the position after the closing quote.
fn single_quoted(line: &[u8], mut pos: usize, arg: &mut Vec<u8>) -> Result<usize, ProtocolError> {
    loop {
        match line.get(pos) {
            None => return Err(ProtocolError::UnbalancedQuotes),
            Some(b'\\') if line.get(pos + 1) == Some(&b'\'') => {
                arg.push(b'\'');
                pos += 2;
            }
            Some(b'\'') => return Ok(pos + 1),
            Some(&b) => {
                arg.push(b);
                pos += 1;
            }
        }
    }
}

fn hex_value(b: u8) -> Option<u8> {
    char::from(b).to_digit(16).map(|digit| digit as u8)
}

/// Parses the first reply in `buf`: any RESP2 element, arrays nested up to
/// [`MAX_REPLY_DEPTH`] deep.
///
/// `Ok(None)`: incomplete, read more. `Ok(Some((value, consumed)))`: one reply made
/// of the first `consumed` bytes. Simple strings and errors that are not UTF-8 are
/// decoded lossily.
pub fn parse_value(buf: &[u8], limits: &Limits) -> Result<Option<(Value, usize)>, ProtocolError> {
    let parsed = parse_value_at(buf, 0, limits, 0)?;
    if let Some((_, consumed)) = &parsed {
        assert!(1 <= *consumed && *consumed <= buf.len());
    }
    Ok(parsed)
}

/// Parses the element at `pos`, inside `depth` arrays; returns it and the position
/// after it.
fn parse_value_at(
    buf: &[u8],
    pos: usize,
    limits: &Limits,
    depth: usize,
) -> Result<Option<(Value, usize)>, ProtocolError> {
    let Some(&type_byte) = buf.get(pos) else {
        return Ok(None);
    };
    if !matches!(type_byte, b'+' | b'-' | b':' | b'$' | b'*') {
        return Err(ProtocolError::InvalidReplyType { got: type_byte });
    }
    let (line, next) = match crlf_line(buf, pos + 1, limits.max_inline_bytes) {
        Line::Complete { content, next } => (content, next),
        Line::Partial => return Ok(None),
        Line::TooLong => return Err(ProtocolError::TooBigReplyLine),
    };
    let text = || String::from_utf8_lossy(line).into_owned();
    let value = match type_byte {
        b'+' => Value::Simple(text()),
        b'-' => Value::Error(text()),
        b':' => Value::Integer(parse_decimal(line).ok_or(ProtocolError::InvalidInteger)?),
        b'$' => match parse_decimal(line) {
            Some(-1) => Value::Nil,
            n => {
                let len = n
                    .and_then(|n| usize::try_from(n).ok())
                    .filter(|&n| n <= limits.max_bulk_bytes)
                    .ok_or(ProtocolError::InvalidBulkLength)?;
                let Some((data, next)) = bulk_data(buf, next, len)? else {
                    return Ok(None);
                };
                return Ok(Some((Value::Bulk(data.to_vec()), next)));
            }
        },
        b'*' => match parse_decimal(line) {
            Some(-1) => Value::NilArray,
            n => {
                let count = n
                    .and_then(|n| usize::try_from(n).ok())
                    .filter(|&n| n <= limits.max_array_len)
                    .ok_or(ProtocolError::InvalidMultibulkLength)?;
                if depth + 1 > MAX_REPLY_DEPTH {
                    return Err(ProtocolError::NestedTooDeep);
                }
                let mut items = Vec::with_capacity(count.min(PREALLOC_ITEMS_MAX));
                let mut item_pos = next;
                for _ in 0..count {
                    let Some((item, after)) = parse_value_at(buf, item_pos, limits, depth + 1)?
                    else {
                        return Ok(None);
                    };
                    items.push(item);
                    item_pos = after;
                }
                return Ok(Some((Value::Array(items), item_pos)));
            }
        },
        _ => unreachable!("type byte checked above"),
    };
    Ok(Some((value, next)))
}

/// What [`crlf_line`] found.
#[derive(Debug)]
enum Line<'a> {
    /// The bytes before the CR LF, and the position after it.
    Complete { content: &'a [u8], next: usize },
    /// No CR LF yet, and the line is within the limit so far.
    Partial,
    /// The line is longer than the limit, whatever comes next.
    TooLong,
}

/// The line starting at `start` (`start <= buf.len()`) and ending at the first CR
/// LF, at most `max_bytes` long. A bare CR or LF is part of the line.
fn crlf_line(buf: &[u8], start: usize, max_bytes: usize) -> Line<'_> {
    let rest = &buf[start..];
    // A CR LF ending a line within the limit begins at most at index `max_bytes`.
    let window = &rest[..rest.len().min(max_bytes.saturating_add(2))];
    match window.windows(2).position(|pair| pair == CRLF) {
        Some(len) => {
            assert!(len <= max_bytes);
            Line::Complete {
                content: &rest[..len],
                next: start + len + CRLF.len(),
            }
        }
        None => {
            // The line is at least this long, its last byte being a CR that may yet be
            // followed by the LF.
            let len_min = window.len() - usize::from(window.last() == Some(&b'\r'));
            if len_min > max_bytes {
                Line::TooLong
            } else {
                Line::Partial
            }
        }
    }
}

/// Canonical decimal within `i64`: `0`, or an optional `-` and a digit 1-9 followed
/// by digits. Anything else (empty, `+1`, `01`, `-0`, overflow) is `None`.
fn parse_decimal(text: &[u8]) -> Option<i64> {
    let (negative, digits) = match text {
        [b'-', digits @ ..] => (true, digits),
        digits => (false, digits),
    };
    match digits {
        [b'0'] if !negative => return Some(0),
        [b'1'..=b'9', ..] => {}
        _ => return None,
    }
    let mut magnitude: u64 = 0;
    for &digit in digits {
        if !digit.is_ascii_digit() {
            return None;
        }
        magnitude = magnitude
            .checked_mul(10)?
            .checked_add(u64::from(digit - b'0'))?;
    }
    if negative {
        0i64.checked_sub_unsigned(magnitude)
    } else {
        i64::try_from(magnitude).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;

    // ---- helpers ----

    fn command(buf: &[u8]) -> Result<Option<(Args, usize)>, ProtocolError> {
        parse_command(buf, &Limits::default())
    }

    fn command_error(buf: &[u8]) -> String {
        match command(buf) {
            Err(error) => error.to_string(),
            other => panic!("expected an error for {buf:?}, got {other:?}"),
        }
    }

    fn value(buf: &[u8]) -> Result<Option<(Value, usize)>, ProtocolError> {
        parse_value(buf, &Limits::default())
    }

    fn value_error(buf: &[u8]) -> String {
        match value(buf) {
            Err(error) => error.to_string(),
            other => panic!("expected an error for {buf:?}, got {other:?}"),
        }
    }

    /// The arguments of the inline command `line`, which must be complete.
    fn inline(line: &str) -> Vec<String> {
        let (args, consumed) = command(line.as_bytes()).unwrap().unwrap();
        assert_eq!(consumed, line.len());
        args.into_iter()
            .map(|arg| String::from_utf8(arg).unwrap())
            .collect()
    }

    fn args(strs: &[&str]) -> Vec<Vec<u8>> {
        strs.iter().map(|s| s.as_bytes().to_vec()).collect()
    }

    /// What `value` looks like after a trip over the wire: CR and LF in text are
    /// spaces.
    fn sanitized(value: &Value) -> Value {
        let clean = |s: &str| s.replace(['\r', '\n'], " ");
        match value {
            Value::Simple(s) => Value::Simple(clean(s)),
            Value::Error(s) => Value::Error(clean(s)),
            Value::Array(items) => Value::Array(items.iter().map(sanitized).collect()),
            other => other.clone(),
        }
    }

    /// `args` as an inline line: each argument double-quoted, escaping what must be.
    fn inline_double_quoted(args: &[Vec<u8>]) -> Vec<u8> {
        let mut line = Vec::new();
        for arg in args {
            line.extend_from_slice(b" \"");
            for &b in arg {
                match b {
                    b'"' | b'\\' => line.extend_from_slice(&[b'\\', b]),
                    b' '..=b'~' => line.push(b),
                    _ => line.extend_from_slice(format!("\\x{b:02X}").as_bytes()),
                }
            }
            line.push(b'"');
        }
        line.extend_from_slice(b"\r\n");
        line
    }

    /// `args` as an inline line: each argument single-quoted. `None` if an argument
    /// has a LF (it would end the line) or ends in a backslash (it would escape the
    /// closing quote): single quotes cannot say those.
    fn inline_single_quoted(args: &[Vec<u8>]) -> Option<Vec<u8>> {
        if args
            .iter()
            .any(|arg| arg.contains(&b'\n') || arg.ends_with(b"\\"))
        {
            return None;
        }
        let mut line = Vec::new();
        for arg in args {
            line.extend_from_slice(b"\t'");
            for &b in arg {
                if b == b'\'' {
                    line.extend_from_slice(b"\\'");
                } else {
                    line.push(b);
                }
            }
            line.push(b'\'');
        }
        line.push(b'\n');
        Some(line)
    }

    fn small_limits() -> Limits {
        Limits {
            max_bulk_bytes: 8,
            max_array_len: 4,
            max_inline_bytes: 12,
        }
    }

    // ---- encoding ----

    #[test]
    fn encodes_every_variant() {
        let cases: &[(Value, &[u8])] = &[
            (Value::ok(), b"+OK\r\n"),
            (Value::simple("PONG"), b"+PONG\r\n"),
            (Value::error("unknown command"), b"-ERR unknown command\r\n"),
            (
                Value::error_with_code("WRONGTYPE", "wrong kind"),
                b"-WRONGTYPE wrong kind\r\n",
            ),
            (Value::Integer(0), b":0\r\n"),
            (Value::Integer(-42), b":-42\r\n"),
            (Value::Integer(i64::MIN), b":-9223372036854775808\r\n"),
            (Value::Integer(i64::MAX), b":9223372036854775807\r\n"),
            (Value::bulk("a\r\nb"), b"$4\r\na\r\nb\r\n"),
            (Value::bulk(""), b"$0\r\n\r\n"),
            (Value::Nil, b"$-1\r\n"),
            (Value::NilArray, b"*-1\r\n"),
            (Value::Array(vec![]), b"*0\r\n"),
            (
                Value::Array(vec![Value::Integer(1), Value::Array(vec![Value::Nil])]),
                b"*2\r\n:1\r\n*1\r\n$-1\r\n",
            ),
        ];
        for (value, bytes) in cases {
            assert_eq!(value.to_bytes(), *bytes, "{value:?}");
        }
    }

    #[test]
    fn simple_and_error_text_cannot_inject_lines() {
        assert_eq!(
            Value::simple("OK\r\n+INJECTED").to_bytes(),
            b"+OK  +INJECTED\r\n"
        );
        assert_eq!(
            Value::error("bad\rkey\nname").to_bytes(),
            b"-ERR bad key name\r\n"
        );
    }

    #[test]
    fn encodes_commands_as_bulk_arrays() {
        let mut out = Vec::new();
        encode_command(&[b"GET".as_slice(), b"k\r\n"], &mut out);
        assert_eq!(out, b"*2\r\n$3\r\nGET\r\n$3\r\nk\r\n\r\n");
        out.clear();
        encode_command::<&str>(&[], &mut out);
        assert_eq!(out, b"*0\r\n");
    }

    #[test]
    fn protocol_error_reply_is_err_line() {
        assert_eq!(
            ProtocolError::InvalidBulkLength.to_reply().to_bytes(),
            b"-ERR Protocol error: invalid bulk length\r\n"
        );
        assert_eq!(
            ProtocolError::ExpectedBulk { got: b'\r' }
                .to_reply()
                .to_bytes(),
            b"-ERR Protocol error: expected '$', got '\\x0d'\r\n"
        );
    }

    // ---- parse_command: arrays ----

    #[test]
    fn parses_array_command_and_leaves_the_next_one() {
        let buf = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*1\r\n$4\r\nPING\r\n";
        let (first, consumed) = command(buf).unwrap().unwrap();
        assert_eq!(first, args(&["GET", "k"]));
        assert_eq!(consumed, 20);
        let (second, consumed_second) = command(&buf[consumed..]).unwrap().unwrap();
        assert_eq!(second, args(&["PING"]));
        assert_eq!(consumed + consumed_second, buf.len());
    }

    #[test]
    fn array_command_bulks_are_binary_safe() {
        let (parsed, _) = command(b"*1\r\n$5\r\n\0\r\n\xff \r\n").unwrap().unwrap();
        assert_eq!(parsed, vec![b"\0\r\n\xff ".to_vec()]);
    }

    #[test]
    fn empty_arrays_are_empty_commands() {
        assert_eq!(command(b"*0\r\n"), Ok(Some((vec![], 4))));
        assert_eq!(command(b"*-1\r\nPING"), Ok(Some((vec![], 5))));
        assert_eq!(command(b""), Ok(None));
    }

    #[test]
    fn invalid_multibulk_length() {
        for buf in [
            &b"*x\r\n"[..],
            b"*\r\n",
            b"*-2\r\n",
            b"*+1\r\n",
            b"*01\r\n",
            b"*-0\r\n",
            b"*1 \r\n",
            b"*1\r\r\n",
            b"*99999999999999999999\r\n",
            b"*1048577\r\n",
        ] {
            assert_eq!(
                command_error(buf),
                "Protocol error: invalid multibulk length",
                "{buf:?}"
            );
        }
        assert!(matches!(command(b"*1048576\r\n"), Ok(None)));
    }

    #[test]
    fn invalid_bulk_length() {
        for buf in [
            &b"*1\r\n$x\r\n"[..],
            b"*1\r\n$-1\r\n",
            b"*1\r\n$\r\n",
            b"*1\r\n$03\r\n",
            b"*1\r\n$524289\r\n",
        ] {
            assert_eq!(
                command_error(buf),
                "Protocol error: invalid bulk length",
                "{buf:?}"
            );
        }
        assert!(matches!(command(b"*1\r\n$524288\r\n"), Ok(None)));
    }

    /// The header alone condemns an oversized bulk or array: the server must not wait
    /// for (and buffer) the gigabytes it announces.
    #[test]
    fn oversized_lengths_are_rejected_from_the_header() {
        assert_eq!(
            command_error(b"*1\r\n$4294967296\r\n"),
            "Protocol error: invalid bulk length"
        );
        assert_eq!(
            command_error(b"*4294967296\r\n"),
            "Protocol error: invalid multibulk length"
        );
        assert_eq!(
            value_error(b"$4294967296\r\n"),
            "Protocol error: invalid bulk length"
        );
        assert_eq!(
            value_error(b"*4294967296\r\n"),
            "Protocol error: invalid multibulk length"
        );
    }

    #[test]
    fn expected_dollar() {
        assert_eq!(
            command_error(b"*1\r\nx"),
            "Protocol error: expected '$', got 'x'"
        );
        assert_eq!(
            command_error(b"*2\r\n$1\r\na\r\n:1\r\n"),
            "Protocol error: expected '$', got ':'"
        );
        assert_eq!(
            command_error(b"*1\r\n\xff"),
            "Protocol error: expected '$', got '\\xff'"
        );
    }

    #[test]
    fn too_big_count_strings() {
        let limits = Limits::default();
        let mut long_count = b"*".to_vec();
        long_count.resize(limits.max_inline_bytes + 2, b'1');
        assert_eq!(
            command_error(&long_count),
            "Protocol error: too big mbulk count string"
        );
        // One byte shorter could still end in CR LF: wait.
        assert_eq!(
            command(&long_count[..limits.max_inline_bytes + 1]),
            Ok(None)
        );

        let mut long_bulk = b"*1\r\n$".to_vec();
        long_bulk.resize(long_bulk.len() + limits.max_inline_bytes + 1, b'1');
        assert_eq!(
            command_error(&long_bulk),
            "Protocol error: too big bulk count string"
        );
    }

    /// A line exactly `max_inline_bytes` long is within the limit, one byte longer is
    /// not. Pins the search windows: one byte too short, and a line at the limit would
    /// wait for its CR LF forever.
    #[test]
    fn line_limit_is_inclusive() {
        let limits = small_limits();
        let max = limits.max_inline_bytes;
        let line = |head: &str, fill: u8, len: usize, end: &str| {
            [head.as_bytes(), &vec![fill; len], end.as_bytes()].concat()
        };
        assert_eq!(
            parse_value(&line("+", b'a', max, "\r\n"), &limits),
            Ok(Some((Value::simple("a".repeat(max)), max + 3)))
        );
        assert_eq!(
            parse_value(&line("+", b'a', max + 1, "\r\n"), &limits),
            Err(ProtocolError::TooBigReplyLine)
        );
        let cases = [
            (
                "*",
                ProtocolError::InvalidMultibulkLength,
                ProtocolError::TooBigMultibulkCount,
            ),
            (
                "*1\r\n$",
                ProtocolError::InvalidBulkLength,
                ProtocolError::TooBigBulkCount,
            ),
        ];
        for (head, at_max, over_max) in cases {
            // Zeros: too long to be a valid length, but only the limit says "too big".
            let at = line(head, b'0', max, "\r\n");
            assert_eq!(parse_command(&at, &limits), Err(at_max), "{head:?}");
            let over = line(head, b'0', max + 1, "\r\n");
            assert_eq!(parse_command(&over, &limits), Err(over_max), "{head:?}");
        }
        assert_eq!(
            parse_command(&line("", b'a', max, "\r\n"), &limits),
            Ok(Some((vec![vec![b'a'; max]], max + 2)))
        );
        assert_eq!(
            parse_command(&line("", b'a', max + 1, "\r\n"), &limits),
            Err(ProtocolError::TooBigInlineRequest)
        );
    }

    #[test]
    fn bulk_data_must_end_in_crlf() {
        for buf in [
            &b"*1\r\n$1\r\nab\r\n"[..],
            b"*1\r\n$1\r\na\n\r",
            b"*1\r\n$0\r\nxx",
        ] {
            assert_eq!(
                command_error(buf),
                "Protocol error: bulk data not followed by CRLF",
                "{buf:?}"
            );
        }
        assert_eq!(command(b"*1\r\n$1\r\na\r"), Ok(None));
    }

    // ---- parse_command: inline ----

    #[test]
    fn inline_splits_on_blanks() {
        assert_eq!(inline("SET k v\r\n"), ["SET", "k", "v"]);
        assert_eq!(inline("  GET\t\t k  \n"), ["GET", "k"]);
        assert_eq!(inline("a\x0bb\x0cc\rd\r\n"), ["a", "b", "c", "d"]);
    }

    #[test]
    fn inline_lf_alone_ends_the_line_and_only_the_first_line_is_taken() {
        let (parsed, consumed) = command(b"PING\nPING\r\n").unwrap().unwrap();
        assert_eq!((parsed, consumed), (args(&["PING"]), 5));
        assert_eq!(command(b"PING\r"), Ok(None));
        assert_eq!(command(b"PING"), Ok(None));
    }

    #[test]
    fn inline_empty_lines_are_empty_commands() {
        assert_eq!(command(b"\r\n"), Ok(Some((vec![], 2))));
        assert_eq!(command(b"\n"), Ok(Some((vec![], 1))));
        assert_eq!(command(b" \t \r\n"), Ok(Some((vec![], 5))));
    }

    #[test]
    fn inline_double_quotes_keep_blanks() {
        assert_eq!(inline("SET \"a key\" \"\"\r\n"), ["SET", "a key", ""]);
    }

    #[test]
    fn inline_double_quote_escapes() {
        assert_eq!(
            inline("\"\\n\\r\\t\\b\\a\\\\\\\"\"\n"),
            ["\n\r\t\x08\x07\\\""]
        );
        // Any other escaped byte stands for itself.
        assert_eq!(inline("\"\\q\\ \\'\"\n"), ["q '"]);
    }

    #[test]
    fn inline_hex_escapes() {
        let (parsed, _) = command(b"\"\\x00\\xfF\\x41\"\n").unwrap().unwrap();
        assert_eq!(parsed, vec![b"\x00\xffA".to_vec()]);
        // Without two hex digits, `\x` is just `x`.
        assert_eq!(inline("\"\\xg1\\x4\"\n"), ["xg1x4"]);
    }

    #[test]
    fn inline_single_quotes_are_literal_but_for_escaped_quote() {
        assert_eq!(
            inline("'a \"b\" \\n \\\\ \\x41' 'it\\'s'\n"),
            ["a \"b\" \\n \\\\ \\x41", "it's"]
        );
        assert_eq!(inline("''\n"), [""]);
        // A backslash before the closing quote escapes it: the quote stays open.
        assert_eq!(
            command_error(b"'a\\'\n"),
            "Protocol error: unbalanced quotes in request"
        );
    }

    #[test]
    fn inline_quote_may_open_inside_an_argument() {
        assert_eq!(inline("foo\"bar baz\" x\n"), ["foobar baz", "x"]);
        assert_eq!(inline("a'b c'\n"), ["ab c"]);
    }

    #[test]
    fn inline_nul_is_an_ordinary_byte() {
        let (parsed, _) = command(b"SET k\0v x\n").unwrap().unwrap();
        assert_eq!(parsed, args(&["SET", "k\0v", "x"]));
    }

    #[test]
    fn unbalanced_quotes() {
        for buf in [
            &b"GET \"k\n"[..],
            b"GET 'k\r\n",
            b"GET \"k\"x\n",
            b"GET 'k'x\n",
            b"GET \"a\"'b'\n",
            b"GET \"k\\\n",
            b"GET \"k\\\"\n",
            b"GET 'k\\'\n",
        ] {
            assert_eq!(
                command_error(buf),
                "Protocol error: unbalanced quotes in request",
                "{buf:?}"
            );
        }
        assert_eq!(split_inline(b"\"a"), Err(ProtocolError::UnbalancedQuotes));
    }

    #[test]
    fn too_big_inline_request() {
        let limits = Limits::default();
        let max = limits.max_inline_bytes;
        let mut line = vec![b'a'; max];
        assert_eq!(command(&line), Ok(None));
        line.push(b'\r');
        assert_eq!(command(&line), Ok(None));
        line.push(b'\n');
        assert!(matches!(command(&line), Ok(Some((_, n))) if n == max + 2));

        let long = vec![b'a'; max + 1];
        assert_eq!(
            command_error(&long),
            "Protocol error: too big inline request"
        );
        let mut long_line = long;
        long_line.push(b'\n');
        assert_eq!(
            command_error(&long_line),
            "Protocol error: too big inline request"
        );
    }

    #[test]
    fn split_inline_is_the_inline_splitter() {
        assert_eq!(
            split_inline(b" set 'a b' \"c\\x41\" "),
            Ok(args(&["set", "a b", "cA"]))
        );
        assert_eq!(split_inline(b""), Ok(vec![]));
    }

    // ---- parse_value ----

    #[test]
    fn parses_every_reply_type() {
        let cases: &[(&[u8], Value)] = &[
            (b"+OK\r\n", Value::ok()),
            (b"-ERR no\r\n", Value::Error("ERR no".to_owned())),
            (b":-7\r\n", Value::Integer(-7)),
            (b":-9223372036854775808\r\n", Value::Integer(i64::MIN)),
            (b"$3\r\na\r\n\r\n", Value::bulk("a\r\n")),
            (b"$-1\r\n", Value::Nil),
            (b"*-1\r\n", Value::NilArray),
            (b"*0\r\n", Value::Array(vec![])),
            (
                b"*3\r\n+a\r\n*1\r\n:1\r\n$-1\r\n",
                Value::Array(vec![
                    Value::simple("a"),
                    Value::Array(vec![Value::Integer(1)]),
                    Value::Nil,
                ]),
            ),
        ];
        for (bytes, expected) in cases {
            let mut buf = bytes.to_vec();
            buf.extend_from_slice(b"+next\r\n");
            assert_eq!(
                value(&buf),
                Ok(Some((expected.clone(), bytes.len()))),
                "{bytes:?}"
            );
        }
    }

    #[test]
    fn reply_text_keeps_bare_cr_and_lf_and_replaces_bad_utf8() {
        assert_eq!(
            value(b"+a\rb\nc\xff\r\n"),
            Ok(Some((Value::simple("a\rb\nc\u{fffd}"), 9)))
        );
    }

    #[test]
    fn reply_errors() {
        assert_eq!(value_error(b"x"), "Protocol error: invalid reply type 'x'");
        assert_eq!(
            value_error(b"*1\r\n\n"),
            "Protocol error: invalid reply type '\\x0a'"
        );
        for buf in [
            &b":\r\n"[..],
            b":1.5\r\n",
            b":+1\r\n",
            b":9223372036854775808\r\n",
        ] {
            assert_eq!(
                value_error(buf),
                "Protocol error: invalid integer",
                "{buf:?}"
            );
        }
        assert_eq!(
            value_error(b"$-2\r\n"),
            "Protocol error: invalid bulk length"
        );
        assert_eq!(
            value_error(b"$524289\r\n"),
            "Protocol error: invalid bulk length"
        );
        assert_eq!(
            value_error(b"*-2\r\n"),
            "Protocol error: invalid multibulk length"
        );
        assert_eq!(
            value_error(b"$1\r\nabc"),
            "Protocol error: bulk data not followed by CRLF"
        );
        let long = vec![b'+'; Limits::default().max_inline_bytes + 3];
        assert_eq!(value_error(&long), "Protocol error: too big reply line");
    }

    #[test]
    fn reply_depth_limit() {
        let nested = |depth: usize| {
            let mut v = Value::Array(vec![]);
            for _ in 1..depth {
                v = Value::Array(vec![v]);
            }
            v
        };
        let deepest = nested(MAX_REPLY_DEPTH);
        let bytes = deepest.to_bytes();
        assert_eq!(value(&bytes), Ok(Some((deepest, bytes.len()))));
        assert_eq!(
            value_error(&nested(MAX_REPLY_DEPTH + 1).to_bytes()),
            format!("Protocol error: arrays nested deeper than {MAX_REPLY_DEPTH}")
        );
        // The depth is judged from the headers: no need to wait for the rest.
        assert_eq!(
            value(&b"*1\r\n".repeat(MAX_REPLY_DEPTH + 1)),
            Err(ProtocolError::NestedTooDeep)
        );
    }

    #[test]
    fn parse_decimal_is_canonical() {
        assert_eq!(parse_decimal(b"0"), Some(0));
        assert_eq!(parse_decimal(b"-1"), Some(-1));
        assert_eq!(parse_decimal(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_decimal(b"-9223372036854775808"), Some(i64::MIN));
        for bad in [
            &b""[..],
            b"-",
            b"-0",
            b"00",
            b"+1",
            b" 1",
            b"1a",
            b"9223372036854775808",
            b"-9223372036854775809",
            b"99999999999999999999999",
        ] {
            assert_eq!(parse_decimal(bad), None, "{bad:?}");
        }
    }

    // ---- properties ----

    fn arb_text() -> impl Strategy<Value = String> {
        // `(?s)` lets `.` match LF too: text with CR and LF must survive encoding.
        "(?s).{0,12}"
    }

    fn arb_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            arb_text().prop_map(Value::Simple),
            arb_text().prop_map(Value::Error),
            any::<i64>().prop_map(Value::Integer),
            vec(any::<u8>(), 0..24).prop_map(Value::Bulk),
            Just(Value::Nil),
            Just(Value::NilArray),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| vec(inner, 0..6).prop_map(Value::Array))
    }

    fn arb_args() -> impl Strategy<Value = Vec<Vec<u8>>> {
        let arg = prop_oneof![
            vec(any::<u8>(), 0..16),
            vec(prop::sample::select(b" \t\r\n\"'\\x0aZ".to_vec()), 0..8),
        ];
        vec(arg, 0..6)
    }

    /// Bytes that look enough like RESP to reach deep into the parsers.
    fn arb_resp_like() -> impl Strategy<Value = Vec<u8>> {
        let token = prop_oneof![
            prop::sample::select(vec![
                &b"*"[..],
                b"$",
                b"+",
                b"-",
                b":",
                b"\r\n",
                b"\r",
                b"\n",
                b"-1",
                b"0",
                b" ",
                b"\"",
                b"'",
                b"\\",
                b"\\x",
            ])
            .prop_map(|token| token.to_vec()),
            (0u32..16).prop_map(|n| n.to_string().into_bytes()),
            vec(any::<u8>(), 0..4),
        ];
        let mutated_command = (arb_args(), any::<prop::sample::Index>(), any::<u8>()).prop_map(
            |(args, index, byte)| {
                let mut bytes = Vec::new();
                encode_command(&args, &mut bytes);
                let at = index.index(bytes.len());
                bytes[at] = byte;
                bytes
            },
        );
        // Lines around `small_limits().max_inline_bytes` long, where off-by-ones in the
        // line limits would show.
        let near_limit_line = (
            prop::sample::select(vec![&b""[..], b"*", b"*1\r\n$", b"+"]),
            vec(any::<u8>().prop_filter("no LF", |&b| b != b'\n'), 11..14),
            prop::sample::select(vec![&b"\r\n"[..], b"\n", b"\r", b""]),
        )
            .prop_map(|(head, body, end)| [head, &body, end].concat());
        prop_oneof![
            vec(token, 0..32).prop_map(|tokens| tokens.concat()),
            mutated_command,
            near_limit_line,
            arb_value().prop_map(|v| v.to_bytes()),
            vec(any::<u8>(), 0..64),
        ]
    }

    fn arb_limits() -> impl Strategy<Value = Limits> {
        prop_oneof![Just(Limits::default()), Just(small_limits())]
    }

    /// Room for anything a parse under the default or small limits produced, re-encoded.
    fn roomy_limits() -> Limits {
        Limits {
            max_bulk_bytes: usize::MAX,
            max_array_len: usize::MAX,
            max_inline_bytes: usize::MAX,
        }
    }

    proptest! {
        #[test]
        fn values_round_trip(v in arb_value(), trailing in vec(any::<u8>(), 0..8)) {
            let mut bytes = v.to_bytes();
            let len = bytes.len();
            bytes.extend_from_slice(&trailing);
            prop_assert_eq!(value(&bytes), Ok(Some((sanitized(&v), len))));
        }

        #[test]
        fn array_commands_round_trip(args in arb_args(), trailing in vec(any::<u8>(), 0..8)) {
            let mut bytes = Vec::new();
            encode_command(&args, &mut bytes);
            let len = bytes.len();
            bytes.extend_from_slice(&trailing);
            prop_assert_eq!(command(&bytes), Ok(Some((args, len))));
        }

        #[test]
        fn inline_commands_round_trip(args in arb_args(), single in any::<bool>()) {
            let bytes = match single {
                true => inline_single_quoted(&args).unwrap_or_else(|| inline_double_quoted(&args)),
                false => inline_double_quoted(&args),
            };
            prop_assert_eq!(command(&bytes), Ok(Some((args, bytes.len()))));
        }

        #[test]
        fn values_parse_only_when_whole(v in arb_value()) {
            let bytes = v.to_bytes();
            let expected = sanitized(&v);
            for split in 0..bytes.len() {
                prop_assert_eq!(value(&bytes[..split]), Ok(None), "prefix of {} bytes", split);
            }
            prop_assert_eq!(value(&bytes), Ok(Some((expected, bytes.len()))));
        }

        #[test]
        fn commands_parse_only_when_whole(args in arb_args(), form in 0u8..3) {
            let bytes = match form {
                0 => {
                    let mut bytes = Vec::new();
                    encode_command(&args, &mut bytes);
                    bytes
                }
                1 => inline_double_quoted(&args),
                _ => inline_single_quoted(&args).unwrap_or_else(|| inline_double_quoted(&args)),
            };
            for split in 0..bytes.len() {
                prop_assert_eq!(command(&bytes[..split]), Ok(None), "prefix of {} bytes", split);
            }
            prop_assert_eq!(command(&bytes), Ok(Some((args, bytes.len()))));
        }
    }

    proptest! {
        // Cheap cases, and the bugs they look for hide in narrow corners.
        #![proptest_config(ProptestConfig::with_cases(4096))]

        /// Arbitrary bytes: no panic, progress within the buffer, and what a command
        /// parse yields re-encodes to a command that parses back to itself (the fuzz
        /// target's check, on stable).
        #[test]
        fn arbitrary_bytes_are_handled(bytes in arb_resp_like(), limits in arb_limits()) {
            if let Ok(Some((args, consumed))) = parse_command(&bytes, &limits) {
                prop_assert!(1 <= consumed && consumed <= bytes.len());
                let mut encoded = Vec::new();
                encode_command(&args, &mut encoded);
                prop_assert_eq!(
                    parse_command(&encoded, &roomy_limits()),
                    Ok(Some((args, encoded.len())))
                );
            }
            if let Ok(Some((v, consumed))) = parse_value(&bytes, &limits) {
                prop_assert!(1 <= consumed && consumed <= bytes.len());
                let encoded = v.to_bytes();
                let (reparsed, reconsumed) = parse_value(&encoded, &roomy_limits())
                    .expect("re-encoded reply parses")
                    .expect("re-encoded reply is whole");
                prop_assert_eq!(reconsumed, encoded.len());
                prop_assert_eq!(reparsed.to_bytes(), encoded);
            }
        }

        /// A prefix never contradicts the whole: whatever a prefix answers other than
        /// `Ok(None)`, the whole buffer answers too, so TCP segmentation cannot change
        /// what is parsed or whether it is an error.
        #[test]
        fn prefix_never_contradicts_whole(bytes in arb_resp_like(), limits in arb_limits()) {
            let command_whole = parse_command(&bytes, &limits);
            let value_whole = parse_value(&bytes, &limits);
            for split in 0..bytes.len() {
                let prefix = &bytes[..split];
                let command_prefix = parse_command(prefix, &limits);
                if command_prefix != Ok(None) {
                    prop_assert_eq!(command_prefix, command_whole.clone(), "prefix of {} bytes", split);
                }
                let value_prefix = parse_value(prefix, &limits);
                if value_prefix != Ok(None) {
                    prop_assert_eq!(value_prefix, value_whole.clone(), "prefix of {} bytes", split);
                }
            }
        }
    }
}
