//! The JSON log line, as tracing-subscriber's `json().flatten_event(true)` lays it out
//! (`timestamp`, `level`, the event's fields in the order they were recorded, `target`),
//! written straight into a reused buffer and handed to the writer in one piece.
//!
//! Why not tracing-subscriber's own JSON format: it formats through serde's visitor
//! machinery and a `String` per timestamp, which made the access log about a quarter of
//! a cache hit's instructions; its `fmt` layer adds a copy and a UTF-8 check per line. Strings are escaped by serde_json, as there.

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::io::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context, Layer};

/// The layer of `log.format = "json"`: each event as one JSON line to `make_writer`
/// (the non-blocking writer in `run`), formatted into a buffer of the thread's and
/// written with one call.
#[derive(Debug, Clone)]
pub struct JsonLayer<W> {
    make_writer: W,
}

impl<W> JsonLayer<W> {
    pub fn new(make_writer: W) -> JsonLayer<W> {
        JsonLayer { make_writer }
    }
}

/// A line's bytes and the text of one `Debug`/`Display` field, kept per thread so a line
/// allocates nothing once the buffers have grown.
#[derive(Default)]
struct Buffers {
    line: Vec<u8>,
    value: String,
}

/// Buffers larger than this after a line are let go, so one huge line does not pin its
/// memory on a worker thread.
const KEEP_AT_MOST: usize = 64 * 1024;

thread_local! {
    static BUFFERS: RefCell<Buffers> = RefCell::new(Buffers::default());
}

impl<S, W> Layer<S> for JsonLayer<W>
where
    S: Subscriber,
    W: for<'a> MakeWriter<'a> + 'static,
{
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        BUFFERS.with(|buffers| match buffers.try_borrow_mut() {
            Ok(mut buffers) => {
                self.write(&mut buffers, event);
                if buffers.line.capacity() > KEEP_AT_MOST || buffers.value.capacity() > KEEP_AT_MOST
                {
                    *buffers = Buffers::default();
                }
            }
            // Not expected (tracing drops events raised inside a subscriber), but a
            // second borrow must not panic.
            Err(_) => self.write(&mut Buffers::default(), event),
        });
    }
}

impl<W: for<'a> MakeWriter<'a>> JsonLayer<W> {
    fn write(&self, buffers: &mut Buffers, event: &Event<'_>) {
        buffers.line.clear();
        write_line(buffers, event, SystemTime::now());
        // Nothing to do about a failed write: the non-blocking writer never fails.
        let _ = self
            .make_writer
            .make_writer_for(event.metadata())
            .write_all(&buffers.line);
    }
}

/// Appends `event` as one JSON line (with its `\n`) to `buffers.line`.
fn write_line(buffers: &mut Buffers, event: &Event<'_>, now: SystemTime) {
    // An event from the `log` crate names its own target and level.
    let normalized = event.normalized_metadata();
    let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
    let line = &mut buffers.line;
    line.extend_from_slice(b"{\"timestamp\":\"");
    write_timestamp(line, now);
    line.extend_from_slice(b"\",\"level\":\"");
    line.extend_from_slice(level_name(meta.level()).as_bytes());
    line.push(b'"');
    event.record(&mut Fields {
        line,
        value: &mut buffers.value,
    });
    line.extend_from_slice(b",\"target\":");
    string(line, meta.target());
    line.extend_from_slice(b"}\n");
}

fn level_name(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARN",
        Level::INFO => "INFO",
        Level::DEBUG => "DEBUG",
        Level::TRACE => "TRACE",
    }
}

/// The bytes JSON escapes in a string (serde_json's set): control characters, `"`, `\`.
static ESCAPED: [bool; 256] = {
    let mut escaped = [false; 256];
    let mut byte = 0;
    while byte < 256 {
        escaped[byte] = byte < 0x20 || byte == b'"' as usize || byte == b'\\' as usize;
        byte += 1;
    }
    escaped
};

/// A JSON string. Text without a quote, a backslash or a control character (nearly all:
/// names, paths, ids) is copied as it is, checked by a branch-free pass over a table;
/// anything else is escaped by serde_json (writing into a `Vec` cannot fail).
fn string(line: &mut Vec<u8>, text: &str) {
    let escape = text
        .bytes()
        .fold(false, |escape, byte| escape | ESCAPED[usize::from(byte)]);
    if !escape {
        line.reserve(text.len() + 2);
        line.push(b'"');
        line.extend_from_slice(text.as_bytes());
        line.push(b'"');
    } else {
        let _ = serde_json::to_writer(&mut *line, text);
    }
}

/// Writes each field as `,"name":value`: numbers and booleans as JSON numbers and
/// booleans, everything else as a string (what tracing-serde does).
struct Fields<'a> {
    line: &'a mut Vec<u8>,
    value: &'a mut String,
}

impl Fields<'_> {
    fn key(&mut self, field: &Field) {
        self.line.push(b',');
        string(self.line, field.name());
        self.line.push(b':');
    }

    fn number(&mut self, field: &Field, value: impl serde::Serialize) {
        self.key(field);
        let _ = serde_json::to_writer(&mut *self.line, &value);
    }
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.key(field);
        string(self.line, value);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.key(field);
        let text: &[u8] = if value { b"true" } else { b"false" };
        self.line.extend_from_slice(text);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.number(field, value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.number(field, value);
    }

    /// serde_json writes a NaN or an infinity as `null`.
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.number(field, value);
    }

    /// `%display` and `?debug` fields, the message, and (through `Visit`'s defaults)
    /// 128-bit integers, errors and bytes.
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.key(field);
        self.value.clear();
        // A `Debug` that fails leaves what it wrote so far.
        let _ = write!(self.value, "{value:?}");
        string(self.line, self.value);
    }
}

/// The date and time to the second of the last line a thread wrote, so most lines only
/// format their microseconds: the Unix second and `2026-12-07T14:01:03`.
struct LastSecond {
    second: u64,
    text: Vec<u8>,
}

thread_local! {
    static LAST_SECOND: RefCell<LastSecond> = const {
        RefCell::new(LastSecond { second: u64::MAX, text: Vec::new() })
    };
}

/// `2026-12-07T14:01:03.123456Z`: UTC, microseconds, as tracing-subscriber's default
/// timer writes it.
fn write_timestamp(line: &mut Vec<u8>, now: SystemTime) {
    let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let second = since_epoch.as_secs();
    let cached = LAST_SECOND.with(|last| match last.try_borrow_mut() {
        Ok(mut last) => {
            if last.second != second {
                last.text.clear();
                write_date_time(&mut last.text, second);
                last.second = second;
            }
            line.extend_from_slice(&last.text);
            true
        }
        Err(_) => false,
    });
    if !cached {
        write_date_time(line, second);
    }
    line.push(b'.');
    digits(line, since_epoch.subsec_micros(), 6);
    line.push(b'Z');
}

/// `2026-12-07T14:01:03` for a Unix second.
fn write_date_time(line: &mut Vec<u8>, unix_second: u64) {
    let seconds = i64::try_from(unix_second).unwrap_or(0);
    let date_time = time::OffsetDateTime::from_unix_timestamp(seconds)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let (year, month, day) = date_time.to_calendar_date();
    let (hour, minute, second) = date_time.to_hms();
    match u32::try_from(year) {
        Ok(year) if year <= 9999 => {
            digits(line, year / 100, 2);
            digits(line, year % 100, 2);
        }
        // Past 9999 (not before 1970: `since_epoch` is never negative).
        _ => {
            let mut text = String::new();
            let _ = write!(text, "+{year}");
            line.extend_from_slice(text.as_bytes());
        }
    }
    line.push(b'-');
    digits(line, u32::from(u8::from(month)), 2);
    line.push(b'-');
    digits(line, u32::from(day), 2);
    line.push(b'T');
    digits(line, u32::from(hour), 2);
    line.push(b':');
    digits(line, u32::from(minute), 2);
    line.push(b':');
    digits(line, u32::from(second), 2);
}

/// `value`'s last `width` decimal digits, zero-padded.
fn digits(line: &mut Vec<u8>, value: u32, width: u32) {
    let mut divisor = 10u32.pow(width - 1);
    while divisor > 0 {
        // `% 10` keeps it one digit even if `value` has more than `width` digits.
        line.push(b'0' + (value / divisor % 10) as u8);
        divisor /= 10;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use crate::telemetry::Captured;

    /// The events whose lines are compared: every kind of field value, strings that need
    /// escaping, and no fields at all.
    fn log_samples() {
        let method = http::Method::GET;
        tracing::info!(
            listener = "ingress",
            method = %method,
            path = %"/a \"quoted\" \\ path\n\t\u{1}\u{7f}é😀",
            status = 200u16,
            latency_ms = 0.123,
            tenant_id = Some(tracing::field::display("4f6a")),
            request_id = %"r-1",
            outcome = "forwarded",
            reason = None::<tracing::field::DisplayValue<&str>>,
            "request"
        );
        tracing::warn!(
            negative = -5i64,
            yes = true,
            no = false,
            big = u128::MAX,
            "a {} message",
            "formatted"
        );
        tracing::error!(nan = f64::NAN, infinite = f64::INFINITY, whole = 3.0, debug = ?vec!["a", "b"]);
        tracing::info!("no fields");
        tracing::info!(target: "some::target", error = &std::io::Error::other("broken \"pipe\"") as &dyn std::error::Error, "with an error");
    }

    fn lines_of(captured: &Captured) -> Vec<String> {
        captured.text().lines().map(str::to_owned).collect()
    }

    /// The lines of `log_samples` through [`JsonLayer`].
    fn our_lines() -> Vec<String> {
        use tracing_subscriber::layer::SubscriberExt;
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber =
            tracing_subscriber::registry().with(JsonLayer::new(move || writer.clone()));
        tracing::subscriber::with_default(subscriber, log_samples);
        lines_of(&captured)
    }

    /// The lines of `log_samples` through tracing-subscriber's JSON format, flattened.
    fn their_lines() -> Vec<String> {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, log_samples);
        lines_of(&captured)
    }

    /// The line with its timestamp's value cut out (the two formats run at different
    /// moments).
    fn without_timestamp(line: &str) -> String {
        let start = line.find("\"timestamp\":\"").unwrap() + "\"timestamp\":\"".len();
        let end = start + line[start..].find('"').unwrap();
        format!("{}{}", &line[..start], &line[end..])
    }

    #[test]
    fn lines_are_byte_for_byte_tracing_subscribers_json_but_for_the_time() {
        let ours = our_lines();
        let theirs = their_lines();
        assert_eq!(ours.len(), 5, "{ours:#?}");
        assert_eq!(theirs.len(), ours.len());
        for (ours, theirs) in ours.iter().zip(&theirs) {
            assert_eq!(without_timestamp(ours), without_timestamp(theirs));
            let value: serde_json::Value = serde_json::from_str(ours).unwrap();
            assert!(value.is_object(), "{ours}");
        }
        // Spot checks of what the comparison covers.
        assert!(
            ours[0].contains(r#""path":"/a \"quoted\" \\ path\n\t\u0001"#),
            "{}",
            ours[0]
        );
        assert!(ours[2].contains(r#""nan":null"#), "{}", ours[2]);
        assert!(
            ours[4].contains(r#""target":"some::target""#),
            "{}",
            ours[4]
        );
    }

    #[test]
    fn a_message_field_written_first_gives_the_line_of_a_message_format_string() {
        // The access log names its message as a field (a `str`, cheaper than the format
        // string's `Arguments`); the line must not change for it.
        use tracing_subscriber::layer::SubscriberExt;
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber =
            tracing_subscriber::registry().with(JsonLayer::new(move || writer.clone()));
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(listener = "ingress", status = 200u16, "request");
            tracing::info!(message = "request", listener = "ingress", status = 200u16);
        });
        let lines = lines_of(&captured);
        assert_eq!(lines.len(), 2);
        assert_eq!(without_timestamp(&lines[0]), without_timestamp(&lines[1]));
    }

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        let mut texts: Vec<String> = (0..=0x7fu8)
            .map(|byte| char::from(byte).to_string())
            .collect();
        texts.extend(
            [
                "",
                "plain",
                "a\"b",
                "back\\slash",
                "é😀\u{2028}",
                "tab\there",
                "\u{7f}end",
            ]
            .map(str::to_owned),
        );
        for text in texts {
            let mut line = Vec::new();
            string(&mut line, &text);
            assert_eq!(
                String::from_utf8(line).unwrap(),
                serde_json::to_string(&text).unwrap(),
                "{text:?}"
            );
        }
    }

    #[test]
    fn timestamps_are_utc_with_microseconds_as_the_time_crate_formats_them() {
        let format = time::format_description::parse_borrowed::<2>(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z",
        )
        .unwrap();
        for (seconds, micros) in [
            (0, 0),
            (951_782_400, 1),         // 2000-02-29
            (1_796_655_663, 999_999), // 2026-12-07
            (1_796_655_663, 5),       // the same second: its cached text
            (4_102_444_799, 500_000), // 2099-12-31T23:59:59
            (253_402_300_799, 42),    // 9999-12-31T23:59:59
        ] {
            let at = UNIX_EPOCH + Duration::from_secs(seconds) + Duration::from_micros(micros);
            let mut line = Vec::new();
            write_timestamp(&mut line, at);
            let expected = time::OffsetDateTime::from(at).format(&format).unwrap();
            assert_eq!(String::from_utf8(line).unwrap(), expected);
        }
    }
}
